package mta

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAttack_MessageShapes sends the message shapes that break parsers:
// sizes at the edges, degenerate headers, huge line counts.
func TestAttack_MessageShapes(t *testing.T) {
	e := newEnv(t, nil)
	mx := func(t *testing.T) *client {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		return cl
	}
	last := func(t *testing.T, addr string) []byte {
		t.Helper()
		m := e.mailbox(addr)
		if len(m) == 0 {
			t.Fatalf("%s has no mail", addr)
		}
		return m[len(m)-1]
	}
	t.Run("empty message is stored with its trace fields", func(t *testing.T) {
		cl := mx(t)
		if got := cl.send("bob@other.test", []string{"alice@example.org"}, ""); !strings.HasPrefix(got, "250 ") {
			t.Fatal(got)
		}
		if m := last(t, "alice@example.org"); !bytes.HasPrefix(m, []byte("Return-Path: <bob@other.test>\r\n")) || !onlyCRLF(m) {
			t.Fatalf("stored %q", m)
		}
	})
	t.Run("header-only message without blank line", func(t *testing.T) {
		cl := mx(t)
		cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: no body\r\n")
		if m := last(t, "alice@example.org"); !bytes.HasSuffix(m, []byte("\r\nSubject: no body\r\n")) {
			t.Fatalf("stored %q", m)
		}
	})
	t.Run("submission of an empty message gets From, Date and Message-ID", func(t *testing.T) {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		cl.send("alice@example.org", []string{"bob@example.org"}, "")
		m := last(t, "bob@example.org")
		for _, f := range []string{"\r\nFrom: <alice@example.org>\r\n", "\r\nDate: ", "\r\nMessage-ID: <"} {
			if !bytes.Contains(m, []byte(f)) {
				t.Fatalf("no %q in %q", f, m)
			}
		}
	})
	t.Run("BDAT message without final CRLF gets one", func(t *testing.T) {
		cl := mx(t)
		cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
		cl.cmd("RCPT TO:<alice@example.org>", "250 ")
		msg := "Subject: x\r\n\r\nno newline"
		cl.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
		cl.expect("250 2.0.0")
		if m := last(t, "alice@example.org"); !bytes.HasSuffix(m, []byte("\r\n\r\nno newline\r\n")) {
			t.Fatalf("stored %q", m)
		}
	})
	t.Run("NUL and 8-bit bytes in the body are kept byte-exact", func(t *testing.T) {
		cl := mx(t)
		body := "nul\x00here\r\n\xff\xfe\x80\r\n\x00\r\n"
		cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: bin\r\n\r\n"+body)
		if m := last(t, "alice@example.org"); string(bodyOf(m)) != body {
			t.Fatalf("stored %q", m)
		}
	})
	t.Run("a million tiny lines are kept byte-exact", func(t *testing.T) {
		cl := mx(t)
		body := strings.Repeat("a\r\n", 1_000_000)
		cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: lines\r\n\r\n"+body)
		if m := last(t, "alice@example.org"); string(bodyOf(m)) != body {
			t.Fatalf("stored %d bytes of body, want %d", len(bodyOf(m)), len(body))
		}
	})
	t.Run("a million folded header lines are refused at once", func(t *testing.T) {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		// Unfolding by string appends was quadratic: hours of CPU for
		// these 4 MB. The limits refuse them before anything unfolds.
		cl.c.SetDeadline(time.Now().Add(15 * time.Second))
		got := cl.send("alice@example.org", []string{"bob@example.org"},
			"From: alice@example.org\r\nX-Fold: x\r\n"+strings.Repeat(" a\r\n", 1_000_000)+"\r\nbody\r\n")
		if !strings.HasPrefix(got, "552 5.3.4") {
			t.Fatalf("got %q", got)
		}
	})
}

