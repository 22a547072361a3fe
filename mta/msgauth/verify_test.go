package msgauth

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"minimail/mta/dnstest"
	"minimail/mta/resolve"
)

const ourID = "mx.b.test"

// world starts a DNS server for the domains the tests send from:
//
//	a.test        what Records publishes for it: MX mx.a.test (127.0.0.1),
//	              "v=spf1 mx -all", the DKIM key, p=quarantine
//	bank.test     signs with the same key; SPF only 192.0.2.1; p=reject
//	evil.test     SPF +all, no DMARC record: the forger's own domain
//	strict.test   p=reject with strict alignment; mail.strict.test SPF-passes 127.0.0.1
//	relaxed.test  p=reject, relaxed; mail.relaxed.test SPF-passes 127.0.0.1
//	lists.test    p=reject sp=none
//	pct.test      p=reject pct=0
//	nodmarc.test  no DMARC record
//	broken.test   an invalid DMARC record
func world(t testing.TB) *dnstest.Server {
	t.Helper()
	pub := key(t).Public()
	a, err := Records("a.test", "mx.a.test", "mail", pub)
	if err != nil {
		t.Fatal(err)
	}
	bank, err := Records("bank.test", "mx.bank.test", "mail", pub)
	if err != nil {
		t.Fatal(err)
	}
	return dnstest.Start(t, append(zoneLines(a),
		"mx.a.test. 60 IN A 127.0.0.1",
		`mx.a.test. 60 IN TXT "v=spf1 a -all"`,
		bank[2].Zone(), // the DKIM key record
		`bank.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"`,
		`_dmarc.bank.test. 60 IN TXT "v=DMARC1; p=reject"`,
		`evil.test. 60 IN TXT "v=spf1 +all"`,
		`_dmarc.strict.test. 60 IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"`,
		`mail.strict.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
		`_dmarc.relaxed.test. 60 IN TXT "v=DMARC1; p=reject"`,
		`mail.relaxed.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
		`_dmarc.lists.test. 60 IN TXT "v=DMARC1; p=reject; sp=none"`,
		`_dmarc.pct.test. 60 IN TXT "v=DMARC1; p=reject; pct=0"`,
		`_dmarc.broken.test. 60 IN TXT "v=DMARC1; p=bogus"`,
	)...)
}

