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

	"minimail/mta/guard"
)

// trackedConn wraps every accepted connection before go-smtp sees it. It
// holds the per-connection state that outlives go-smtp sessions (which end
// at STARTTLS): the connection-limit slot, the error count, whether a mail
// transaction is open (for graceful shutdown) and the TLS state. go-smtp
// never holds it directly but an engineConn view of it (see shims.go), so
// every byte go-smtp reads or writes passes here in plain text, also after
// STARTTLS: the TLS layer sits under trackedConn, never above it.
type trackedConn struct {
	srv     *Server
	release func()    // connection-limit slot; nil when over the limit
	start   time.Time // accepted, for MaxSessionTime
	// implicitTLS: the connection came in over TLS (465), not STARTTLS.
	implicitTLS bool
	// blocklist is the client's DNSBL verdict (MX), under way from accept.
	blocklist *blockCheck

	mu         sync.Mutex
	conn       net.Conn  // the transport: TCP, or a *tls.Conn over it
	tls        *tls.Conn // set once TLS is up (implicit or STARTTLS)
	view       *engineConn
	inTxn      bool      // between MAIL and the end of the transaction
	expectDone func()    // ends the store's Expect of this transaction, nil when none
	inData     int       // Data handlers receiving a message (see beginData)
	dataUntil  time.Time // while inData: when the whole transfer must be over
	timedOut   bool      // a read of message data timed out: the session is over
	cut        bool      // the connection was ended by the server: nothing more is run
	dot        dotScan   // after a 354: where RFC 5321 says DATA ends
	errors     int
	closed     bool

	// held is what Write keeps back: the first lines of a multi-line
	// reply, and 250s to pipelined commands, sent with the next reply that
	// is not held or before the next read. Only the goroutine of go-smtp's
	// session reads and writes.
	held []byte
}

func (c *trackedConn) transport() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

func (c *trackedConn) tlsConn() *tls.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tls
}

// isCut reports whether the server ended the connection. A command line
// that go-smtp still parses afterwards (bufio hands over the partial line
// it holds when a read times out) must not be acted on.
func (c *trackedConn) isCut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

func (c *trackedConn) RemoteAddr() net.Addr { return c.transport().RemoteAddr() }
func (c *trackedConn) LocalAddr() net.Addr  { return c.transport().LocalAddr() }

func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	return c.transport().SetWriteDeadline(t)
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
//
// A timeout anywhere else means a command line (or an AUTH response) did
// not arrive whole within CommandTimeout of the previous reply: go-smtp
// sets that deadline before each line. The standard library's
// bufio.Reader.ReadLine then hands go-smtp the partial line with a nil error
// and the timeout is lost, so go-smtp would run the fragment as a command
// and wait again. Instead the connection is cut here, with its 421, and
// whatever go-smtp makes of the fragment is neither answered (writes fail
// once cut) nor acted on (the session checks isCut).
func (c *trackedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	over, conn := c.timedOut || c.cut, c.conn
	c.mu.Unlock()
	if over {
		return 0, io.EOF
	}
	if c.dotMismatch() {
		return 0, errEndOfDataMismatch
	}
	// go-smtp has no whole command left: what Write held goes out before
	// the wait for more (RFC 2920 3.2: never wait for the client with
	// replies unsent).
	if err := c.flushHeld(conn); err != nil {
		return 0, err
	}
	n, err := conn.Read(p)
	c.scanDot(p[:n])
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		c.mu.Lock()
		inData := c.inData > 0
		if inData {
			c.timedOut = true
		}
		c.mu.Unlock()
		if inData {
			return n, errDataTimeout
		}
		c.cutOff(c.timeoutReply())
		return 0, err
	}
	return n, err
}

// timeoutReply words the 421 for a read deadline that struck outside a
// message transfer: which of the limits set it.
func (c *trackedConn) timeoutReply() (int, string, string) {
	switch maxAge := c.srv.opts.MaxSessionTime; {
	case c.srv.isDraining():
		return 421, "4.3.2", "shutting down"
	case maxAge > 0 && !time.Now().Before(c.start.Add(maxAge)):
		return 421, "4.4.2", "connection time limit reached, closing connection"
	}
	return 421, "4.4.2", "timeout waiting for command, closing connection"
}

