package mta

import (
	"strings"
	"testing"
	"time"
)

// TestAttack_MXNeverRelays tries every RCPT form known to have slipped past
// a local-domain check somewhere (RFC 5321 3.6.1 and 3.9; Postfix's
// allow_percent_hack and swap_bangpath history). Each must be refused as
// relaying, refused as malformed, or delivered to a real local mailbox;
// never accepted for a mailbox elsewhere.
func TestAttack_MXNeverRelays(t *testing.T) {
	e := newEnv(t, nil)
	long := strings.Repeat("a", 65)
	for _, tc := range []struct {
		name, rcpt, params, want string
	}{
		{"trailing dot on our domain is not ours", "alice@example.org.", "", "553 5.1.3"},
		{"trailing dot on another domain", "victim@other.test.", "", "553 5.1.3"},
		{"upper-case domain is ours", "alice@EXAMPLE.ORG", "", "250 "},
		{"punycode domain is not ours", "alice@xn--exmple-cua.org", "", "550 5.7.1"},
		{"U-label without SMTPUTF8", "alice@exämple.org", "", "553 5.6.7"},
		{"U-label with SMTPUTF8", "alice@exämple.org", " SMTPUTF8", "550 5.7.1"},
		{"Kelvin sign folds onto no local domain", "alice@\u212Aexample.org", " SMTPUTF8", "550 5.7.1"},
		{"IPv4 address literal", "victim@[127.0.0.1]", "", "550 5.7.1"},
		{"IPv6 address literal", "victim@[IPv6:::1]", "", "550 5.7.1"},
		{"malformed address literal", "victim@[127.0.0.1", "", "553 5.1.3"},
		{"second @ routes to another domain", "alice@example.org@other.test", "", "550 5.7.1"},
		{"second @ routes from another domain", "victim@other.test@example.org", "", "550 5.7.1"},
		{"quoted local part holding @", `"victim@other.test"@example.org`, "", "550 5.7.1"},
		{"quoted local part holding %", `"victim%other.test"@example.org`, "", "550 5.7.1"},
		{"percent hack", "victim%other.test@example.org", "", "550 5.7.1"},
		{"bang path", "other.test!victim@example.org", "", "550 5.7.1"},
		{"source route to us, mailbox elsewhere", "@example.org:victim@other.test", "", "550 5.7.1"},
		{"multi-hop source route, mailbox elsewhere", "@example.org,@mx.example.org:victim@other.test", "", "550 5.7.1"},
		{"source route ignored, mailbox ours", "@other.test:alice@example.org", "", "250 "},
		{"NUL in local part", "ali\x00ce@example.org", "", "553 5.1.3"},
		{"DEL in domain", "alice@example.org\x7f", "", "553 5.1.3"},
		{"bare CR in local part", "ali\rce@example.org", "", "553 5.1.3"},
		{"local part over 64 octets", long + "@example.org", "", "553 5.1.3"},
		{"path over 256 octets", "a@" + strings.Repeat("b.", 130) + "org", "", "553 5.1.3"},
		{"UTF-8 local part without SMTPUTF8", "ålice@example.org", "", "553 5.6.7"},
		{"UTF-8 local part with SMTPUTF8, no such user", "ålice@example.org", " SMTPUTF8", "550 5.1.1"},
		{"quoted space is no user", `"alice "@example.org`, "", "550 5.1.1"},
		{"empty quoted local part", `""@example.org`, "", "501 5.5.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, e.mxAddr)
			cl.cmd("EHLO mx.other.test", "250 ")
			cl.cmd("MAIL FROM:<sender@other.test>"+tc.params, "250 ")
			cl.cmd("RCPT TO:<"+tc.rcpt+">", tc.want)
			// Whatever was accepted must be a local mailbox: deliver and look.
			if strings.HasPrefix(tc.want, "250") {
				cl.cmd("DATA", "354 ")
				cl.write("Subject: x\r\n\r\nx\r\n.\r\n")
				cl.expect("250 2.0.0")
			}
			cl.cmd("QUIT", "221 ")
		})
	}
	if q := e.queue.entries(); len(q) != 0 {
		t.Fatalf("the MX queued mail: %+v", q)
	}
	if n := len(e.mailbox("alice@example.org")); n != 2 {
		t.Fatalf("alice has %d messages, want 2", n)
	}
}

