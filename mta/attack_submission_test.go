package mta

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"strings"
	"sync/atomic"
	"testing"
)

// TestAttack_SubmissionOriginator tries to make a message from alice show
// another sender: every originator field a mail client displays (From:
// and Sender:, RFC 5322 3.6.2) must name alice, however it is written.
func TestAttack_SubmissionOriginator(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct{ name, header, want string }{
		{"display name holding another address is only a name", `From: "bob@example.org" <alice@example.org>` + "\r\n", "250 "},
		{"encoded word display name is only a name", "From: =?utf-8?q?bob=40example.org?= <alice@example.org>\r\n", "250 "},
		{"comment is only a comment", "From: alice@example.org (bob@example.org)\r\n", "250 "},
		{"comment cannot hide the address", "From: (alice@example.org) bob@example.org\r\n", "550 5.7.1"},
		{"group of own address", "From: Me: alice@example.org;\r\n", "250 "},
		{"group holding another address", "From: Us: alice@example.org, bob@example.org;\r\n", "550 5.7.1"},
		{"lower-case field name", "from: bob@example.org\r\n", "550 5.7.1"},
		{"second From in other case", "From: alice@example.org\r\nFROM: bob@example.org\r\n", "550 5.7.1"},
		{"From folded over lines", "From:\r\n Bob\r\n\t<bob@example.org>\r\n", "550 5.7.1"},
		{"mixed-case own domain", "From: alice@ExAmPlE.oRg\r\n", "250 "},
		{"empty From", "From:\r\n", "550 5.7.1"},
		{"name-addr after addr-spec", "From: alice@example.org <bob@example.org>\r\n", "550 5.7.1"},
		{"bare CR makes a second field", "Subject: x\rFrom: bob@example.org\r\n", "550 5.7.1"},
		{"space before the colon (obs-optional) is refused, not skipped", "From : bob@example.org\r\n", "550 5.6.0"},
		{"NUL in the field name", "From\x00: bob@example.org\r\n", "550 5.6.0"},
		{"encoded word is no address", "From: =?utf-8?q?bob=40example.org?=\r\n", "550 5.7.1"},
		{"route-addr to another user", "From: <@example.org:bob@example.org>\r\n", "550 5.7.1"},
		{"Sender of another user", "From: alice@example.org\r\nSender: bob@example.org\r\n", "550 5.7.1"},
		{"Sender in other case", "From: alice@example.org\r\nsender: <bob@example.org>\r\n", "550 5.7.1"},
		{"two Sender fields", "From: alice@example.org\r\nSender: alice@example.org\r\nSender: alice@example.org\r\n", "550 5.7.1"},
		{"Sender group holding another address", "From: alice@example.org\r\nSender: g: bob@example.org;\r\n", "550 5.7.1"},
		{"own Sender", "From: alice@example.org\r\nSender: Alice <ALICE@example.org>\r\n", "250 "},
		{"Sender without From", "Sender: bob@example.org\r\n", "550 5.7.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.submitWithHeader(t, tc.header); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	// A bare CR before CRLF ends the header: the From: after it is body
	// text everywhere, because what is checked is what is stored.
	t.Run("bare CR before CRLF ends the header for checker and reader alike", func(t *testing.T) {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		before := len(e.queue.entries())
		cl.send("alice@example.org", []string{"carol@remote.test"}, "Subject: x\r\r\nFrom: bob@example.org\r\n\r\nx\r\n")
		q := e.queue.entries()
		if len(q) != before+1 {
			t.Fatal("not queued")
		}
		hdr, _, _ := bytes.Cut(q[len(q)-1].Msg, []byte("\r\n\r\n"))
		if !bytes.Contains(hdr, []byte("From: <alice@example.org>")) || bytes.Contains(hdr, []byte("bob")) {
			t.Fatalf("header %q", hdr)
		}
	})
}

// TestAttack_SubmissionEnvelope: MAIL's AUTH= parameter (RFC 4954 5)
// cannot claim another identity, in the trace either. Which senders MAIL
// takes is pinned by testdata/dialog/submissions-envelope.txt.
func TestAttack_SubmissionEnvelope(t *testing.T) {
	e := newEnv(t, nil)
	t.Run("AUTH= does not change the trace", func(t *testing.T) {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		cl.cmd("MAIL FROM:<alice@example.org> AUTH=bob@example.org", "250 ")
		cl.cmd("RCPT TO:<bob@example.org>", "250 ")
		cl.cmd("DATA", "354 ")
		cl.write("Subject: x\r\n\r\nx\r\n.\r\n")
		cl.expect("250 ")
		m := e.mailbox("bob@example.org")
		if len(m) != 1 || !bytes.Contains(m[0], []byte("(authenticated as alice@example.org)")) {
			t.Fatalf("stored %q", m)
		}
	})
}

// TestAttack_Auth tries the SASL edge cases of RFC 4954 and RFC 4616 that
// need more than a dialogue: a line over the limit, and what reaches the
// log. The others are testdata/dialog/submissions-auth-edges.txt.
func TestAttack_Auth(t *testing.T) {
	e := newEnv(t, nil)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	session := func(t *testing.T) *client {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.cmd("EHLO client.test", "250 ")
		return cl
	}
	t.Run("overlong AUTH line closes", func(t *testing.T) {
		cl := session(t)
		cl.cmd("AUTH LOGIN", "334 ")
		cl.write(strings.Repeat("QUFB", DefaultMaxLineLength/4+1) + "\r\n")
		// go-smtp may first hand on what it read of the line (bufio's
		// ReadLine returns a partial line before the error): at most one
		// reply to that, then 500 and the connection is closed.
		var got []string
		for {
			lines, err := cl.reply()
			if err != nil {
				break
			}
			got = append(got, lines[len(lines)-1])
		}
		if len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "500 5.4.0") || len(got) > 2 {
			t.Fatalf("replies %q", got)
		}
	})
	t.Run("long user name is logged truncated", func(t *testing.T) {
		cl := session(t)
		long := strings.Repeat("u", 5000) + "@example.org"
		cl.cmd("AUTH PLAIN "+plain("", long, "pw"), "535 5.7.8")
		if strings.Contains(e.logs.String(), strings.Repeat("u", 129)) {
			t.Fatal("log holds the whole user name")
		}
	})
	t.Run("no credential reaches the log", func(t *testing.T) {
		const secret = "s3cret-Pa55"
		cl := session(t)
		cl.cmd("AUTH PLAIN "+plain("", "alice@example.org", secret), "535 5.7.8")
		cl.cmd("AUTH PLAIN "+plain("bob@example.org", "alice@example.org", secret), "535 5.7.8")
		cl.cmd("AUTH PLAIN "+b64("\x00alice@example.org\x00"+secret+"\x00x"), "501 5.5.2")
		cl.cmd("AUTH LOGIN "+b64("alice@example.org"), "334 ")
		cl.cmd(b64(secret), "535 5.7.8")
		cl.cmd("AUTH PLAIN "+plain("", "alice@example.org", testPass), "235 ")
		logs := e.logs.String()
		for _, leak := range []string{secret, b64(secret), testPass, plain("", "alice@example.org", testPass)} {
			if strings.Contains(logs, leak) {
				t.Fatalf("log holds %q:\n%s", leak, logs)
			}
		}
	})
}

// TestAttack_STARTTLSInjection is CVE-2011-0411: plain-text commands sent
// in the same packet as STARTTLS must be discarded, not run inside the TLS
// session where they would pass as the client's. Here the MX, whose
// mailbox shows nothing was run; submission is
// testdata/dialog/submission-starttls-injection.txt.
func TestAttack_STARTTLSInjection(t *testing.T) {
	e := newEnv(t, nil)
	upgrade := func(t *testing.T, cl *client, injected string) {
		cl.write("STARTTLS\r\n" + injected)
		cl.expect("220 2.0.0")
		tc := tls.Client(cl.c, e.clientTLS)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		cl.c, cl.r = tc, newClient(t, tc).r
	}
	t.Run("MX: injected transaction is not run", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		upgrade(t, cl, "EHLO evil.test\r\nMAIL FROM:<evil@other.test>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n")
		// The first reply inside TLS must answer our NOOP, and with no
		// EHLO yet MAIL is out of sequence.
		cl.cmd("NOOP", "250 2.0.0")
		cl.cmd("MAIL FROM:<bob@other.test>", "503 5.5.1 Please introduce yourself first.")
		if m := e.mailbox("alice@example.org"); len(m) != 0 {
			t.Fatalf("injected message stored: %q", m)
		}
	})
}