func signed(t *testing.T, domain string, msg []byte) []byte {
	t.Helper()
	s := &Signer{Selector: "mail", Key: key(t), Domains: []string{"a.test", "bank.test"}}
	out, err := s.Sign(domain, msg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// authResults returns the first field of out, which must be our
// Authentication-Results and the only one claiming our authserv-id,
// unfolded and with white space runs collapsed.
func authResults(t *testing.T, out []byte) string {
	t.Helper()
	fields, _ := splitHeader(out)
	if len(fields) == 0 || !strings.EqualFold(fields[0].name, "Authentication-Results") {
		t.Fatalf("first field is not Authentication-Results:\n%s", out)
	}
	n := 0
	for _, f := range fields {
		if claimsAuthServID(f, ourID) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d Authentication-Results fields claim %s, want 1:\n%s", n, ourID, out)
	}
	return strings.Join(strings.Fields(fields[0].value()), " ")
}

func TestVerify(t *testing.T) {
	changeBody := func(m []byte) []byte { return bytes.Replace(m, []byte("tomorrow"), []byte("never"), 1) }
	tests := []struct {
		name     string
		ip       string // default 127.0.0.1
		helo     string // default mx.a.test
		mailFrom string
		msg      func(t *testing.T) []byte
		dns      func(*dnstest.Server)
		lenient  bool // RejectDMARC false
		hang     bool // a lookup hangs: Verify's timeout is short
		want     []string
		refused  Disposition // not Deliver: the message is refused or deferred
	}{{
		name: "signed message from the MX passes all three", mailFrom: "alice@a.test",
		msg:  func(t *testing.T) []byte { return signed(t, "a.test", plainMessage("alice@a.test")) },
		want: []string{"mx.b.test; spf=pass smtp.mailfrom=alice@a.test; dkim=pass header.d=a.test header.s=mail; dmarc=pass header.from=a.test"},
	}, {
		name: "body changed after signing fails DKIM", mailFrom: "alice@a.test",
		msg:  func(t *testing.T) []byte { return changeBody(signed(t, "a.test", plainMessage("alice@a.test"))) },
		want: []string{"spf=pass", `dkim=fail reason="body hash did not verify" header.d=a.test`, "dmarc=pass"},
	}, {
		name: "body changed and foreign IP fails DMARC, p=quarantine delivers", ip: "192.0.2.9", mailFrom: "alice@a.test",
		msg:  func(t *testing.T) []byte { return changeBody(signed(t, "a.test", plainMessage("alice@a.test"))) },
		want: []string{"spf=fail", "dkim=fail", `dmarc=fail reason="policy quarantine" header.from=a.test`},
	}, {
		name: "Subject prepended to a message we signed fails DKIM and DMARC", ip: "192.0.2.9", mailFrom: "alice@a.test",
		msg: func(t *testing.T) []byte {
			return prependField(signed(t, "a.test", plainMessage("alice@a.test")), "Subject: pay this invoice")
		},
		want: []string{"spf=fail", `dkim=fail reason="signature did not verify`, "dmarc=fail"},
	}, {
		name: "To prepended to a message we signed fails DKIM and DMARC", ip: "192.0.2.9", mailFrom: "alice@a.test",
		msg: func(t *testing.T) []byte {
			return prependField(signed(t, "a.test", plainMessage("alice@a.test")), "To: victim@c.test")
		},
		want: []string{"spf=fail", `dkim=fail reason="signature did not verify`, "dmarc=fail"},
	}, {
		name: "forged From of a p=reject domain is refused", mailFrom: "x@evil.test",
		msg:     func(*testing.T) []byte { return plainMessage("ceo@bank.test") },
		refused: RejectPolicy,
	}, {
		name: "forged From of a p=reject domain is delivered marked when not rejecting", mailFrom: "x@evil.test", lenient: true,
		msg:  func(*testing.T) []byte { return plainMessage("ceo@bank.test") },
		want: []string{"spf=pass smtp.mailfrom=x@evil.test; dkim=none; dmarc=fail", "header.from=bank.test"},
	}, {
		name: "forged From with a valid but unaligned signature is refused", mailFrom: "x@evil.test",
		msg:     func(t *testing.T) []byte { return signed(t, "a.test", plainMessage("ceo@bank.test")) },
		refused: RejectPolicy,
	}, {
		// The path as mta hands it over: one parse, quotes kept. SPF checks
		// the domain after the last '@' (bank.test, -all), not evil.test.
		name: "quoted local part holding '@': SPF checks the real domain", mailFrom: `"x@evil.test>, <ceo"@bank.test`, lenient: true,
		msg:  func(*testing.T) []byte { return plainMessage("x@evil.test") },
		want: []string{`spf=fail smtp.mailfrom="\"x@evil.test>, <ceo\"@bank.test"`},
	}, {
		name: "aligned DKIM alone passes DMARC", mailFrom: "x@evil.test",
		msg:  func(t *testing.T) []byte { return signed(t, "bank.test", plainMessage("ceo@bank.test")) },
		want: []string{"dkim=pass header.d=bank.test header.s=mail", "dmarc=pass header.from=bank.test"},
	}, {
		name: "null sender is checked with HELO", mailFrom: "",
		msg:  func(*testing.T) []byte { return plainMessage("mailer-daemon@a.test") },
		want: []string{"spf=pass smtp.helo=mx.a.test;", "dmarc=pass"},
	}, {
		name: "null sender with HELO from an unlisted IP fails", mailFrom: "", ip: "192.0.2.9",
		msg:  func(*testing.T) []byte { return plainMessage("mailer-daemon@a.test") },
		want: []string{"spf=fail smtp.helo=mx.a.test;"},
	}, {
		name: "SPF SERVFAIL for a p=reject domain defers", mailFrom: "x@bank.test",
		dns:     func(s *dnstest.Server) { s.Fail("bank.test") },
		msg:     func(*testing.T) []byte { return plainMessage("ceo@bank.test") },
		refused: Temporary,
	}, {
		name: "SPF SERVFAIL is temperror, never pass", mailFrom: "x@bank.test", lenient: true,
		dns:  func(s *dnstest.Server) { s.Fail("bank.test") },
		msg:  func(*testing.T) []byte { return plainMessage("ceo@bank.test") },
		want: []string{`spf=temperror reason="DNS lookup failed"`, "dmarc=temperror"},
	}, {
		name: "SPF timeout is temperror while DKIM still passes", mailFrom: "alice@a.test", hang: true,
		dns:  func(s *dnstest.Server) { s.Hang("a.test") },
		msg:  func(t *testing.T) []byte { return signed(t, "a.test", plainMessage("alice@a.test")) },
		want: []string{"spf=temperror", "dkim=pass", "dmarc=pass"},
	}, {
		name: "DMARC record timeout defers", mailFrom: "x@evil.test", hang: true,
		dns:     func(s *dnstest.Server) { s.Hang("_dmarc.bank.test") },
		msg:     func(*testing.T) []byte { return plainMessage("ceo@bank.test") },
		refused: Temporary,
	}, {
		name: "DMARC record timeout is temperror when not rejecting", mailFrom: "x@evil.test", lenient: true, hang: true,
		dns:  func(s *dnstest.Server) { s.Hang("_dmarc.bank.test") },
		msg:  func(*testing.T) []byte { return plainMessage("ceo@bank.test") },
		want: []string{"spf=pass", `dmarc=temperror reason="DMARC record unavailable"`},
	}, {
		name: "DMARC record SERVFAIL with an exactly aligned pass delivers", mailFrom: "x@evil.test",
		dns:  func(s *dnstest.Server) { s.Fail("_dmarc.bank.test") },
		msg:  func(t *testing.T) []byte { return signed(t, "bank.test", plainMessage("ceo@bank.test")) },
		want: []string{"dkim=pass", "dmarc=temperror"},
	}, {
		name: "DKIM key SERVFAIL for a p=reject domain defers", mailFrom: "x@evil.test",
		dns:     func(s *dnstest.Server) { s.Fail("mail._domainkey.bank.test") },
		msg:     func(t *testing.T) []byte { return signed(t, "bank.test", plainMessage("ceo@bank.test")) },
		refused: Temporary,
	}, {
		name: "DKIM key SERVFAIL under p=quarantine delivers temperror", mailFrom: "alice@a.test", ip: "192.0.2.9",
		dns:  func(s *dnstest.Server) { s.Fail("mail._domainkey.a.test") },
		msg:  func(t *testing.T) []byte { return signed(t, "a.test", plainMessage("alice@a.test")) },
		want: []string{"spf=fail", `dkim=temperror reason="key unavailable" header.d=a.test`, "dmarc=temperror"},
	}, {
		name: "subdomain without a record inherits p=reject", mailFrom: "x@evil.test",
		msg:     func(*testing.T) []byte { return plainMessage("news@news.bank.test") },
		refused: RejectPolicy,
	}, {
		name: "sp=none spares subdomains", mailFrom: "x@evil.test",
		msg:  func(*testing.T) []byte { return plainMessage("x@sub.lists.test") },
		want: []string{`dmarc=fail reason="policy none" header.from=sub.lists.test`},
	}, {
		name: "strict alignment refuses a subdomain's SPF pass", mailFrom: "x@mail.strict.test",
		msg:     func(*testing.T) []byte { return plainMessage("x@strict.test") },
		refused: RejectPolicy,
	}, {
		name: "relaxed alignment accepts a subdomain's SPF pass", mailFrom: "x@mail.relaxed.test",
		msg:  func(*testing.T) []byte { return plainMessage("x@relaxed.test") },
		want: []string{"spf=pass smtp.mailfrom=x@mail.relaxed.test", "dmarc=pass header.from=relaxed.test"},
	}, {
		name: "pct=0 downgrades reject to quarantine", mailFrom: "x@evil.test",
		msg:  func(*testing.T) []byte { return plainMessage("x@pct.test") },
		want: []string{`dmarc=fail reason="policy quarantine"`},
	}, {
		name: "no DMARC record is none", mailFrom: "x@evil.test",
		msg:  func(*testing.T) []byte { return plainMessage("x@nodmarc.test") },
		want: []string{"dmarc=none header.from=nodmarc.test"},
	}, {
		name: "invalid DMARC record is permerror", mailFrom: "x@evil.test",
		msg:  func(*testing.T) []byte { return plainMessage("x@broken.test") },
		want: []string{"dmarc=permerror"},
	}, {
		name: "bare LF message signs and verifies", mailFrom: "alice@a.test",
		msg: func(t *testing.T) []byte {
			return signed(t, "a.test", bytes.ReplaceAll(plainMessage("alice@a.test"), []byte("\r\n"), []byte("\n")))
		},
		want: []string{"spf=pass", "dkim=pass", "dmarc=pass"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := world(t)
			if tc.dns != nil {
				tc.dns(srv)
			}
			ip, helo := tc.ip, tc.helo
			if ip == "" {
				ip = "127.0.0.1"
			}
			if helo == "" {
				helo = "mx.a.test"
			}
			// The timeout bounds the hanging cases; the others get room for
			// a loaded machine.
			timeout := 10 * time.Second
			if tc.hang {
				timeout = 1500 * time.Millisecond
			}
			v := &Verifier{Resolver: srv.Resolver(), AuthServID: ourID, RejectDMARC: !tc.lenient, Timeout: timeout}
			msg := tc.msg(t)
			verdict, err := v.Verify(context.Background(), net.ParseIP(ip), helo, tc.mailFrom, msg)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			// Through a cache, once to fill it and once from it, the verdict
			// is the same.
			cache := resolve.NewCache(resolve.CacheOptions{})
			cv := *v
			cv.Resolver, cv.Cache = cache.Resolver(srv.Addr), cache
			for i := range 2 {
				got, err := cv.Verify(context.Background(), net.ParseIP(ip), helo, tc.mailFrom, msg)
				if err != nil || got.Disposition != verdict.Disposition || got.Summary != verdict.Summary ||
					!bytes.Equal(got.Field, verdict.Field) {
					t.Fatalf("through the cache (%d): Verify = %+v, %v; without: %+v", i+1, got, err, verdict)
				}
			}
			if hits, _ := cache.Stats(); hits == 0 && !tc.hang {
				t.Error("the second check through the cache had no hit")
			}
			if verdict.Disposition != tc.refused {
				t.Fatalf("Verify = %+v, want disposition %v", verdict, tc.refused)
			}
			if tc.refused != Deliver {
				if want := reasons[tc.refused]; !strings.HasPrefix(verdict.Reason, want) || verdict.Message != nil {
					t.Fatalf("Verify = %+v, want reason %q and no message", verdict, want)
				}
				return
			}
			out := verdict.delivered()
			ar := authResults(t, out)
			for _, w := range tc.want {
				if !strings.Contains(ar, w) {
					t.Errorf("Authentication-Results %q lacks %q", ar, w)
				}
			}
			if !bytes.HasSuffix(out, msg) {
				t.Errorf("the message after the new field changed")
			}
			if lineEnding(msg) == "\n" && bytes.Contains(out, []byte("\r\n")) {
				t.Errorf("CRLF added to a bare LF message:\n%q", out)
			}
		})
	}
}

// reasons are the starts of the reasons of the refusals TestVerify makes.
var reasons = map[Disposition]string{
	RejectPolicy: "Rejected by the DMARC policy of ",
	Temporary:    "DMARC check of ",
}

// RFC 7489 section 6.6.1: without exactly one From domain there is nothing
// to evaluate DMARC against; such messages are refused whatever RejectDMARC.
func TestVerifyFromMustNameOneDomain(t *testing.T) {
	srv := world(t)
	tests := []struct {
		name   string
		header []string
		ok     bool
	}{
		{"no From", []string{"To: bob@b.test"}, false},
		{"two From fields", []string{"From: alice@a.test", "From: ceo@bank.test"}, false},
		{"unparsable", []string{"From: <<alice@a.test"}, false},
		{"two domains", []string{"From: alice@a.test, ceo@bank.test"}, false},
		{"empty group", []string{"From: undisclosed-recipients:;"}, false},
		{"address literal", []string{"From: x@[127.0.0.1]"}, false},
		{"two addresses of one domain", []string{"From: alice@a.test, Carol <carol@A.TEST>"}, true},
		{"encoded display name in an unknown charset", []string{"From: =?koi8-r?B?4czJ08E=?= <alice@a.test>"}, true},
		{"folded", []string{"From: Alice\r\n <alice@a.test>"}, true},
	}
	for _, tc := range tests {
		for _, reject := range []bool{true, false} {
			v := &Verifier{Resolver: srv.Resolver(), AuthServID: ourID, RejectDMARC: reject, Timeout: 10 * time.Second}
			msg := message("hi\r\n", append(tc.header, "Subject: hi")...)
			verdict, err := v.Verify(context.Background(), net.ParseIP("127.0.0.1"), "mx.a.test", "alice@a.test", msg)
			refused := err == nil && verdict.Disposition == RejectUnevaluable && verdict.Reason != ""
			if tc.ok && (err != nil || verdict.Disposition != Deliver) || !tc.ok && !refused {
				t.Errorf("%s (RejectDMARC %v): Verify = %+v, %v, want ok %v", tc.name, reject, verdict, err, tc.ok)
			}
		}
	}
}

func TestVerifyStripsOurAuthResults(t *testing.T) {
	srv := world(t)
	msg := message("Hello.\r\n",
		"Authentication-Results: mx.b.test; dkim=pass header.d=bank.test",
		"authentication-results: MX.B.TEST; spf=pass",
		"Authentication-Results:\r\n  mx.b.test;\r\n\tdmarc=pass header.from=bank.test",
		`Authentication-Results: (forged) "mx.b.test."; dmarc=pass`,
		"Authentication-Results : mx.b.test; dmarc=pass",
		"Authentication-Results: mx.b.test\x00; spf=pass",
		"Authentication-Results: mx.b.test\x00.example; dkim=pass header.d=bank.test",
		"Authentication-Results: other.example; spf=pass smtp.mailfrom=x@y.example",
		"Authentication-Results: mx.b.test.example; dkim=pass",
		"From: ceo@bank.test",
		"Subject: urgent",
	)
	v := &Verifier{Resolver: srv.Resolver(), AuthServID: ourID, RejectDMARC: false, Timeout: 10 * time.Second}
	verdict, err := v.Verify(context.Background(), net.ParseIP("127.0.0.1"), "mx.a.test", "x@evil.test", msg)
	if err != nil || verdict.Disposition != Deliver {
		t.Fatal(verdict, err)
	}
	out := verdict.delivered()
	ar := authResults(t, out) // fails unless exactly one claims our id
	if !strings.Contains(ar, "dmarc=fail") {
		t.Errorf("our results %q: want dmarc=fail, the forged passes must not count", ar)
	}
	for _, kept := range []string{
		"Authentication-Results: other.example; spf=pass smtp.mailfrom=x@y.example\r\n",
		"Authentication-Results: mx.b.test.example; dkim=pass\r\n",
		"From: ceo@bank.test\r\nSubject: urgent\r\n\r\nHello.\r\n",
	} {
		if !bytes.Contains(out, []byte(kept)) {
			t.Errorf("lost %q:\n%s", kept, out)
		}
	}
	if n := bytes.Count(bytes.ToLower(out), []byte("authentication-results")); n != 3 {
		t.Errorf("%d Authentication-Results fields, want ours and the two foreign ones:\n%s", n, out)
	}
}

func TestVerifyNeedsAuthServID(t *testing.T) {
	v := &Verifier{}
	if _, err := v.Verify(context.Background(), net.ParseIP("127.0.0.1"), "h.test", "", plainMessage("a@a.test")); err == nil {
		t.Fatal("Verify without AuthServID succeeded")
	}
}

// TestVerifyLookupPanicIsTemporary: a panic while looking up SPF or DMARC
// (here: in the resolver's dialer) must not take the server down.
func TestVerifyLookupPanicIsTemporary(t *testing.T) {
	panicky := &net.Resolver{
		PreferGo: true,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			panic("resolver exploded")
		},
	}
	v := &Verifier{Resolver: panicky, AuthServID: "mx.example.test", RejectDMARC: true, Timeout: 5 * time.Second}
	msg := []byte("From: a@example.org\r\nTo: b@example.test\r\nSubject: x\r\n\r\nhi\r\n")
	verdict, err := v.Verify(context.Background(), net.ParseIP("192.0.2.1"), "mail.example.org", "a@example.org", msg)
	switch {
	case err != nil:
		t.Fatalf("Verify: %v", err)
	case verdict.Disposition == Deliver:
		if !bytes.Contains(verdict.delivered(), []byte("spf=temperror")) {
			t.Fatalf("no temperror recorded:\n%s", verdict.delivered())
		}
	case verdict.Disposition != Temporary:
		t.Fatalf("Verify = %+v, want a temporary failure", verdict)
	}
}

// A field folded over many lines, or a signature naming a field for every
// field of a large header, costs the DKIM library time quadratic in the
// header size before any key is fetched. Such messages get dkim=permerror
// from us without reaching the library.
func TestVerifyKeepsCostlyHeadersFromTheLibrary(t *testing.T) {
	srv := world(t)
	addField := func(m []byte, field string) []byte {
		i := bytes.Index(m, []byte("From: "))
		return append(append(append([]byte{}, m[:i]...), field+"\r\n"...), m[i:]...)
	}
	folded := func(lines int) string { return "X-Long: start" + strings.Repeat("\r\n x", lines-1) }
	// listing returns a message signed by the forger's own key (here: ours)
	// naming n absent fields in h=, above n header fields.
	listing := func(t *testing.T, n int) []byte {
		m := signed(t, "a.test", plainMessage("alice@a.test"))
		m = bytes.Replace(m, []byte("h=From:"), []byte("h="+strings.Repeat("X-Absent:", n)+"From:"), 1)
		return addField(m, strings.Repeat("X: y\r\n", n-1)+"X: y")
	}
	tests := []struct {
		name string
		msg  func(t *testing.T) []byte
		want string
	}{
		{"folded over MaxFieldLines lines", func(t *testing.T) []byte {
			return addField(signed(t, "a.test", plainMessage("alice@a.test")), folded(MaxFieldLines))
		}, "dkim=pass"},
		{"folded over one line more", func(t *testing.T) []byte {
			return addField(signed(t, "a.test", plainMessage("alice@a.test")), folded(MaxFieldLines+1))
		}, `dkim=permerror reason="header too costly to process: a field folded over 1001 lines, more than 1000"`},
		{"header section over MaxHeaderBytes", func(t *testing.T) []byte {
			return addField(signed(t, "a.test", plainMessage("alice@a.test")), "X: "+strings.Repeat("x", MaxHeaderBytes))
		}, `dkim=permerror reason="header too costly to process: header section of`},
		{"h= naming 1000 fields above 1000 fields", func(t *testing.T) []byte { return listing(t, 1000) },
			`dkim=fail reason="signature did not verify`},
		{"h= naming 3000 fields above 3000 fields", func(t *testing.T) []byte { return listing(t, 3000) },
			`dkim=permerror reason="header too costly to process:`},
	}
	v := &Verifier{Resolver: srv.Resolver(), AuthServID: ourID, Timeout: 10 * time.Second}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verdict, err := v.Verify(context.Background(), net.ParseIP("127.0.0.1"), "mx.a.test", "alice@a.test", tc.msg(t))
			if err != nil || verdict.Disposition != Deliver {
				t.Fatal(verdict, err)
			}
			if ar := authResults(t, verdict.delivered()); !strings.Contains(ar, tc.want) {
				t.Errorf("Authentication-Results %q lacks %q", ar, tc.want)
			}
		})
	}
}

