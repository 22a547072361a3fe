package mta

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"alice@example.org", "ALICE@Example.ORG", "a@[127.0.0.1]", "a@[IPv6:::1]",
		"user%other@example.org", "a@b@c", "@x", "x@", "a@-b.org", "a@b..org",
		"ünï@例え.jp", "a\r\n@x.org", strings.Repeat("a", 70) + "@x.org",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAddress(s)
		if err != nil {
			return
		}
		if a.String() != s[:len(a.Local)]+"@"+strings.ToLower(s[len(a.Local)+1:]) {
			t.Fatalf("%q -> %+v", s, a)
		}
		if a.Domain != strings.ToLower(a.Domain) || len(s) > maxPath-2 || len(a.Local) > maxLocalPart ||
			strings.ContainsAny(a.Domain, "@ \r\n") || hasControl(s) {
			t.Fatalf("accepted %q as %+v", s, a)
		}
		if isDotAtom(a.Local) && strings.ContainsAny(a.Local, "@\" ()<>[]:;,\\") {
			t.Fatalf("%q is no dot-atom", a.Local)
		}
	})
}

func FuzzCheckFrom(f *testing.F) {
	for _, s := range []string{
		"From: alice@example.org\r\nSubject: x\r\n\r\nbody",
		"From: \"Al\" <Alice@Example.org>\r\n\r\n",
		"From: a@x, alice@example.org\r\n\r\n",
		"From: =?utf-8?b?w6Q=?= <alice@example.org>\r\nFrom: x@y\r\n\r\n",
		"From: g: alice@example.org;\r\n\r\n",
		"Subject: folded\r\n continued\r\n\r\n",
		"no header\r\n\r\n",
		" leading continuation\r\n",
		"From: alice@example.org\r\nSender: bob@example.org\r\n\r\n",
		"Sender: <alice@example.org>\r\nsender: x@y\r\n\r\n",
		"From:\r\n \r\n\t<alice@example.org>\r\nX: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		fields, err := parseHeader(msg)
		if err != nil {
			return
		}
		for _, fl := range fields {
			if fl.Name == "" || strings.ContainsAny(fl.Name, ": \t\r\n") {
				t.Fatalf("field name %q", fl.Name)
			}
		}
		// Asking for some fields gives those of the full parse, in order.
		some, err := parseHeader(msg, "from", "SENDER")
		if err != nil {
			t.Fatalf("filtered parse failed: %v", err)
		}
		var want []headerField
		for _, fl := range fields {
			if strings.EqualFold(fl.Name, "From") || strings.EqualFold(fl.Name, "Sender") {
				want = append(want, fl)
			}
		}
		if fmt.Sprint(some) != fmt.Sprint(want) {
			t.Fatalf("filtered %q, want %q", some, want)
		}
		missing, err := checkFrom(fields, "alice@example.org", nil)
		if err == nil {
			for _, name := range []string{"From", "Sender"} {
				found := fieldsNamed(fields, name)
				if len(found) == 0 {
					continue
				}
				list, perr := addrParser.ParseList(found[0].Value)
				if len(found) != 1 || perr != nil || len(list) == 0 {
					t.Fatalf("accepted %s: %q", name, found)
				}
				for _, a := range list {
					if !sameAddress(a.Address, "alice@example.org") {
						t.Fatalf("accepted %s: %q", name, a.Address)
					}
				}
			}
		}
		hdr := submissionHeaders(fields, missing, "alice@example.org", testHost, testNow)
		if !onlyCRLF(hdr) {
			t.Fatalf("added header %q", hdr)
		}
	})
}

func FuzzReceived(f *testing.F) {
	f.Add("client.test", "alice@example.org")
	f.Add("a(b);c\r\nX-Evil: 1", "x>y<z")
	f.Fuzz(func(t *testing.T, helo, rcpt string) {
		h := received(trace{Helo: helo, Hostname: testHost, ID: "id", Rcpts: []string{rcpt}, Time: testNow})
		if !onlyCRLF(h) || bytes.Count(h, []byte("\r\n")) != 3 || bytes.Count(h, []byte(";")) != 1 {
			t.Fatalf("%q", h)
		}
		if _, err := parseHeader(append(h, "\r\n"...)); err != nil {
			t.Fatalf("%q: %v", h, err)
		}
	})
}

