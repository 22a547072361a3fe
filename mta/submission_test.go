package mta

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/smtp"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"minimail/mta/guard"
)

// signer is a fake DKIM signer that records the domain it signed for.
func signer(domain string, _ []byte) ([]byte, error) {
	return []byte("DKIM-Signature: v=1; d=" + domain + "; b=fake\r\n"), nil
}

func TestSubmission_ThunderbirdSession(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.Sign = signer })
	conn, err := net.Dial("tcp", e.subAddr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, testHost)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("[192.168.1.20]"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH advertised before TLS")
	}
	if err := c.StartTLS(e.clientTLS); err != nil {
		t.Fatal(err)
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Fatalf("AUTH after STARTTLS: %v %q", ok, mechs)
	}
	if err := c.Auth(smtp.PlainAuth("", "alice@example.org", testPass, testHost)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@example.org"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"bob@example.org", "carol@remote.test"} {
		if err := c.Rcpt(r); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: Alice <alice@example.org>\r\nTo: bob@example.org, carol@remote.test\r\n" +
		"Date: Tue, 03 Mar 2026 10:00:00 +0100\r\nMessage-ID: <tb1@example.org>\r\nSubject: hi\r\n\r\nHello both.\r\n"
	w.Write([]byte(msg))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	local := e.mailbox("bob@example.org")
	if len(local) != 1 {
		t.Fatalf("bob has %d messages", len(local))
	}
	q := e.queue.entries()
	if len(q) != 1 || q[0].From != "alice@example.org" || strings.Join(q[0].Rcpts, ",") != "carol@remote.test" {
		t.Fatalf("queued %+v", q)
	}
	for name, m := range map[string][]byte{"local": local[0], "queued": q[0].Msg} {
		rcv := regexp.MustCompile(`Received: from \[192\.168\.1\.20\] \(\[127\.0\.0\.1\]\)\r\n` +
			`\t\(authenticated as alice@example\.org\)\r\n` +
			`\tby mx\.example\.org with ESMTPSA \(TLS 1\.3 TLS_[A-Z0-9_]+\) id [0-9a-f]{16}; Wed, 04 Mar 2026 05:06:07 \+0000\r\n` +
			`DKIM-Signature: v=1; d=example\.org; b=fake\r\n` + regexp.QuoteMeta(msg) + `$`)
		if !rcv.Match(m) {
			t.Errorf("%s copy:\n%s", name, m)
		}
	}
}

// TestSubmission_ImplicitTLSIsESMTPSA: mail over 465 is traced as
// ESMTPSA with its TLS version; the replies there are pinned by
// testdata/dialog/submissions-ehlo.txt.
func TestSubmission_ImplicitTLSIsESMTPSA(t *testing.T) {
	e := newEnv(t, nil)
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	if got := cl.send("alice@example.org", []string{"bob@example.org"}, "From: alice@example.org\r\nSubject: 465\r\n\r\nvia 465\r\n"); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatal(got)
	}
	if m := e.mailbox("bob@example.org"); len(m) != 1 || !bytes.Contains(m[0], []byte("with ESMTPSA (TLS 1.3")) {
		t.Fatalf("stored %q", m)
	}
}

func TestSubmission_AuthNeedsTLS(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.subAddr)
	ehlo := strings.Join(cl.cmd("EHLO client.test", "250 "), "\n")
	if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("EHLO before TLS:\n%s", ehlo)
	}
	cl.cmd("AUTH PLAIN "+plain("", "alice@example.org", testPass), "538 5.7.11")
	cl.cmd("AUTH LOGIN", "538 5.7.11")
	cl.cmd("MAIL FROM:<alice@example.org>", "530 5.7.0")
	if strings.Contains(e.logs.String(), testPass) {
		t.Fatal("password in log")
	}
}

func TestSubmission_WrongPasswordDelayedAndNotLogged(t *testing.T) {
	const delay = 80 * time.Millisecond
	e := newEnv(t, func(o *Options, _ *Local) { o.AuthFailDelay = delay })
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.cmd("EHLO client.test", "250 ")
	start := time.Now()
	cl.cmd("AUTH PLAIN "+plain("", "alice@example.org", "hunter2-secret"), "535 5.7.8")
	if d := time.Since(start); d < delay {
		t.Errorf("535 after %v, want at least %v", d, delay)
	}
	cl.cmd("AUTH PLAIN "+plain("", "nobody@example.org", "hunter2-secret"), "535 5.7.8")
	logs := e.logs.String()
	if strings.Contains(logs, "hunter2") || strings.Contains(logs, testPass) {
		t.Fatalf("password in log:\n%s", logs)
	}
	if !strings.Contains(logs, `"msg":"auth_failed"`) || !strings.Contains(logs, `"user":"alice@example.org"`) {
		t.Fatalf("failure not logged:\n%s", logs)
	}
}

func TestSubmission_ThrottlePerIP(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	throttle := &guard.AuthThrottle{MaxPerIP: 2, Window: time.Minute, Now: clock}
	e := newEnv(t, func(o *Options, _ *Local) { o.AuthThrottle = throttle })
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.cmd("EHLO client.test", "250 ")
	cl.cmd("AUTH PLAIN "+plain("", "alice@example.org", "guess1"), "535 5.7.8")
	cl.cmd("AUTH PLAIN "+plain("", "bob@example.org", "guess2"), "535 5.7.8")
	// Now even the right password is refused from this IP, on any connection.
	cl.cmd("AUTH PLAIN "+plain("", "alice@example.org", testPass), "454 4.7.0")
	other := dialTLS(t, e.subsAddr, e.clientTLS)
	other.cmd("EHLO client.test", "250 ")
	other.cmd("AUTH PLAIN "+plain("", "alice@example.org", testPass), "454 4.7.0")

	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	other.cmd("AUTH PLAIN "+plain("", "alice@example.org", testPass), "235 2.0.0")
}