// TestAttack_TLSParameters: no TLS below 1.2 (RFC 8314 4.1) and no session
// tickets (Microsoft senders fail STARTTLS against Go servers issuing them)
// on any listener, STARTTLS or implicit.
func TestAttack_TLSParameters(t *testing.T) {
	e := newEnv(t, nil)
	handshake := func(t *testing.T, addr string, implicit bool, cfg *tls.Config) (*tls.Conn, error) {
		if implicit {
			return tls.Dial("tcp", addr, cfg)
		}
		cl := dial(t, addr)
		cl.cmd("EHLO client.test", "250 ")
		cl.cmd("STARTTLS", "220 ")
		tc := tls.Client(cl.c, cfg)
		return tc, tc.Handshake()
	}
	for _, l := range []struct {
		name     string
		addr     string
		implicit bool
	}{{"MX STARTTLS", e.mxAddr, false}, {"submission STARTTLS", e.subAddr, false}, {"submissions", e.subsAddr, true}} {
		t.Run(l.name+": TLS 1.1 is refused", func(t *testing.T) {
			cfg := e.clientTLS.Clone()
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			if tc, err := handshake(t, l.addr, l.implicit, cfg); err == nil {
				tc.Close()
				t.Fatal("TLS 1.1 handshake succeeded")
			}
		})
		t.Run(l.name+": no session ticket is issued", func(t *testing.T) {
			cache := &recordingCache{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			cfg := e.clientTLS.Clone()
			cfg.ClientSessionCache = cache
			tc, err := handshake(t, l.addr, l.implicit, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer tc.Close()
			// TLS 1.3 tickets arrive after the handshake: read a reply so
			// that any ticket has been processed.
			if l.implicit {
				newClient(t, tc).expect("220 ")
			} else {
				newClient(t, tc).cmd("NOOP", "250 ")
			}
			if cache.puts.Load() != 0 {
				t.Fatal("server issued a session ticket")
			}
		})
	}
}

// recordingCache counts the session tickets a client is given.
type recordingCache struct {
	tls.ClientSessionCache
	puts atomic.Int32
}

func (c *recordingCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.puts.Add(1)
	}
	c.ClientSessionCache.Put(key, cs)
}