// mailboxOf is env.mailbox for use inside a fuzz function, which must not
// call the *testing.F the env was built with.
func mailboxOf(t *testing.T, e *env, addr string) [][]byte {
	saved := e.t
	e.t = t
	defer func() { e.t = saved }()
	return e.mailbox(addr)
}

// errorDetector fails the fuzz run when go-smtp recovers from a panic in
// this package's code. (go-smtp v0.25.1 itself panics, and recovers, when a
// client hangs up just as a BDAT chunk starts: its goroutine then finds no
// session. That is upstream's and harmless, so only our frames count.)
type errorDetector struct{ seen atomic.Value }

func (d *errorDetector) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("panic")) && bytes.Contains(p, []byte("minimail/mta.")) {
		d.seen.Store(string(p))
	}
	return len(p), nil
}

// FuzzSession feeds raw bytes to a live server: the first byte picks the
// MX (even) or submission (odd, insecure AUTH allowed).
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a\r\nMAIL FROM:<b@c.test>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nBDAT 3 LAST\r\nabcQUIT\r\n",
		"EHLO a\r\nMAIL FROM:<b@c.test>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nx\n.\nMAIL FROM:<e@x>\r\n\r\n.\r\n",
		"EHLO a\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGNvcnJlY3QgaG9yc2U=\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<c@remote.test>\r\nDATA\r\nFrom: alice@example.org\r\n\r\nx\r\n.\r\n",
		"EHLO a\r\nAUTH LOGIN\r\nYWxpY2VAZXhhbXBsZS5vcmc=\r\nY29ycmVjdCBob3JzZQ==\r\nRSET\r\nNOOP\r\nVRFY x\r\nSTARTTLS\r\n",
		"RCPT TO:<x>\r\nDATA\r\nMAIL FROM:<\"a@b\"@example.org> SIZE=1 BODY=8BITMIME SMTPUTF8\r\n",
		// RFC 3461 parameters, good and bad, on both listeners.
		"EHLO a\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGNvcnJlY3QgaG9yc2U=\r\nMAIL FROM:<alice@example.org> RET=FULL ENVID=Q+2B1\r\nRCPT TO:<c@remote.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c+2Bx@remote.test\r\nRCPT TO:<bob@example.org> NOTIFY=SUCCESS\r\nRCPT TO:<d@remote.test> NOTIFY=SUCCESS,NEVER ORCPT=utf-8;d\\x{E9}@remote.test\r\nDATA\r\nFrom: alice@example.org\r\n\r\nx\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<b@c.test> RET=HDRS ENVID=a+3d\r\nMAIL FROM:<b@c.test>\r\nRCPT TO:<alice@example.org> ORCPT=rfc822;+\r\n",
	} {
		f.Add(byte(0), []byte(s))
		f.Add(byte(1), []byte(s))
	}
	det := &errorDetector{}
	e := newEnv(f, func(o *Options, _ *Local) {
		o.AllowInsecureAuth = true
		o.MaxMessageBytes = 64 << 10
		o.CommandTimeout = 2 * time.Second
		o.Logger = slog.New(slog.NewTextHandler(det, &slog.HandlerOptions{Level: slog.LevelError}))
	})
	f.Fuzz(func(t *testing.T, which byte, input []byte) {
		addr := e.mxAddr
		if which&1 == 1 {
			addr = e.subAddr
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(input)
			c.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(io.Discard, c) // until the server hangs up
		if msg := det.seen.Load(); msg != nil {
			t.Fatalf("server error: %s", msg)
		}
		for _, u := range []string{"alice@example.org", "bob@example.org"} {
			for _, m := range mailboxOf(t, e, u) {
				if !onlyCRLF(m) {
					t.Fatalf("stored non-CRLF message %q", m)
				}
			}
		}
		for _, q := range e.queue.entries() {
			if !onlyCRLF(q.Msg) {
				t.Fatalf("queued non-CRLF message %q", q.Msg)
			}
		}
	})
}