// TestAttack_SizeLimit probes max_message_bytes from every side: a message
// of exactly the limit is accepted and one byte more is not, whether it
// comes by DATA or BDAT or is announced with SIZE= (RFC 1870).
func TestAttack_SizeLimit(t *testing.T) {
	const limit = 1000
	e := newEnv(t, func(o *Options, _ *Local) { o.MaxMessageBytes = limit })
	sized := func(n int) string {
		const head = "Subject: size\r\n\r\n"
		return head + strings.Repeat("s", n-len(head)-2) + "\r\n"
	}
	session := func(t *testing.T, mailParams string) *client {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		cl.cmd("MAIL FROM:<bob@other.test>"+mailParams, "250 ")
		cl.cmd("RCPT TO:<alice@example.org>", "250 ")
		return cl
	}
	stored := func(t *testing.T, want int) {
		t.Helper()
		if n := len(e.mailbox("alice@example.org")); n != want {
			t.Fatalf("alice has %d messages, want %d", n, want)
		}
	}
	for _, tc := range []struct {
		name, params, want string
		size               int
		bdat               []int // chunk sizes; nil means DATA
	}{
		{"DATA of exactly the limit is accepted", "", "250 2.0.0", limit, nil},
		{"DATA one byte over is refused", "", "552 5.3.4", limit + 1, nil},
		{"BDAT of exactly the limit is accepted", "", "250 2.0.0", limit, []int{limit}},
		{"BDAT one byte over is refused", "", "552 5.3.4", limit + 1, []int{limit + 1}},
		{"BDAT chunks adding up to one byte over are refused", "", "552 5.3.4", limit + 1, []int{600, limit + 1 - 600}},
		{"BDAT chunks adding up to the limit are accepted", "", "250 2.0.0", limit, []int{1, limit - 2, 1}},
		{"SIZE= of exactly the limit, then the message", fmt.Sprintf(" SIZE=%d", limit), "250 2.0.0", limit, nil},
		{"SIZE= understating the size does not lift the limit", " SIZE=10", "552 5.3.4", limit + 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.mailbox("alice@example.org"))
			cl := session(t, tc.params)
			msg := sized(tc.size)
			if tc.bdat == nil {
				cl.cmd("DATA", "354 ")
				cl.write(strings.ReplaceAll(msg, "\r\n.", "\r\n..") + ".\r\n")
			} else {
				for i, n := range tc.bdat {
					if i == len(tc.bdat)-1 {
						cl.write(fmt.Sprintf("BDAT %d LAST\r\n%s", n, msg[:n]))
						break
					}
					cl.write(fmt.Sprintf("BDAT %d\r\n%s", n, msg[:n]))
					msg = msg[n:]
					cl.expect("250 ")
				}
			}
			cl.expect(tc.want)
			want := before
			if strings.HasPrefix(tc.want, "250") {
				want++
			}
			stored(t, want)
			// The session goes on after a refusal.
			cl.cmd("RSET", "250 ")
			if got := cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: ok\r\n\r\nok\r\n"); !strings.HasPrefix(got, "250 ") {
				t.Fatalf("after %s: %s", tc.want, got)
			}
		})
	}
	t.Run("SIZE= over the limit is refused at MAIL", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		cl.cmd(fmt.Sprintf("MAIL FROM:<bob@other.test> SIZE=%d", limit+1), "552 5.3.4")
		cl.cmd(fmt.Sprintf("MAIL FROM:<bob@other.test> SIZE=%d", limit), "250 ")
	})
	t.Run("SIZE= that is no number is a syntax error", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		for _, v := range []string{"abc", "-1", "1e3", "", "99999999999999999999999"} {
			cl.cmd("MAIL FROM:<bob@other.test> SIZE="+v, "501 5.5.4")
		}
	})
}

// bodyOf returns what follows the first empty line of a stored message.
func bodyOf(msg []byte) []byte { return body(msg) }

