package mta

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestAttack_Slowloris: clients that keep a connection slot by sending just
// enough to beat each per-read timeout (RFC 5321 4.5.3.2 timeouts are per
// read) are cut by MinDataRate during message transfer and by
// MaxSessionTime outside it, always with a 421 so a real sender retries.
func TestAttack_Slowloris(t *testing.T) {
	// DataTimeout is far longer than any pause of the writers, so a busy
	// machine cannot turn a rate cut into a per-read timeout.
	const tick = 40 * time.Millisecond
	e := newEnv(t, func(o *Options, _ *Local) {
		o.CommandTimeout = 3 * time.Second
		o.DataTimeout = 2 * time.Second
		o.MinDataRate = 20_000
	})
	nothingStored := func(t *testing.T) {
		t.Helper()
		if m := e.mailbox("alice@example.org"); len(m) != 0 {
			t.Fatalf("stored %d", len(m))
		}
	}
	t.Run("DATA trickled below MinDataRate is cut with 421", func(t *testing.T) {
		cl := openTransaction(t, e, nil)
		cl.cmd("DATA", "354 ")
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			// 6 kB/s: every read of message data is done within
			// DataTimeout, but the average is under the 20 kB/s floor.
			chunk := []byte(strings.Repeat("x", 238) + "\r\n")
			for {
				select {
				case <-stop:
					return
				case <-time.After(tick):
				}
				if _, err := cl.c.Write(chunk); err != nil {
					return
				}
			}
		}()
		cl.expect("421 4.4.2 " + testHost + " message data slower than 20000 bytes per second")
		cl.expectClosed()
		nothingStored(t)
	})
	t.Run("BDAT trickled in one-byte chunks is cut with 421", func(t *testing.T) {
		cl := openTransaction(t, e, nil)
		// go-smtp words the 421 its own way when the limit strikes while it
		// reads a BDAT command line rather than a chunk: only 4.4. is sure.
		cl.repeatUntilCut("BDAT 1\r\nx", "421 4.4.", tick)
		cl.expectClosed()
		nothingStored(t)
	})
	t.Run("empty BDAT chunks cannot hold a transfer open", func(t *testing.T) {
		cl := openTransaction(t, e, nil)
		cl.repeatUntilCut("BDAT 0\r\n", "421 4.4.", tick)
		nothingStored(t)
	})
	t.Run("a stalled BDAT chunk gets 421, not a permanent 554", func(t *testing.T) {
		cl := openTransaction(t, e, nil)
		cl.write("BDAT 100 LAST\r\nSubject: stalled\r\n")
		cl.expect("421 4.4.2")
		cl.expectClosed()
		nothingStored(t)
	})
	t.Run("a stalled BDAT chunk over STARTTLS gets 421 too", func(t *testing.T) {
		cl := openTransaction(t, e, e.clientTLS)
		cl.write("BDAT 100 LAST\r\nSubject: stalled\r\n")
		cl.expect("421 4.4.2")
		nothingStored(t)
	})
	t.Run("a steady sender above the floor is not cut", func(t *testing.T) {
		cl := openTransaction(t, e, nil)
		cl.cmd("DATA", "354 ")
		cl.write("Subject: steady\r\n\r\n")
		line := strings.Repeat("s", 1998) + "\r\n"
		// 50 kB/s for 1 s: longer than DataTimeout, never under the floor.
		for range 25 {
			time.Sleep(tick)
			cl.write(line)
		}
		cl.write(".\r\n")
		cl.expect("250 2.0.0")
		if m := e.mailbox("alice@example.org"); len(m) != 1 {
			t.Fatalf("stored %d", len(m))
		}
	})
}

