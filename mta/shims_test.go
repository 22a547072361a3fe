package mta

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"minimail/mta/tlstest"
)

// TestGoSMTPStillNeedsTheShims pins every go-smtp behaviour that shims.go
// corrects, against a bare go-smtp server. When an upgrade makes one of
// these fail, go-smtp changed: the matching shim may be obsolete (or may
// no longer match what it was written for), so look at it before going on.
func TestGoSMTPStillNeedsTheShims(t *testing.T) {
	serverTLS, clientTLS := tlstest.Pair(t, testHost)
	bare := func(readTimeout time.Duration) string {
		e := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return nullSession{}, nil }))
		e.Domain = testHost
		e.TLSConfig = serverTLS
		e.MaxMessageBytes = 1000
		e.ReadTimeout = readTimeout
		e.AllowInsecureAuth = true
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go e.Serve(l)
		t.Cleanup(func() { e.Close() })
		return l.Addr().String()
	}

	t.Run("reply texts", func(t *testing.T) {
		cl := dial(t, bare(0))
		for _, c := range []struct{ send, want string }{
			{"MAIL FROM:<a@b.test>", "502 5.5.1 Please introduce yourself first."},
			{"FOOBAR", "501 5.5.2 Bad command"},
			{"HELO client.test", "250 2.0.0 Hello client.test"},
			{"FOOB", unrecognizedPrefix + "FOOB command unrecognized"},
			{"EHLO client.test", ""},
			{"RCPT TO:<a@b.test>", "502 5.5.1 Missing MAIL FROM command."},
			{"DATA", "502 5.5.1 Missing RCPT TO command."},
			{"MAIL FROM:<a@b.test> FOO=BAR", "500 5.5.4 Unknown MAIL FROM argument"},
			{"MAIL FROM:<a@b.test> RET=HDRS", "504 5.5.4 RET is not implemented"},
			{"MAIL FROM:<a@b.test> ENVID=x", "504 5.5.4 ENVID is not implemented"},
			{"AUTH PLAIN %%%", "454 4.7.0 Invalid base64 data"},
			{"MAIL FROM:<a@b.test>", "250 "},
			{"RCPT TO:<c@d.test> FOO=BAR", "500 5.5.4 Unknown RCPT TO argument"},
			{"RCPT TO:<c@d.test> NOTIFY=NEVER", "504 5.5.4 NOTIFY is not implemented"},
			{"RCPT TO:<c@d.test> ORCPT=rfc822;c@d.test", "504 5.5.4 ORCPT is not implemented"},
			{"STARTTLS", string(startTLSReady)},
		} {
			if c.want == "" {
				lines := cl.cmd(c.send, "250 ")
				if !contains(lines, "250-SIZE 1000") && !contains(lines, "250 SIZE 1000") {
					t.Errorf("go-smtp no longer advertises SIZE as MaxMessageBytes: %q", lines)
				}
				if lines[0] != "250-Hello client.test" {
					t.Errorf("go-smtp's EHLO reply now starts %q", lines[0])
				}
				continue
			}
			lines := cl.cmd(c.send, c.want)
			if last := lines[len(lines)-1]; last != c.want && c.want != "250 " {
				t.Errorf("%s: go-smtp now says %q, the shim expects %q", c.send, last, c.want)
			}
		}
		tc := tls.Client(cl.c, clientTLS)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		// After its own STARTTLS go-smtp holds a *tls.Conn of its own over
		// the connection it was given: nothing above the TLS layer could be
		// rewritten, hence engineConn.startTLS.
		tcl := newClient(t, tc)
		tcl.cmd("MAIL FROM:<a@b.test>", "502 5.5.1 Please introduce yourself first.")
	})
	t.Run("a command line cut by the read timeout is run", func(t *testing.T) {
		// bufio.Reader.ReadLine returns the partial line with a nil error
		// at a timeout: go-smtp runs "NOOP zz" (hence trackedConn.Read).
		cl := dial(t, bare(300*time.Millisecond))
		cl.write("NOOP zz")
		cl.expect("250 2.0.0")
	})
}

type nullSession struct{}

func (nullSession) Mail(string, *smtp.MailOptions) error { return nil }
func (nullSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (nullSession) Data(io.Reader) error                 { return nil }
func (nullSession) Reset()                               {}
func (nullSession) Logout() error                        { return nil }
func (nullSession) AuthMechanisms() []string             { return []string{sasl.Plain} }
func (nullSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(string, string, string) error { return nil }), nil
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func TestReplyShims_Rewrite(t *testing.T) {
	r := newReplyShims(100, "mx.test")
	for _, c := range []struct {
		in, out  string
		refusals int
	}{
		{"250-SIZE 101\r\n", "250-SIZE 100\r\n", 0},
		{"250 SIZE 101\r\n", "250 SIZE 100\r\n", 0},
		{"250-SIZE 1010\r\n", "250-SIZE 1010\r\n", 0},
		{"250 2.0.0 OK\r\n", "250 2.0.0 OK\r\n", 0},
		{"502 5.5.1 Missing MAIL FROM command.\r\n", "503 5.5.1 Missing MAIL FROM command.\r\n", 1},
		{"502 5.5.1 EXPN command not implemented\r\n", "502 5.5.1 EXPN command not implemented\r\n", 1},
		{"550-first\r\n550 5.1.1 last\r\n", "550-first\r\n550 5.1.1 last\r\n", 1},
		{"250 ok\r\n501 5.5.2 Bad command\r\n", "250 ok\r\n500 5.5.1 command not recognized\r\n", 1},
		{"421 4.4.2 bye\r\n", "421 4.4.2 bye\r\n", 0},
		{"250-Hello client.test\r\n", "250-mx.test Hello client.test\r\n", 0},
		{"250-Hello a\rb\x01c\r\n", "250-mx.test Hello a?b?c\r\n", 0},
		{"250 2.0.0 Hello client.test\r\n", "250 mx.test Hello client.test\r\n", 0},
		{"454 4.7.0 Invalid base64 data\r\n", "501 5.5.2 invalid base64 data\r\n", 1},
		{"452 4.3.1 full\r\n", "452 4.3.1 full\r\n", 1},
		{"", "", 0},
	} {
		out, n := r.rewrite([]byte(c.in))
		if string(out) != c.out || n != c.refusals {
			t.Errorf("rewrite(%q) = %q, %d; want %q, %d", c.in, out, n, c.out, c.refusals)
		}
	}
}