// TestAttack_PostmasterWithoutDomain: RFC 5321 4.1.1.3 and 4.5.1 make a
// bare RCPT TO:<Postmaster> (any case) reach this server's postmaster
// (go-smtp accepts the form since v0.26.0). It is not a relay: the address
// becomes postmaster@ of the first local domain.
func TestAttack_PostmasterWithoutDomain(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO mx.other.test", "250 ")
	cl.cmd("MAIL FROM:<sender@other.test>", "250 ")
	cl.cmd("RCPT TO:<postmaster>", "550 5.1.1")
	cl.cmd("RCPT TO:<Postmaster>", "550 5.1.1")
	if err := e.st.AddUser("postmaster@example.org", testPass); err != nil {
		t.Fatal(err)
	}
	cl.cmd("RCPT TO:<PostMaster>", "250 ")
}

// TestAttack_SubmissionRecipients checks the forms an authenticated user
// may relay to: only what the queue can send on unambiguously.
func TestAttack_SubmissionRecipients(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct{ name, rcpt, want string }{
		{"trailing dot is refused, not queued", "carol@remote.test.", "553 5.1.3"},
		{"local part needing quotes is refused", `"carol@evil.test"@remote.test`, "553 5.1.3"},
		{"second @ is refused", "carol@evil.test@remote.test", "553 5.1.3"},
		{"percent hack on our domain finds no user", "bob%remote.test@example.org", "550 5.1.1"},
		{"bang path on our domain finds no user", "remote.test!bob@example.org", "550 5.1.1"},
		{"NUL is refused", "car\x00ol@remote.test", "553 5.1.3"},
		// Relaying to an IP would let any user make the server connect
		// to its own loopback, the internal network or a cloud metadata
		// address (see TestAttack_SubmissionLiteralAmongGoodRecipients).
		{"IPv4 literal is refused", "carol@[192.0.2.1]", "550 5.7.1"},
		{"loopback literal is refused", "x@[127.0.0.1]", "550 5.7.1"},
		{"cloud metadata literal is refused", "x@[169.254.169.254]", "550 5.7.1"},
		{"unspecified address literal is refused", "x@[0.0.0.0]", "550 5.7.1"},
		{"IPv6 loopback literal is refused", "x@[IPv6:::1]", "550 5.7.1"},
		{"IPv4-mapped IPv6 literal is refused", "x@[ipv6:::ffff:127.0.0.1]", "550 5.7.1"},
		{"dotted quad as a domain is refused", "x@127.0.0.1", "550 5.7.1"},
		{"metadata dotted quad as a domain is refused", "x@169.254.169.254", "550 5.7.1"},
		{"short IPv4 form as a domain is refused", "x@127.1", "550 5.7.1"},
		{"a name with digits is relayed", "carol@123.remote.test", "250 "},
		{"upper-case local domain is local", "BOB@EXAMPLE.ORG", "250 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dialTLS(t, e.subsAddr, e.clientTLS)
			cl.login("alice@example.org")
			cl.cmd("MAIL FROM:<alice@example.org>", "250 ")
			cl.cmd("RCPT TO:<"+tc.rcpt+">", tc.want)
		})
	}
}

// TestAttack_SecondEHLO: go-smtp checks only the first HELO/EHLO with the
// session; a second one, which RFC 5321 4.1.4 allows, must not carry a name
// into the Received field or logs that the first would have been refused.
func TestAttack_SecondEHLO(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct{ name, helo string }{
		{"over 255 octets", strings.Repeat("h", 300)},
		{"control character", "mx\x01.other.test"},
		{"bare CR", "mx\r.other.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, e.mxAddr)
			cl.cmd("EHLO mx.other.test", "250 ")
			cl.cmd("EHLO "+tc.helo, "250 ")
			cl.cmd("MAIL FROM:<bob@other.test>", "501 5.5.2")
			cl.cmd("EHLO mx.other.test", "250 ")
			cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
		})
	}
}

// TestAttack_LogFlooding: a refused recipient is logged, but not at the
// length the client chose to send it.
func TestAttack_LogFlooding(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO mx.other.test", "250 ")
	cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
	long := strings.Repeat("v", 20_000)
	cl.cmd("RCPT TO:<"+long+"@other.test>", "500 5.5.2")
	cl.cmd("RCPT TO:<\"\xff\xfe"+long+"\"@example.org>", "500 5.5.2")
	cl.cmd("QUIT", "221 ")
	cl.expectClosed()
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), `"refused"`) })
	if l := e.logs.String(); strings.Contains(l, strings.Repeat("v", 200)) {
		t.Fatalf("log holds the whole address: %d bytes", len(l))
	}
}

// waitFor polls cond until it holds, for log lines written after a reply.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
	}
}