// TestAttack_ChunkingSmuggling sends the smuggling patterns through BDAT
// (RFC 3030), where chunks are raw and a chunk may end in the middle of
// CRLF.CRLF: nothing in a chunk is ever read as a command, the stored and
// queued copies are CRLF-only, and once dot-stuffed for sending, the copy
// has exactly one end of data.
func TestAttack_ChunkingSmuggling(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.AllowInsecureAuth = true })
	chunks := func(cl *client, parts ...string) {
		for i, p := range parts {
			if i == len(parts)-1 {
				cl.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(p), p))
				return
			}
			cl.write(fmt.Sprintf("BDAT %d\r\n%s", len(p), p))
			cl.expect("250 2.0.0")
		}
	}
	splits := map[string][]string{
		"end of data split after CR":      {"Subject: a\r\n\r\nfirst\r\n.\r", "\n" + smuggled + "last\r\n"},
		"end of data split after the dot": {"Subject: a\r\n\r\nfirst\r\n.", "\r\n" + smuggled + "last\r\n"},
		"end of data split before CRLF":   {"Subject: a\r\n\r\nfirst", "\r\n.\r\n" + smuggled + "last\r\n"},
		"CR and LF in separate chunks":    {"Subject: a\r", "\n\r", "\nfirst\r\n.\r", "\n" + smuggled + "last\r\n"},
	}
	for _, v := range smugglingVariants {
		splits["bare variant "+fmt.Sprintf("%q", v)] = []string{"Subject: a\r\n\r\nfirst" + v[:1], v[1:] + smuggled + "last\r\n"}
	}
	for name, parts := range splits {
		t.Run("MX: "+name, func(t *testing.T) {
			before := len(e.mailbox("alice@example.org"))
			cl := dial(t, e.mxAddr)
			cl.cmd("EHLO evil.test", "250 ")
			cl.cmd("MAIL FROM:<evil@other.test>", "250 ")
			cl.cmd("RCPT TO:<alice@example.org>", "250 ")
			chunks(cl, parts...)
			cl.expect("250 2.0.0")
			cl.cmd("QUIT", "221 ") // a smuggled command's reply would come first
			if m := e.mailbox("bob@example.org"); len(m) != 0 {
				t.Fatalf("smuggled message delivered: %q", m)
			}
			m := e.mailbox("alice@example.org")
			if len(m) != before+1 {
				t.Fatalf("stored %d", len(m)-before)
			}
			if got := m[len(m)-1]; !onlyCRLF(got) || !bytes.Contains(got, []byte("wire money\r\nlast\r\n")) {
				t.Fatalf("stored %q", got)
			}
		})
		t.Run("submission: "+name, func(t *testing.T) {
			before := len(e.queue.entries())
			cl := dial(t, e.subAddr)
			cl.login("alice@example.org")
			cl.cmd("MAIL FROM:<alice@example.org>", "250 ")
			cl.cmd("RCPT TO:<carol@remote.test>", "250 ")
			parts := append([]string{"From: alice@example.org\r\n"}, parts...)
			chunks(cl, parts...)
			cl.expect("250 2.0.0")
			q := e.queue.entries()
			if len(q) != before+1 {
				t.Fatalf("queued %d", len(q)-before)
			}
			msg := q[len(q)-1].Msg
			if !onlyCRLF(msg) {
				t.Fatalf("queued copy has bare CR or LF: %q", msg)
			}
			var wire bytes.Buffer
			w := textproto.NewWriter(bufio.NewWriter(&wire)).DotWriter()
			w.Write(msg)
			w.Close()
			if end := strings.Index(wire.String(), "\r\n.\r\n"); end != wire.Len()-5 {
				t.Fatalf("end of data at %d of %d in %q", end, wire.Len(), wire.String())
			}
		})
	}
	for _, tail := range []string{".", "\r\n.", "\r\n.\r", "\n.", "\r\n..", ""} {
		// Exim's CVE-2017-16944: a BDAT message ending in a dot looped.
		t.Run(fmt.Sprintf("message ending in %q", tail), func(t *testing.T) {
			before := len(e.mailbox("alice@example.org"))
			cl := dial(t, e.mxAddr)
			cl.cmd("EHLO client.test", "250 ")
			cl.cmd("MAIL FROM:<x@other.test>", "250 ")
			cl.cmd("RCPT TO:<alice@example.org>", "250 ")
			chunks(cl, "Subject: dot\r\n\r\nbody"+tail, "")
			cl.expect("250 2.0.0")
			m := e.mailbox("alice@example.org")
			if len(m) != before+1 || !onlyCRLF(m[len(m)-1]) || !bytes.HasSuffix(m[len(m)-1], []byte("\r\n")) {
				t.Fatalf("stored %q", m[before:])
			}
		})
	}
	t.Run("a refused BDAT chunk is discarded, not read as commands", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO evil.test", "250 ")
		chunk := "MAIL FROM:<evil@other.test>\r\nRCPT TO:<bob@example.org>\r\n"
		cl.write(fmt.Sprintf("BDAT %d\r\n%s", len(chunk), chunk))
		cl.expect("503 5.5.1")
		cl.cmd("NOOP", "250 2.0.0") // not the reply to a smuggled MAIL
		cl.cmd("RCPT TO:<bob@example.org>", "503 5.5.1")
	})
	t.Run("DATA inside a BDAT transfer is refused", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO evil.test", "250 ")
		cl.cmd("MAIL FROM:<evil@other.test>", "250 ")
		cl.cmd("RCPT TO:<alice@example.org>", "250 ")
		chunks(cl, "Subject: a\r\n", "")
		cl.expect("250 2.0.0")
		cl.cmd("MAIL FROM:<evil@other.test>", "250 ")
		cl.cmd("RCPT TO:<alice@example.org>", "250 ")
		cl.write("BDAT 3\r\nabc")
		cl.expect("250 2.0.0")
		cl.cmd("DATA", "503 5.5.1")
		cl.cmd("MAIL FROM:<evil@other.test>", "503 5.5.1")
		cl.cmd("RSET", "250 ")
	})
	t.Run("malformed BDAT sizes", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO evil.test", "250 ")
		cl.cmd("MAIL FROM:<evil@other.test>", "250 ")
		cl.cmd("RCPT TO:<alice@example.org>", "250 ")
		for _, arg := range []string{"-1", "1x", "99999999999", "1 LAST extra", "1 FIRST"} {
			cl.cmd("BDAT "+arg, "501 5.5.")
		}
		// go-smtp cannot tell "BDAT " from a mangled verb: 500.
		cl.cmd("BDAT ", "500 5.5.1")
	})
}

