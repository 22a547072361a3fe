package mta

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// trickle sends s one byte per tick until stop is closed or a write fails.
func trickle(c net.Conn, s string, tick time.Duration, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(tick):
		}
		if _, err := c.Write([]byte{s[i%len(s)]}); err != nil {
			return
		}
	}
}

// cutWithin expects the server's next and only reply to be a 421 4.4.2 and
// the connection to close, no later than limit after start.
func (cl *client) cutWithin(start time.Time, limit time.Duration) {
	cl.t.Helper()
	lines, err := cl.reply()
	if err != nil || len(lines) != 1 || !strings.HasPrefix(lines[0], "421 4.4.2 "+testHost) {
		cl.t.Fatalf("want one 421 4.4.2, got %q, %v", lines, err)
	}
	if took := time.Since(start); took > limit {
		cl.t.Fatalf("cut after %v, limit %v", took, limit)
	}
	cl.expectClosed()
}

// TestAttack_TricklingClientsAreCutOff: a command line must arrive whole
// within CommandTimeout (SPEC: time limits run from a line's first byte);
// a client that trickles a byte at a time is cut off with 421 4.4.2, and
// the fragment it sent is never run: it gets no reply of its own.
func TestAttack_TricklingClientsAreCutOff(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const tick = 20 * time.Millisecond
	// The upper bound only catches a server that waits for the whole
	// MaxSessionTime (here a minute): generous, so a busy machine passes.
	const limit = 10 * time.Second
	e := newEnv(t, func(o *Options, _ *Local) {
		o.CommandTimeout = timeout
		o.MaxSessionTime = time.Minute
		o.AllowInsecureAuth = true
	})
	for _, c := range []struct {
		name string
		open func(t *testing.T) *client
		// setup runs commands before the trickle, fragment is trickled.
		setup    []string
		fragment string
	}{
		{"a NOOP that never ends", func(t *testing.T) *client { return dial(t, e.mxAddr) }, nil, "NOOP " + strings.Repeat("z", 100)},
		{"a DATA fragment is not run", func(t *testing.T) *client { return dial(t, e.mxAddr) },
			[]string{"EHLO client.test", "MAIL FROM:<bob@other.test>", "RCPT TO:<alice@example.org>"}, "DATA"},
		{"inside STARTTLS", func(t *testing.T) *client {
			cl := dial(t, e.mxAddr)
			cl.cmd("EHLO client.test", "250 ")
			cl.starttls(e.clientTLS)
			return cl
		}, []string{"EHLO client.test", "MAIL FROM:<bob@other.test>", "RCPT TO:<alice@example.org>"}, "DATA"},
		{"on implicit TLS", func(t *testing.T) *client { return dialTLS(t, e.subsAddr, e.clientTLS) },
			[]string{"EHLO client.test"}, "NOOP " + strings.Repeat("z", 100)},
		{"an AUTH LOGIN response", func(t *testing.T) *client {
			cl := dial(t, e.subAddr)
			cl.cmd("EHLO client.test", "250 ")
			cl.cmd("AUTH LOGIN", "334 ")
			return cl
		}, nil, "YWxpY2VAZXhhbXBsZS5vcmc="},
		{"an AUTH PLAIN response", func(t *testing.T) *client {
			cl := dial(t, e.subAddr)
			cl.cmd("EHLO client.test", "250 ")
			cl.cmd("AUTH PLAIN", "334 ")
			return cl
		}, nil, plain("", "alice@example.org", testPass)},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := c.open(t)
			for _, cmd := range c.setup {
				cl.cmd(cmd, "250 ")
			}
			stop := make(chan struct{})
			defer close(stop)
			start := time.Now()
			go trickle(cl.c, c.fragment, tick, stop)
			cl.cutWithin(start, limit)
		})
	}
	if m := e.mailbox("alice@example.org"); len(m) != 0 {
		t.Fatalf("stored %d messages", len(m))
	}
	if logs := e.logs.String(); strings.Contains(logs, `"msg":"authenticated"`) {
		t.Fatalf("a cut AUTH response logged someone in:\n%s", logs)
	}
}

// TestAttack_StalledTLSHandshakes: a TLS handshake must finish within
// CommandTimeout, on implicit TLS and after STARTTLS alike.
func TestAttack_StalledTLSHandshakes(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newEnv(t, func(o *Options, _ *Local) { o.CommandTimeout = timeout })
	closedWithin := func(t *testing.T, c net.Conn, start time.Time) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("closed after %v", took)
		}
	}
	half := func(t *testing.T) []byte {
		// The first bytes of a real ClientHello.
		var rec recordConn
		tls.Client(&rec, &tls.Config{ServerName: testHost}).Handshake()
		return rec.written[:len(rec.written)/2]
	}
	t.Run("465: nothing sent", func(t *testing.T) {
		c, err := net.Dial("tcp", e.subsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		closedWithin(t, c, time.Now())
	})
	t.Run("465: half a ClientHello", func(t *testing.T) {
		c, err := net.Dial("tcp", e.subsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(half(t))
		closedWithin(t, c, time.Now())
	})
	for _, addr := range []struct{ name, addr string }{{"MX", e.mxAddr}, {"submission", e.subAddr}} {
		t.Run(addr.name+": STARTTLS, then half a ClientHello", func(t *testing.T) {
			cl := dial(t, addr.addr)
			cl.cmd("EHLO client.test", "250 ")
			cl.cmd("STARTTLS", "220 2.0.0")
			start := time.Now()
			cl.c.Write(half(t))
			closedWithin(t, cl.c, start)
		})
	}
}

// recordConn captures what a TLS client writes first and then fails.
type recordConn struct {
	net.Conn
	written []byte
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.written = append(r.written, p...)
	return len(p), nil
}
func (r *recordConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (r *recordConn) Close() error                     { return nil }
func (r *recordConn) SetDeadline(time.Time) error      { return nil }
func (r *recordConn) SetReadDeadline(time.Time) error  { return nil }
func (r *recordConn) SetWriteDeadline(time.Time) error { return nil }

// TestAttack_TricklersDoNotStarveNewClients: 100 tricklers from 100
// addresses hold slots only for CommandTimeout, and while they do a new
// client still gets its greeting and EHLO at once.
func TestAttack_TricklersDoNotStarveNewClients(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) {
		o.CommandTimeout = 2 * time.Second
		o.MaxConnectionsPerIP = 20
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 100 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.1.%d", i+1))}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", e.mxAddr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			trickle(c, "NOOP zzzzzzzzzzzzzzzz", 50*time.Millisecond, stop)
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")
	// SPEC asks for a second; three leave room for a loaded machine.
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("greeting and EHLO took %v", took)
	}
}