// TestAttack_SessionTime: MaxSessionTime closes a connection kept open with
// harmless commands, but never cuts a message being received.
func TestAttack_SessionTime(t *testing.T) {
	const maxSession = 400 * time.Millisecond
	e := newEnv(t, func(o *Options, _ *Local) {
		o.CommandTimeout = 2 * time.Second
		o.MaxSessionTime = maxSession
	})
	t.Run("NOOPs cannot hold a connection past MaxSessionTime", func(t *testing.T) {
		start := time.Now()
		cl := dial(t, e.mxAddr)
		cl.c.SetDeadline(time.Now().Add(5 * time.Second))
		cl.repeatUntilCut("NOOP\r\n", "421 4.4.2", 40*time.Millisecond)
		if d := time.Since(start); d < maxSession {
			t.Fatalf("closed after %v, before MaxSessionTime", d)
		}
		cl.expectClosed()
	})
	t.Run("a message in transfer outlives MaxSessionTime", func(t *testing.T) {
		cl := openTransaction(t, e, nil)
		cl.cmd("DATA", "354 ")
		cl.write("Subject: long\r\n\r\n")
		for i := range 15 {
			time.Sleep(40 * time.Millisecond)
			cl.write(fmt.Sprintf("line %d\r\n", i))
		}
		cl.write(".\r\n")
		cl.expect("250 2.0.0")
		// The session is over its time: the next command ends it.
		cl.write("NOOP\r\n")
		cl.expect("421 4.4.2")
		if m := e.mailbox("alice@example.org"); len(m) != 1 {
			t.Fatalf("stored %d", len(m))
		}
	})
}

// TestAttack_ConnectionsOverTheLimit: connections over the limit are let go
// at once on plain ports, and on implicit TLS as soon as a short handshake
// allowance runs out, not after a whole CommandTimeout: they hold no slot,
// so nothing else bounds how many an attacker keeps open.
func TestAttack_ConnectionsOverTheLimit(t *testing.T) {
	const commandTimeout = 3 * time.Second
	e := newEnv(t, func(o *Options, _ *Local) {
		o.MaxConnections = 1
		o.CommandTimeout = commandTimeout
	})
	held := dialTLS(t, e.subsAddr, e.clientTLS) // the one slot
	held.cmd("EHLO client.test", "250 ")
	t.Run("TLS client completing the handshake gets 421", func(t *testing.T) {
		c, err := tls.Dial("tcp", e.subsAddr, e.clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		cl := newClient(t, c)
		cl.expect("421 4.7.0")
		cl.expectClosed()
	})
	t.Run("silent client on the TLS port is dropped early", func(t *testing.T) {
		c, err := net.Dial("tcp", e.subsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetReadDeadline(start.Add(2 * commandTimeout))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("server sent data to a client that never said hello")
		}
		if d := time.Since(start); d >= commandTimeout {
			t.Fatalf("held for %v, a whole CommandTimeout", d)
		}
	})
}

// openTransaction dials the MX, upgrading with STARTTLS when cfg is set,
// and gets as far as one accepted RCPT for alice, with 15 s on the clock
// for the whole exchange.
func openTransaction(t testing.TB, e *env, cfg *tls.Config) *client {
	t.Helper()
	cl := dial(t, e.mxAddr)
	cl.c.SetDeadline(time.Now().Add(15 * time.Second))
	cl.cmd("EHLO client.test", "250 ")
	if cfg != nil {
		cl.starttls(cfg)
		cl.cmd("EHLO client.test", "250 ")
	}
	cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
	cl.cmd("RCPT TO:<alice@example.org>", "250 ")
	return cl
}

// repeatUntilCut plays a client that keeps its slot by sending what every
// pause, until the server stops answering 250; that reply must start with
// want. A server still answering 250 after 10 s fails the test.
func (cl *client) repeatUntilCut(what, want string, pause time.Duration) {
	cl.t.Helper()
	for start := time.Now(); ; time.Sleep(pause) {
		if time.Since(start) > 10*time.Second {
			cl.t.Fatalf("%q still answered with 250 after 10 s", what)
		}
		cl.write(what)
		lines, err := cl.reply()
		if err != nil {
			cl.t.Fatalf("connection ended without a reply to %q: %v", what, err)
		}
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "250 ") {
			if !strings.HasPrefix(last, want) {
				cl.t.Fatalf("got %q, want %q", last, want)
			}
			return
		}
	}
}
