package pop3

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"minimail/mta/tlstest"
)

// The time limits under test are small; the upper bounds allow ten times
// as much, so a busy machine does not fail them.
const (
	testCommandTimeout = 300 * time.Millisecond
	testLoginTimeout   = 400 * time.Millisecond
	slack              = 10
)

// closedWithin reads from conn until the server closes it and fails the
// test unless that happens no sooner than min after since and no later
// than slack times min. It returns whatever the server sent.
func closedWithin(t *testing.T, conn net.Conn, since time.Time, min time.Duration) []byte {
	t.Helper()
	conn.SetReadDeadline(since.Add(slack * min))
	got, err := io.ReadAll(conn)
	took := time.Since(since)
	if errors.Is(err, syscall.ECONNRESET) {
		// Closing with bytes of ours unread makes the kernel reset the
		// connection; what came before the reset has been read.
		err = nil
	}
	switch {
	case err != nil:
		t.Fatalf("connection still open after %v (%d bytes sent): %v", took, len(got), err)
	case took < min:
		t.Fatalf("connection closed after %v, before the %v limit", took, min)
	}
	return got
}

// trickle writes line one byte every interval, without a line ending,
// until it is all sent or the server has closed the connection. It
// returns when the first byte went out.
func trickle(t *testing.T, conn net.Conn, line string, interval time.Duration) time.Time {
	t.Helper()
	first := time.Now()
	if _, err := conn.Write([]byte(line[:1])); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := 1; i < len(line); i++ {
			time.Sleep(interval)
			if _, err := conn.Write([]byte{line[i]}); err != nil {
				return
			}
		}
	}()
	return first
}

// TestCommandTimeout_TricklingClientIsCutOff: the command time limit runs
// from a line's first byte, however often more bytes come; the partial
// line gets no reply (RFC 1939 section 3: autologout sends none).
func TestCommandTimeout_TricklingClientIsCutOff(t *testing.T) {
	for _, loggedIn := range []bool{false, true} {
		name := map[bool]string{false: "AUTHORIZATION", true: "TRANSACTION"}[loggedIn]
		t.Run(name, func(t *testing.T) {
			h := startServer(t, fixtureMaildrop(t), Options{AllowInsecureAuth: true, CommandTimeout: testCommandTimeout})
			c := greeted(t, h.addr)
			if loggedIn {
				c.login(alice, alicePW)
			}
			first := trickle(t, c.conn, "NOOP"+strings.Repeat(" ", 200), 50*time.Millisecond)
			if got := closedWithin(t, c.conn, first, testCommandTimeout); len(got) != 0 {
				t.Fatalf("server answered the partial line: %q", got)
			}
		})
	}
}

// TestCommandTimeout_PartialDELEIsNeverRun: a DELE whose line ends only
// after the limit is not run, not even when the rest of the line and a
// QUIT follow.
func TestCommandTimeout_PartialDELEIsNeverRun(t *testing.T) {
	st := fixtureMaildrop(t)
	h := startServer(t, st, Options{AllowInsecureAuth: true, CommandTimeout: testCommandTimeout})
	c := greeted(t, h.addr)
	c.login(alice, alicePW)
	first := trickle(t, c.conn, "DELE 1", 50*time.Millisecond)
	got := closedWithin(t, c.conn, first, testCommandTimeout)
	c.conn.Write([]byte("\r\nQUIT\r\n")) // too late: the session is over
	if len(got) != 0 {
		t.Fatalf("server answered the partial DELE: %q", got)
	}
	h.waitEnded(t, 1)
	if n := st.count(alice); n != 3 {
		t.Fatalf("alice has %d messages, want 3: the partial DELE was run", n)
	}
}

// TestCommandTimeout_TLSHandshake: a TLS handshake, on POP3S or after STLS,
// must finish within the command time limit; a client that stalls in it is
// dropped.
func TestCommandTimeout_TLSHandshake(t *testing.T) {
	serverTLS, clientTLS := tlstest.Pair(t, "pop.test")
	hello := clientHello(t, clientTLS)
	opts := Options{CommandTimeout: testCommandTimeout}

	for _, tt := range []struct {
		name string
		send []byte
	}{
		{"nothing", nil},
		{"half a ClientHello", hello[:len(hello)/2]},
	} {
		t.Run("POP3S, "+tt.name, func(t *testing.T) {
			h := startPOP3S(t, fixtureMaildrop(t), opts, serverTLS)
			start := time.Now() // before the server can start its clock
			c := dial(t, h.addr)
			c.conn.Write(tt.send)
			closedWithin(t, c.conn, start, testCommandTimeout)
		})
		t.Run("STLS, "+tt.name, func(t *testing.T) {
			opts := opts
			opts.TLSConfig = serverTLS
			h := startServer(t, fixtureMaildrop(t), opts)
			c := greeted(t, h.addr)
			start := time.Now()
			c.cmd("STLS", "+OK begin TLS negotiation")
			c.conn.Write(tt.send)
			if got := closedWithin(t, c.conn, start, testCommandTimeout); len(got) != 0 && tt.send == nil {
				t.Fatalf("server sent %q to a client that sent nothing", got)
			}
		})
	}
}

// clientHello returns the first flight a TLS client sends.
func clientHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	ours, theirs := net.Pipe()
	defer ours.Close()
	go tls.Client(theirs, cfg).Handshake()
	buf := make([]byte, 64<<10)
	ours.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := ours.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	return buf[:n]
}

// TestLoginTimeout_UnauthenticatedSessionHasALifetime: a session that has
// not logged in is closed LoginTimeout after it connected, however busy it
// keeps the server meanwhile; a logged-in session is not.
func TestLoginTimeout_UnauthenticatedSessionHasALifetime(t *testing.T) {
	for _, verb := range []string{"NOOP", "CAPA"} {
		t.Run(verb, func(t *testing.T) {
			var logs bytes.Buffer
			h := startServer(t, fixtureMaildrop(t), Options{
				AllowInsecureAuth: true,
				LoginTimeout:      testLoginTimeout,
				Logger:            slog.New(slog.NewJSONHandler(&logs, nil)),
			})
			start := time.Now()
			c := greeted(t, h.addr)
			go func() {
				for {
					if _, err := c.conn.Write([]byte(verb + "\r\n")); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
			closedWithin(t, c.conn, start, testLoginTimeout)
			h.waitEnded(t, 1)
			var rec map[string]any
			if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
				t.Fatalf("log %q: %v", logs.String(), err)
			}
			if rec["result"] != "login timeout" {
				t.Errorf("log result %v, want login timeout", rec["result"])
			}
		})
	}
	t.Run("logged in", func(t *testing.T) {
		h := startServer(t, fixtureMaildrop(t), Options{AllowInsecureAuth: true, LoginTimeout: testLoginTimeout})
		c := greeted(t, h.addr)
		c.login(alice, alicePW)
		for end := time.Now().Add(3 * testLoginTimeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			c.cmd("NOOP", "+OK")
		}
		c.cmd("QUIT", "+OK")
	})
}
