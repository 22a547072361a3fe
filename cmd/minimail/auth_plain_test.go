package main

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestAuthPlainIsOneRuleForSMTPAndPOP3: SMTP submission and POP3 take SASL
// PLAIN (RFC 4616) through one implementation and one authorization
// identity rule, the store's: empty or the login itself as users are looked
// up (case does not matter), never another user (CVE-2023-27582). Every
// case runs against both servers of one running minimail.
func TestAuthPlainIsOneRuleForSMTPAndPOP3(t *testing.T) {
	s := newSite(t, "example.test", "")
	// The table fails more logins than the default throttle allows.
	s.stop(t)
	s.cfg.Auth.MaxFailures = 1000
	s.start(t)
	s.addUser(t, "alice@example.test")
	s.addUser(t, "bob@example.test")
	const pw = "pw-alice@example.test"

	// What each server answers, by outcome.
	type outcome int
	const (
		loggedIn outcome = iota
		wrongCredentials
		notAuthorized
		malformed
		badBase64
	)
	replies := map[outcome][2]string{ // SMTP, POP3
		loggedIn:         {"235 2.0.0", "+OK alice@example.test has 0 messages"},
		wrongCredentials: {"535 5.7.8 authentication credentials invalid", "-ERR [AUTH] invalid user name or password"},
		notAuthorized:    {"535 5.7.8 authorization identity must be empty or the login name", "-ERR [AUTH] authorization identity must be empty or the user name"},
		malformed:        {"501 5.5.2", "-ERR malformed PLAIN response"},
		badBase64:        {"501 5.5.2", "-ERR invalid base64"},
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name string
		arg  string // the initial response, as sent
		want outcome
	}{
		{"empty authzid", b64("\x00alice@example.test\x00" + pw), loggedIn},
		{"authzid is the login", b64("alice@example.test\x00alice@example.test\x00" + pw), loggedIn},
		{"authzid is the login in other case", b64("Alice@EXAMPLE.test\x00alice@example.test\x00" + pw), loggedIn},
		{"login in other case", b64("\x00ALICE@Example.Test\x00" + pw), loggedIn},
		{"authzid is another user", b64("bob@example.test\x00alice@example.test\x00" + pw), notAuthorized},
		{"authzid is another user, with that user's password", b64("bob@example.test\x00alice@example.test\x00pw-bob@example.test"), notAuthorized},
		{"authzid is the login with a space", b64("alice@example.test \x00alice@example.test\x00" + pw), notAuthorized},
		{"authzid with a NUL", b64("bob@example.test\x00x\x00alice@example.test\x00" + pw), malformed},
		{"login with surrounding spaces", b64("\x00 alice@example.test \x00" + pw), wrongCredentials},
		{"wrong password", b64("\x00alice@example.test\x00wrong"), wrongCredentials},
		{"unknown user", b64("\x00nobody@example.test\x00" + pw), wrongCredentials},
		{"bad base64", "!!!not-base64", badBase64},
		{"password missing", b64("\x00alice@example.test"), malformed},
		{"login missing", b64("\x00\x00" + pw), malformed},
		{"no NUL at all", b64("alice@example.test"), malformed},
		{"empty response", "=", malformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := replies[tc.want]
			if got := smtpAuthPlain(t, s.srv.addrs["listen.submissions"], tc.arg); !strings.HasPrefix(got, want[0]) {
				t.Errorf("SMTP AUTH PLAIN: %q, want %q", got, want[0])
			}
			if got := pop3AuthPlain(t, s.srv.addrs["listen.pop3s"], tc.arg); !strings.HasPrefix(got, want[1]) {
				t.Errorf("POP3 AUTH PLAIN: %q, want %q", got, want[1])
			}
		})
	}
}

// tlsDial connects to an implicit-TLS listener.
func tlsDial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return conn, bufio.NewReader(conn)
}

// smtpAuthPlain sends EHLO and AUTH PLAIN arg and returns the AUTH reply.
func smtpAuthPlain(t *testing.T, addr, arg string) string {
	t.Helper()
	conn, r := tlsDial(t, addr)
	reply := func(cmd string) string {
		t.Helper()
		if cmd != "" {
			io.WriteString(conn, cmd+"\r\n")
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", cmd, err)
			}
			if len(line) < 4 || line[3] != '-' {
				return strings.TrimSpace(line)
			}
		}
	}
	reply("")
	reply("EHLO client.test")
	got := reply("AUTH PLAIN " + arg)
	reply("QUIT")
	return got
}

// pop3AuthPlain sends AUTH PLAIN arg and returns the reply. A session that
// logged in quits and is waited for, so the maildrop is free again.
func pop3AuthPlain(t *testing.T, addr, arg string) string {
	t.Helper()
	conn, r := tlsDial(t, addr)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "AUTH PLAIN "+arg+"\r\n")
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "QUIT\r\n")
	io.ReadAll(r) // the sign-off, then the close, after the lock is released
	return strings.TrimSpace(got)
}