// TestAttack_Recipients: the recipient limit is exact, and a mailbox named
// twice, in any spelling, gets one copy.
func TestAttack_Recipients(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.MaxRecipients = 3 })
	t.Run("exactly max recipients, then 452", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		cl.cmd("MAIL FROM:<x@other.test>", "250 ")
		cl.cmd("RCPT TO:<alice@example.org>", "250 ")
		cl.cmd("RCPT TO:<bob@example.org>", "250 ")
		cl.cmd("RCPT TO:<nobody@example.org>", "550 5.1.1") // refused ones do not count
		cl.cmd("RCPT TO:<Alice@Example.org>", "250 ")
		cl.cmd("RCPT TO:<bob@example.org>", "452 4.5.3")
		cl.cmd("DATA", "354 ")
		cl.write("Subject: dup\r\n\r\nx\r\n.\r\n")
		cl.expect("250 ")
		for _, u := range []string{"alice@example.org", "bob@example.org"} {
			if n := len(e.mailbox(u)); n != 1 {
				t.Fatalf("%s has %d copies", u, n)
			}
		}
	})
	t.Run("duplicate remote recipients are queued once", func(t *testing.T) {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		cl.send("alice@example.org", []string{"carol@remote.test", "carol@REMOTE.test", "@relay.test:carol@remote.test"}, "From: alice@example.org\r\n\r\nx\r\n")
		if q := e.queue.entries(); len(q) != 1 || len(q[0].Rcpts) != 1 {
			t.Fatalf("queued %+v", q)
		}
	})
}

