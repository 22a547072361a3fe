package mta

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"
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

	mu     sync.Mutex
	inTxn  bool // between MAIL and the end of the transaction
	errors int
	closed bool
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

// SetReadDeadline is how graceful shutdown reaches connections: go-smtp
// sets a read deadline before every command line, and while the server
// drains, a connection outside a transaction gets one in the past. go-smtp
// then answers 421 and closes, after the reply to the last command was sent.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.inTxn && c.srv.isDraining() {
		t = time.Unix(1, 0)
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