func TestSubmission_SenderIdentity(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name, header string
		want         string
	}{
		{"other user", "From: bob@example.org\r\n", "550 5.7.1"},
		{"display name trick", "From: \"alice@example.org\" <bob@example.org>\r\n", "550 5.7.1"},
		{"second mailbox", "From: alice@example.org, bob@example.org\r\n", "550 5.7.1"},
		{"second field", "From: alice@example.org\r\nFrom: bob@example.org\r\n", "550 5.7.1"},
		{"folded", "From: Bob\r\n <bob@example.org>\r\n", "550 5.7.1"},
		{"group", "From: undisclosed:;\r\n", "550 5.7.1"},
		{"garbage", "From: <<<\r\n", "550 5.7.1"},
		{"malformed header", "From alice@example.org\r\n", "550 5.6.0"},
		{"own address", "From: Alice <Alice@Example.ORG>\r\n", "250 "},
		{"encoded name", "From: =?windows-1252?q?Al=EFce?= <alice@example.org>\r\n", "250 "},
		{"missing", "", "250 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.submitWithHeader(t, tc.header); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	q := e.queue.entries()
	if len(q) != 3 {
		t.Fatalf("queued %d, want only the 3 accepted", len(q))
	}
	if !bytes.Contains(q[2].Msg, []byte("\r\nFrom: <alice@example.org>\r\n")) {
		t.Errorf("From: not added:\n%s", q[2].Msg)
	}
}

func TestSubmission_DateAndMessageIDAdded(t *testing.T) {
	e := newEnv(t, nil)
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	cl.send("alice@example.org", []string{"bob@example.org"}, "From: alice@example.org\r\nSubject: bare\r\n\r\nx\r\n")
	cl.send("alice@example.org", []string{"bob@example.org"},
		"From: alice@example.org\r\nDate: Mon, 02 Mar 2026 09:00:00 +0000\r\nMessage-Id: <own@example.org>\r\nSubject: full\r\n\r\nx\r\n")
	m := e.mailbox("bob@example.org")
	if len(m) != 2 {
		t.Fatalf("stored %d", len(m))
	}
	added := regexp.MustCompile(`\r\nDate: Wed, 04 Mar 2026 05:06:07 \+0000\r\nMessage-ID: <[0-9a-f]{16}@mx\.example\.org>\r\nFrom: alice@example\.org\r\nSubject: bare\r\n`)
	if !added.Match(m[0]) {
		t.Errorf("not added:\n%s", m[0])
	}
	if n := bytes.Count(m[1], []byte("Date: ")) + bytes.Count(bytes.ToLower(m[1]), []byte("message-id: ")); n != 2 {
		t.Errorf("fields duplicated:\n%s", m[1])
	}
}

func TestSubmission_PartialFailureStoresNothingUnacknowledged(t *testing.T) {
	e, fail := newFailingEnv(t)
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	msg := "From: alice@example.org\r\nSubject: x\r\n\r\nx\r\n"

	// Local delivery fails temporarily: 451, and nothing is queued, so the
	// client's retry sends the remote copy exactly once.
	fail.deliverErr = tempError{"disk full"}
	if got := cl.send("alice@example.org", []string{"bob@example.org", "carol@remote.test"}, msg); !strings.HasPrefix(got, "451 4.3.0") {
		t.Fatalf("got %q", got)
	}
	if q := e.queue.entries(); len(q) != 0 {
		t.Fatalf("queued after local failure: %d", len(q))
	}

	// The queue fails: 451 as well, never a permanent 554.
	fail.deliverErr = nil
	e.queue.mu.Lock()
	e.queue.err = errors.New("queue write failed")
	e.queue.mu.Unlock()
	if got := cl.send("alice@example.org", []string{"carol@remote.test"}, msg); !strings.HasPrefix(got, "451 4.3.0") {
		t.Fatalf("got %q", got)
	}
}

func TestSubmission_Recipients(t *testing.T) {
	e := newEnv(t, nil)
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", "250 ")
	cl.cmd("RCPT TO:<nobody@example.org>", "550 5.1.1")
	cl.cmd("RCPT TO:<carol@remote.test>", "250 ")
	cl.cmd("RCPT TO:<CAROL@REMOTE.TEST>", "250 ") // same address, queued once
	cl.cmd(`RCPT TO:<"carol@evil.test"@remote.test>`, "553 5.1.3")
	cl.cmd(`RCPT TO:<"car ol"@remote.test>`, "553 5.1.3")
	cl.cmd("DATA", "354 ")
	cl.write("From: alice@example.org\r\n\r\nx\r\n.\r\n")
	cl.expect("250 ")
	if q := e.queue.entries(); len(q) != 1 || strings.Join(q[0].Rcpts, ",") != "carol@remote.test" {
		t.Fatalf("queued %+v", q)
	}
}

func TestServerTLSConfig(t *testing.T) {
	c := ServerTLSConfig(&tls.Config{MinVersion: tls.VersionTLS10})
	if c.MinVersion != tls.VersionTLS12 || !c.SessionTicketsDisabled {
		t.Fatalf("%+v", c)
	}
	if c := ServerTLSConfig(&tls.Config{MinVersion: tls.VersionTLS13}); c.MinVersion != tls.VersionTLS13 {
		t.Fatal("TLS 1.3 minimum lowered")
	}
}
