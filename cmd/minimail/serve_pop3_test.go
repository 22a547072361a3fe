package main

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pop3Login connects to a POP3 listener of s (pop3s with implicit TLS,
// pop3 with STLS), sends USER and PASS for user and returns the PASS reply.
func pop3Login(t *testing.T, s *site, key, user string) (*pop3Client, string) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", s.srv.addrs[key], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	clientTLS := &tls.Config{InsecureSkipVerify: true}
	var conn net.Conn = raw
	if key == "listen.pop3s" {
		conn = tls.Client(raw, clientTLS)
	}
	p := newPOP3Client(conn)
	if _, err := p.ok(""); err != nil {
		t.Fatal(err)
	}
	if key == "listen.pop3" {
		if _, err := p.ok("STLS"); err != nil {
			t.Fatal(err)
		}
		conn = tls.Client(raw, clientTLS)
		p = newPOP3Client(conn)
	}
	if _, err := p.ok("USER " + user); err != nil {
		t.Fatal(err)
	}
	line, err := p.ok("PASS pw-" + user)
	if err != nil {
		return p, err.Error()
	}
	return p, strings.TrimSpace(line)
}

// TestServePOP3ListenersShareTheMaildropLock: serve's POP3 and POP3S
// listeners open a maildrop once between them (RFC 1939 section 8).
func TestServePOP3ListenersShareTheMaildropLock(t *testing.T) {
	s := newSite(t, "example.test", "")
	s.addUser(t, "bob@example.test")
	for _, tt := range []struct{ first, second string }{
		{"listen.pop3s", "listen.pop3"},
		{"listen.pop3", "listen.pop3s"},
	} {
		t.Run(tt.first+" then "+tt.second, func(t *testing.T) {
			first, reply := pop3Login(t, s, tt.first, "bob@example.test")
			if !strings.HasPrefix(reply, "+OK") {
				t.Fatalf("login on %s: %s", tt.first, reply)
			}
			if _, reply := pop3Login(t, s, tt.second, "bob@example.test"); !strings.Contains(reply, "-ERR [IN-USE]") {
				t.Fatalf("second login on %s while %s holds the maildrop: %q, want -ERR [IN-USE]", tt.second, tt.first, reply)
			}
			if _, err := first.ok("QUIT"); err != nil {
				t.Fatal(err)
			}
			// The server closes after releasing the lock: the next
			// subtest starts with the maildrop free.
			if line, err := first.r.ReadString('\n'); err == nil {
				t.Fatalf("after QUIT: %q, want the connection closed", line)
			}
		})
	}
}

// TestServePOP3CommandTimeoutIsLimitsCommandTimeout: limits.command_timeout
// bounds a POP3 client's TLS handshake and a command line from its first
// byte, on both POP3 listeners.
func TestServePOP3CommandTimeoutIsLimitsCommandTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := newSite(t, "example.test", `command_timeout = "300ms"`)
	s.addUser(t, "bob@example.test")
	closedWithin := func(t *testing.T, conn net.Conn, since time.Time) {
		t.Helper()
		conn.SetReadDeadline(since.Add(10 * timeout))
		_, err := io.ReadAll(conn)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection still open after %v: %v", time.Since(since), err)
		}
	}
	t.Run("pop3s handshake", func(t *testing.T) {
		start := time.Now()
		conn, err := net.DialTimeout("tcp", s.srv.addrs["listen.pop3s"], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		closedWithin(t, conn, start) // no ClientHello ever comes
	})
	t.Run("pop3 STLS handshake", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", s.srv.addrs["listen.pop3"], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		p := newPOP3Client(conn)
		if _, err := p.ok(""); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := p.ok("STLS"); err != nil {
			t.Fatal(err)
		}
		closedWithin(t, conn, start)
	})
	t.Run("trickled command line", func(t *testing.T) {
		p, reply := pop3Login(t, s, "listen.pop3s", "bob@example.test")
		if !strings.HasPrefix(reply, "+OK") {
			t.Fatal(reply)
		}
		conn := p.conn.(net.Conn)
		start := time.Now()
		for _, b := range []byte("NOOP") {
			if _, err := conn.Write([]byte{b}); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		closedWithin(t, conn, start)
	})
}