// A first line starting with WSP would continue the field we prepend: the
// sender could append results to ours.
func TestVerifyRefusesAContinuationLineFirst(t *testing.T) {
	srv := world(t)
	v := &Verifier{Resolver: srv.Resolver(), AuthServID: ourID, Timeout: 10 * time.Second}
	for _, lead := range []string{" ", "\t"} {
		msg := append([]byte(lead+"; dkim=pass header.d=bank.test\r\n"), plainMessage("ceo@bank.test")...)
		verdict, err := v.Verify(context.Background(), net.ParseIP("127.0.0.1"), "mx.a.test", "x@evil.test", msg)
		if err != nil || verdict.Disposition != RejectMalformed || verdict.Reason != "Message header starts with a continuation line" {
			t.Errorf("Verify(%q...) = %+v, %v, want RejectMalformed", lead, verdict, err)
		}
	}
}

// TestSignAndVerifyKeepCRLF: the SMTP server normalises a message once,
// before Verify or Sign sees it, and relies on both to hand back CRLF-only
// text (see the package comment).
func TestSignAndVerifyKeepCRLF(t *testing.T) {
	srv := world(t)
	v := &Verifier{Resolver: srv.Resolver(), AuthServID: ourID, Timeout: 10 * time.Second}
	s := &Signer{Selector: "mail", Key: key(t), Domains: []string{"a.test"}}
	for name, msg := range map[string][]byte{
		"plain":  plainMessage("alice@a.test"),
		"signed": signed(t, "a.test", plainMessage("alice@a.test")),
		"ours to strip, folded": message("hi\r\n", "Authentication-Results: mx.b.test;\r\n\tdkim=pass",
			"From: Alice\r\n <alice@a.test>", "Subject: hi"),
	} {
		verdict, err := v.Verify(context.Background(), net.ParseIP("127.0.0.1"), "mx.a.test", "alice@a.test", msg)
		if err != nil || verdict.Disposition != Deliver || !onlyCRLF(verdict.delivered()) {
			t.Errorf("%s: Verify = %+v, %v: want a CRLF-only message", name, verdict, err)
		}
		out, err := s.Sign("a.test", msg)
		if err != nil || !onlyCRLF(out) {
			t.Errorf("%s: Sign = %q, %v: want a CRLF-only message", name, out, err)
		}
	}
}