// TestAttack_FailuresAreTemporary: whatever breaks below the session (a
// panicking hook, a store that fails for some recipients only) costs the
// message a 451 and the connection nothing; the server keeps serving.
func TestAttack_FailuresAreTemporary(t *testing.T) {
	var fail *failingLocal
	var panicVerify, panicSign atomic.Bool
	logs := &syncBuffer{}
	e := newEnv(t, func(o *Options, l *Local) {
		fail = &failingLocal{Local: *l}
		*l = fail
		// This test's own log: the env fails any test that logs a panic.
		o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
		o.Verify = func(_ context.Context, _ net.IP, _, _ string, msg []byte) (Verdict, error) {
			if panicVerify.Load() {
				panic("verify exploded")
			}
			return Verdict{Message: msg}, nil
		}
		o.Sign = func(string, []byte) ([]byte, error) {
			if panicSign.Load() {
				panic("sign exploded")
			}
			return nil, nil
		}
	})
	msg := "From: alice@example.org\r\nSubject: x\r\n\r\nx\r\n"
	t.Run("panic in Verify is 451 and the session goes on", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		panicVerify.Store(true)
		if got := cl.send("bob@other.test", []string{"alice@example.org"}, msg); !strings.HasPrefix(got, "451 4.3.0") {
			t.Fatalf("got %q", got)
		}
		panicVerify.Store(false)
		if got := cl.send("bob@other.test", []string{"alice@example.org"}, msg); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("after the panic: %q", got)
		}
		if n := len(e.mailbox("alice@example.org")); n != 1 {
			t.Fatalf("stored %d, want only the second", n)
		}
	})
	t.Run("panic in Verify under BDAT is 451 too", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
		cl.cmd("RCPT TO:<alice@example.org>", "250 ")
		panicVerify.Store(true)
		defer panicVerify.Store(false)
		cl.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
		cl.expect("451 4.3.0")
		cl.cmd("NOOP", "250 ")
	})
	t.Run("panic in Sign is 451 and nothing is queued", func(t *testing.T) {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		panicSign.Store(true)
		defer panicSign.Store(false)
		if got := cl.send("alice@example.org", []string{"carol@remote.test"}, msg); !strings.HasPrefix(got, "451 4.3.0") {
			t.Fatalf("got %q", got)
		}
		if q := e.queue.entries(); len(q) != 0 {
			t.Fatalf("queued %d", len(q))
		}
		cl.cmd("NOOP", "250 ")
	})
	t.Run("store failing for one recipient of two is 451, never 250", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		fail.partial = tempError{"disk full"}
		defer func() { fail.partial = nil }()
		if got := cl.send("bob@other.test", []string{"alice@example.org", "bob@example.org"}, msg); !strings.HasPrefix(got, "451 4.3.0") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("the panics are logged with their stack", func(t *testing.T) {
		l := logs.String()
		for _, want := range []string{`"msg":"panic handling message"`, "verify exploded", "sign exploded", `"stack":"goroutine`} {
			if !strings.Contains(l, want) {
				t.Fatalf("log lacks %s:\n%s", want, l)
			}
		}
	})
}

// TestAttack_MemoryBudget: messages are buffered whole, so concurrent
// transfers are bounded together by MaxBufferedBytes; one over the budget
// gets 452 4.3.1 and its sender retries, by DATA or BDAT alike.
func TestAttack_MemoryBudget(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) {
		o.MaxMessageBytes = 20_000
		o.MaxBufferedBytes = 5_000
	})
	open := func(t *testing.T) *client {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		cl.cmd("MAIL FROM:<x@other.test>", "250 ")
		cl.cmd("RCPT TO:<alice@example.org>", "250 ")
		return cl
	}
	// The hog holds 4 KiB of its message in the server's memory, one
	// read's worth, and stops there; 1000 bytes more are over the budget.
	hog := open(t)
	hog.cmd("DATA", "354 ")
	hog.write("Subject: big\r\n\r\n" + strings.Repeat("h", 4078) + "\r\n")
	small := "Subject: small\r\n\r\n" + strings.Repeat("s", 980) + "\r\n"
	waitFor(t, func() bool { return e.mx.buffered.Load() == 4096 })

	t.Run("DATA over the budget is deferred", func(t *testing.T) {
		cl := open(t)
		cl.cmd("DATA", "354 ")
		cl.write(small + ".\r\n")
		cl.expect("452 4.3.1")
	})
	t.Run("BDAT over the budget is deferred", func(t *testing.T) {
		cl := open(t)
		cl.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(small), small))
		cl.expect("452 4.3.1")
	})
	if m := e.mailbox("alice@example.org"); len(m) != 0 {
		t.Fatalf("stored %d", len(m))
	}
	t.Run("the budget is returned when a message is stored", func(t *testing.T) {
		hog.write(".\r\n")
		hog.expect("250 ")
		cl := open(t)
		cl.cmd("DATA", "354 ")
		cl.write(small + ".\r\n")
		cl.expect("250 ")
		waitFor(t, func() bool { return e.mx.buffered.Load() == 0 })
	})
}
