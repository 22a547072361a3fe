package mta

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// trackedConn wraps every accepted connection before go-smtp sees it. It
// holds the per-connection state that outlives go-smtp sessions (which end
// at STARTTLS): the connection-limit slot, the error count, whether a mail
// transaction is open (for graceful shutdown) and the implicit TLS state.
// After STARTTLS it sits under go-smtp's *tls.Conn.
type trackedConn struct {
	net.Conn
	srv     *Server
	release func()    // connection-limit slot; nil when over the limit
	tls     *tls.Conn // set for implicit TLS (Conn is then this *tls.Conn)
	start   time.Time // accepted, for MaxSessionTime

	mu        sync.Mutex
	inTxn     bool      // between MAIL and the end of the transaction
	inData    int       // Data handlers receiving a message (see beginData)
	dataUntil time.Time // while inData: when the whole transfer must be over
	timedOut  bool      // a read of message data timed out: the session is over
	errors    int
	closed    bool
}

// errDataTimeout is what a read of message data that timed out returns.
// It is an *smtp.SMTPError on purpose: go-smtp answers any other error in
// a BDAT chunk read with a permanent "554 5.0.0 transaction failed: read
// tcp ...: i/o timeout", which would make the sender bounce a message over
// a network stall.
var errDataTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "timeout waiting for message data"}

// Read turns a timeout while a message is being received into
// errDataTimeout, once; after it, the connection reads as closed, so
// go-smtp ends the session without a second reply.
func (c *trackedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	over := c.timedOut
	c.mu.Unlock()
	if over {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.inData > 0 {
			c.timedOut = true
			return n, errDataTimeout
		}
	}
	return n, err
}

// beginData and endData bracket a Data handler. They count rather than
// flag: after RSET in the middle of BDAT, go-smtp may start the next
// transfer's handler before the aborted one has returned.
func (c *trackedConn) beginData() {
	c.mu.Lock()
	c.inData++
	c.dataUntil = time.Time{}
	c.mu.Unlock()
}

func (c *trackedConn) endData() {
	c.mu.Lock()
	if c.inData--; c.inData == 0 {
		c.dataUntil = time.Time{}
	}
	c.mu.Unlock()
}

// limitData sets the time by which the message transfer must be over. Every
// read deadline is held to it, also those go-smtp sets for the BDAT
// command lines between chunks, which would otherwise renew the allowance
// of a client trickling one small chunk at a time.
func (c *trackedConn) limitData(until time.Time) {
	c.mu.Lock()
	c.dataUntil = until
	c.mu.Unlock()
}

// trackedOf finds the trackedConn under c, the connection go-smtp holds.
func trackedOf(c net.Conn) *trackedConn {
	switch v := c.(type) {
	case *trackedConn:
		return v
	case *tls.Conn:
		if t, ok := v.NetConn().(*trackedConn); ok {
			return t
		}
	}
	return nil
}

// SetReadDeadline is where the connection's time limits meet go-smtp, which
// sets a read deadline before every command line:
//   - while a message is received, no deadline goes past dataUntil;
//   - while the server drains, a connection outside a transaction gets a
//     deadline in the past: go-smtp then answers 421 and closes, after the
//     reply to the last command was sent;
//   - otherwise no deadline goes past the end of MaxSessionTime, so that a
//     client cannot hold a connection slot for ever with a NOOP every few
//     minutes (go-smtp then answers "421 4.4.2 Idle timeout").
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := func(end time.Time) {
		if t.IsZero() || t.After(end) {
			t = end
		}
	}
	switch maxAge := c.srv.opts.MaxSessionTime; {
	case c.inData > 0:
		if !c.dataUntil.IsZero() {
			limit(c.dataUntil)
		}
	case !c.inTxn && c.srv.isDraining():
		t = time.Unix(1, 0)
	case maxAge > 0:
		limit(c.start.Add(maxAge))
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// poke wakes an idle connection blocked reading its next command so that it
// sees the server is draining. Called with srv.mu held.
func (c *trackedConn) poke() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.inTxn {
		c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// begin marks a transaction open; false means the server is draining and
// no new transaction may start (RFC 5321 3.8: answer 421).
func (c *trackedConn) begin() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv.isDraining() {
		return false
	}
	c.inTxn = true
	return true
}

func (c *trackedConn) end() {
	c.mu.Lock()
	c.inTxn = false
	c.mu.Unlock()
}

// countError records a rejected command and reports whether the connection
// is now over its error budget.
func (c *trackedConn) countError() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errors++
	max := c.srv.opts.MaxErrors
	return max > 0 && c.errors > max
}

// reply writes one reply line directly, for the connections refused before
// go-smtp takes them over.
func (c *trackedConn) reply(code int, ec, text string) {
	c.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c.Conn, "%d %s %s\r\n", code, ec, text)
}

func (c *trackedConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	err := c.Conn.Close()
	if c.release != nil {
		c.release()
	}
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	c.srv.mu.Unlock()
	return err
}

// chanListener feeds connections from Serve to a go-smtp engine.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return chanAddr{} }

type chanAddr struct{}

func (chanAddr) Network() string { return "mta" }
func (chanAddr) String() string  { return "mta" }

// sequenceReplies are go-smtp's answers to commands out of order, which it
// sends as 502 ("not implemented") before any session code runs. RFC 5321
// 4.2.4 and 4.3.2 make them 503 ("bad sequence of commands"), as SPEC.md
// promises.
var sequenceReplies = [][]byte{
	[]byte("502 5.5.1 Please introduce yourself first."),
	[]byte("502 5.5.1 MAIL not allowed during message transfer"),
	[]byte("502 5.5.1 Missing MAIL FROM command."),
	[]byte("502 5.5.1 RCPT not allowed during message transfer"),
	[]byte("502 5.5.1 DATA not allowed during message transfer"),
	[]byte("502 5.5.1 Missing RCPT TO command."),
}

// Write turns go-smtp's 502 sequence replies into 503. go-smtp flushes each
// reply whole, so a reply never straddles two writes. This sees plain text
// only on connections without TLS and on implicit TLS (where it sits above
// the *tls.Conn); after STARTTLS go-smtp writes through its own *tls.Conn
// underneath, and its 502 stands.
func (c *trackedConn) Write(p []byte) (int, error) {
	if !bytes.Contains(p, []byte("502 5.5.1 ")) {
		return c.Conn.Write(p)
	}
	out := bytes.Clone(p)
	for _, r := range sequenceReplies {
		for i := 0; ; {
			j := bytes.Index(out[i:], r)
			if j < 0 {
				break
			}
			at := i + j
			if at == 0 || out[at-1] == '\n' {
				out[at+2] = '3' // 502 -> 503, same length
			}
			i = at + len(r)
		}
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