func onlyCRLF(b []byte) bool {
	for i, c := range b {
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') || c == '\n' && (i == 0 || b[i-1] != '\r') {
			return false
		}
	}
	return true
}

// delivered is the message as the caller stores it: Field, then Message.
func (v Verdict) delivered() []byte {
	if v.Message == nil {
		return nil
	}
	return append(append([]byte(nil), v.Field...), v.Message...)
}

// Verdict.Authenticated names the domains SPF and DKIM passed for, which
// the MX's local-sender rule and greylisting rely on; CheckSPF gives the
// SPF result alone, as Verify computes it.
func TestVerifyAuthenticatedAndCheckSPF(t *testing.T) {
	srv := world(t)
	v := &Verifier{Resolver: srv.Resolver(), AuthServID: ourID, RejectDMARC: false, Timeout: 10 * time.Second}
	ctx := context.Background()
	msg := signed(t, "a.test", plainMessage("alice@a.test"))
	for _, c := range []struct {
		ip, mailFrom string
		msg          []byte
		want         []string
		spf          string
	}{
		{"127.0.0.1", "alice@a.test", msg, []string{"a.test"}, "pass"},                                         // both, one domain
		{"192.0.2.9", "alice@a.test", msg, []string{"a.test"}, "fail"},                                         // DKIM only
		{"127.0.0.1", "alice@a.test", plainMessage("alice@a.test"), []string{"a.test"}, "pass"},                // SPF only
		{"192.0.2.9", "alice@a.test", bytes.Replace(msg, []byte("tomorrow"), []byte("never"), 1), nil, "fail"}, // neither
	} {
		got, err := v.Verify(ctx, net.ParseIP(c.ip), "mx.a.test", c.mailFrom, c.msg)
		if err != nil || !slices.Equal(got.Authenticated, c.want) {
			t.Errorf("Verify from %s: Authenticated = %q, %v; want %q", c.ip, got.Authenticated, err, c.want)
		}
		if spf := v.CheckSPF(ctx, net.ParseIP(c.ip), "mx.a.test", c.mailFrom); spf != c.spf {
			t.Errorf("CheckSPF from %s = %q, want %q", c.ip, spf, c.spf)
		}
	}
}