// cutOff ends the connection with a last reply, once. Nothing go-smtp
// writes or reads after it reaches the client.
func (c *trackedConn) cutOff(code int, ec, text string) {
	c.mu.Lock()
	if c.cut || c.closed {
		c.mu.Unlock()
		return
	}
	c.cut = true
	conn := c.conn
	c.mu.Unlock()
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%d %s %s %s\r\n", code, ec, c.srv.opts.Hostname, text)
	c.srv.log.Warn("dropped", "client", guard.IP(conn.RemoteAddr()).String(), "reply", fmt.Sprintf("%d %s %s", code, ec, text))
	c.Close()
}

// Write passes go-smtp's replies on through the reply shims (shims.go) and
// counts the refusals among them against MaxErrors, whoever produced them:
// go-smtp refuses some commands before any session code runs.
//
// go-smtp writes and flushes each line of a reply on its own, and each
// reply as soon as it has it: the reply to EHLO was nine writes, nine TCP
// segments (TLS records after STARTTLS) and nine wake-ups of the client,
// and a pipelined MAIL, RCPT, DATA three. Replies are held instead, as
// RFC 2920 3.2 asks (responses to RSET, MAIL and RCPT stored and sent as a
// unit), and go out together: the lines of a reply before its last, and
// the 250s, until go-smtp reads again (Read), which it does once it has
// no whole command left. Any other reply goes at once with what is held,
// and so does the 250 to a message, which the client waits for.
func (c *trackedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	cut, conn := c.cut, c.conn
	c.mu.Unlock()
	if cut {
		c.held = nil
		return 0, net.ErrClosed
	}
	afterData := c.watchData(p)
	out, refusals := c.srv.shims.rewrite(p)
	if len(c.held)+len(out) <= maxHeldReply && (continuesReply(out) || !afterData && accepts(out)) {
		c.held = append(c.held, out...)
		return len(p), nil
	}
	if len(c.held) > 0 {
		out = append(c.held, out...)
		c.held = nil
	}
	if _, err := conn.Write(out); err != nil {
		return 0, err
	}
	if refusals > 0 && c.countErrors(refusals) {
		c.cutOff(421, "4.7.0", "too many errors, closing connection")
	}
	return len(p), nil
}

// flushHeld sends the replies Write held.
func (c *trackedConn) flushHeld(conn net.Conn) error {
	if len(c.held) == 0 {
		return nil
	}
	out := c.held
	c.held = nil
	_, err := conn.Write(out)
	return err
}

// maxHeldReply bounds the replies held (see Write); more go out in pieces
// of about this size.
const maxHeldReply = 4 << 10

// accepts reports whether the last line of p is a 250 reply's.
func accepts(p []byte) bool {
	return bytes.HasPrefix(lastLine(p), []byte("250 "))
}

// continuesReply reports whether the last line of p is a reply line that
// another follows: a hyphen after the code (RFC 5321 4.2.1).
func continuesReply(p []byte) bool {
	line := lastLine(p)
	return len(line) >= 4 && line[3] == '-' && isDigit(line[0]) && isDigit(line[1]) && isDigit(line[2])
}

