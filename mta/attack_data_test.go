package mta

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAttack_MessageShapes sends the message shapes that break parsers:
// sizes at the edges, degenerate headers, huge line counts.
func TestAttack_MessageShapes(t *testing.T) {
	e := newEnv(t, nil)
	t.Run("a million folded header lines take linear time", func(t *testing.T) {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		// Unfolding by string appends was quadratic: hours of CPU for
		// these 4 MB. Linear, the reply comes in well under the deadline.
		cl.c.SetDeadline(time.Now().Add(15 * time.Second))
		got := cl.send("alice@example.org", []string{"bob@example.org"},
			"From: alice@example.org\r\nX-Fold: x\r\n"+strings.Repeat(" a\r\n", 1_000_000)+"\r\nbody\r\n")
		if !strings.HasPrefix(got, "250 ") {
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