// wantAuthResults verifies a plain message from 127.0.0.1 (HELO mx.a.test)
// with MAIL FROM from, and fails t unless our Authentication-Results
// holds want.
func wantAuthResults(t *testing.T, v *Verifier, from, want string) {
	t.Helper()
	verdict, err := v.Verify(context.Background(), net.ParseIP("127.0.0.1"), "mx.a.test", from, plainMessage(from))
	if err != nil {
		t.Fatal(err)
	}
	if ar := authResults(t, verdict.delivered()); !strings.Contains(ar, want) {
		t.Errorf("MAIL FROM %s: Authentication-Results %q lacks %q", from, ar, want)
	}
}

// fakeTXT is a TXTCache holding answers for some names.
type fakeTXT map[string][]string

func (f fakeTXT) LookupTXT(name string) ([]string, bool, error) {
	txts, ok := f[name]
	return txts, ok, nil
}

// A TXT answer the cache holds is taken from it, not asked of the DNS; a
// name it does not hold is asked. evil.test publishes "+all", which the
// cache here contradicts; mail.strict.test is left to the DNS.
func TestVerify_TakesTXTAnswersFromTheCache(t *testing.T) {
	srv := world(t)
	v := &Verifier{Resolver: srv.Resolver(), Cache: fakeTXT{"evil.test.": {"v=spf1 -all"}}, AuthServID: ourID, Timeout: 10 * time.Second}
	for _, tc := range []struct{ from, want string }{
		{"forger@evil.test", "spf=fail"},
		{"alice@mail.strict.test", "spf=pass"},
	} {
		wantAuthResults(t, v, tc.from, tc.want)
	}
}