// lastLine is the last line of p, without its line ending.
func lastLine(p []byte) []byte {
	line := bytes.TrimSuffix(p, []byte("\n"))
	if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	return line
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

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
func trackedOf(c net.Conn) (*trackedConn, *engineConn) {
	if v, ok := c.(*engineConn); ok {
		return v.tc, v
	}
	return nil, nil
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
	return c.conn.SetReadDeadline(t)
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// poke wakes an idle connection blocked reading its next command so that it
// sees the server is draining. Called with srv.mu held.
func (c *trackedConn) poke() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.inTxn {
		c.conn.SetReadDeadline(time.Unix(1, 0))
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
	if !c.inTxn && c.srv.opts.Expect != nil {
		c.expectDone = c.srv.opts.Expect()
	}
	c.inTxn = true
	return true
}

func (c *trackedConn) end() {
	c.mu.Lock()
	c.inTxn = false
	done := c.expectDone
	c.expectDone = nil
	c.mu.Unlock()
	if done != nil {
		done()
	}
}

// stepAside ends the store's Expect of the open transaction while its
// message cannot be on its way (the transfer waits for a place in the
// TransferGate, up to seconds): the committer would otherwise wait for it,
// up to its linger, at every commit meanwhile. back announces it again,
// unless the transaction is over by then.
func (c *trackedConn) stepAside() (back func()) {
	c.mu.Lock()
	done := c.expectDone
	c.expectDone = nil
	c.mu.Unlock()
	if done == nil {
		return func() {}
	}
	done()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.inTxn && !c.closed && c.expectDone == nil {
			c.expectDone = c.srv.opts.Expect()
		}
	}
}

// countErrors records n refused commands and reports whether the
// connection is now over its error budget.
func (c *trackedConn) countErrors(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errors += n
	max := c.srv.opts.MaxErrors
	return max > 0 && c.errors > max
}

// reply writes one reply line directly, for the connections refused before
// go-smtp takes them over.
func (c *trackedConn) reply(code int, ec, text string) {
	conn := c.transport()
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%d %s %s\r\n", code, ec, text)
}

func (c *trackedConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conn := c.conn
	// A transaction cut off with its connection is not on its way.
	done := c.expectDone
	c.expectDone = nil
	c.mu.Unlock()
	if done != nil {
		done()
	}
	err := conn.Close()
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

// errEndOfDataMismatch: the client sent RFC 5321's end of data, CRLF.CRLF,
// and go-smtp read on past it. Its DATA decoder misses the end after a bare
// CR ("x\r\r\n.\r\n", or a line ".\r\r\n" just before it): the client
// then waits for a reply while go-smtp waits for more data, and whatever
// the client sends next (QUIT, another transaction) would become part of
// this message. The stream cannot be resynchronised: the session refuses
// the message and closes.
var errEndOfDataMismatch = errors.New("client ended DATA where the server's decoder did not")

// dotScan follows the raw bytes of a DATA transfer, from go-smtp's 354 to
// its next reply, looking for CRLF.CRLF only (RFC 5321 4.1.1.4).
type dotScan struct {
	on   bool
	tail [4]byte // the last four bytes seen, to find an end split over reads
	seen bool    // the end has arrived
}

var endOfData = []byte("\r\n.\r\n")

// watchData starts the scan at go-smtp's 354 (the DATA command line ended
// with CRLF, so the end may come at once: ".\r\n") and stops it at the
// next reply, whoever sends it, reporting that it is the reply to the
// message.
func (c *trackedConn) watchData(reply []byte) (afterData bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes.HasPrefix(reply, []byte("354 ")) {
		c.dot = dotScan{on: true, tail: [4]byte{0, 0, '\r', '\n'}}
		return false
	}
	afterData = c.dot.on
	c.dot.on = false
	return afterData
}

func (c *trackedConn) scanDot(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := &c.dot
	if !d.on || d.seen || len(p) == 0 {
		return
	}
	// Search the tail and the head of p together, then p itself.
	var joint [8]byte
	j := append(append(joint[:0], d.tail[:]...), p[:min(len(p), 4)]...)
	if bytes.Contains(j, endOfData) || bytes.Contains(p, endOfData) {
		d.seen = true
		return
	}
	if len(p) >= 4 {
		copy(d.tail[:], p[len(p)-4:])
	} else {
		keep := append(d.tail[len(p):], p...)
		copy(d.tail[:], keep)
	}
}

// dotMismatch: go-smtp asks for more data though every byte up to and
// including the end of data has been read from the client and handed over.
func (c *trackedConn) dotMismatch() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dot.on && c.dot.seen
}