// A check the cache answers completely is taken from it alone; one that
// needs an answer it does not hold (an A record for SPF's "a", a DMARC
// record) is made again on the network, whose answer is the one recorded:
// never the cache-only attempt's temperror.
func TestVerify_ChecksTheCacheCannotCompleteGoToTheNetwork(t *testing.T) {
	srv := world(t)
	cache := fakeTXT{
		"evil.test.":        {"v=spf1 -all"}, // the DNS says +all: proof the cache was used
		"_dmarc.evil.test.": {},
		"mx.a.test.":        {"v=spf1 a -all"}, // needs mx.a.test's A record
		"bank.test.":        {"v=spf1 ip4:192.0.2.1 -all"},
	}
	v := &Verifier{Resolver: srv.Resolver(), Cache: cache, AuthServID: ourID, Timeout: 10 * time.Second}
	for _, tc := range []struct{ from, want string }{
		{"forger@evil.test", "spf=fail smtp.mailfrom=forger@evil.test; dkim=none; dmarc=none"},
		{"alice@mx.a.test", "spf=pass smtp.mailfrom=alice@mx.a.test"},
		// SPF from the cache, the DMARC record (p=reject) from the DNS.
		{"boss@bank.test", "spf=fail smtp.mailfrom=boss@bank.test; dkim=none; dmarc=fail"},
	} {
		wantAuthResults(t, v, tc.from, tc.want)
	}
}

// With every answer in the cache, Verify needs no DNS at all: a resolver
// that cannot reach any server changes nothing.
func TestVerify_AllAnswersInTheCacheNeedNoDNS(t *testing.T) {
	unreachable := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS in this test")
	}}
	cache := fakeTXT{"evil.test.": {"v=spf1 -all"}, "_dmarc.evil.test.": {}}
	v := &Verifier{Resolver: unreachable, Cache: cache, AuthServID: ourID, Timeout: 10 * time.Second}
	wantAuthResults(t, v, "forger@evil.test", "spf=fail smtp.mailfrom=forger@evil.test; dkim=none; dmarc=none")
}

func TestFromCache(t *testing.T) {
	cache := fakeTXT{"held.test.": {"v=spf1 -all"}}
	txt := func(name string) func(resolver) error {
		return func(r resolver) error { _, err := r.LookupTXT(context.Background(), name); return err }
	}
	mx := func(r resolver) error { _, err := r.LookupMX(context.Background(), "held.test"); return err }
	for _, tc := range []struct {
		name     string
		cache    TXTCache
		check    func(resolver) error
		complete bool
	}{
		{"TXT the cache holds", cache, txt("held.test"), true},
		{"TXT it does not", cache, txt("other.test"), false},
		{"MX, never cached here", cache, mx, false},
		{"no cache", nil, txt("held.test"), false},
	} {
		_, complete := fromCache(resolver{r: net.DefaultResolver, cache: tc.cache}, tc.check)
		if complete != tc.complete {
			t.Errorf("%s: complete = %v, want %v", tc.name, complete, tc.complete)
		}
	}
}

// BenchmarkVerify_FromCache is a message from a sender domain whose SPF
// and DMARC answers are cached, the usual case for a busy domain.
func BenchmarkVerify_FromCache(b *testing.B) {
	cache := fakeTXT{"evil.test.": {"v=spf1 ip4:127.0.0.1 -all"}, "_dmarc.evil.test.": {}}
	v := &Verifier{Resolver: net.DefaultResolver, Cache: cache, AuthServID: ourID, Timeout: 10 * time.Second}
	msg := plainMessage("alice@evil.test")
	ip := net.ParseIP("127.0.0.1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(context.Background(), ip, "mx.evil.test", "alice@evil.test", msg); err != nil {
			b.Fatal(err)
		}
	}
}
