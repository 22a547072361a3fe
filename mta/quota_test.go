package mta

import (
	"strings"
	"testing"
)

// TestQuota_MailboxAtQuotaRefusedAtRCPT: 452 4.2.2 for the full mailbox
// only; the transaction goes on for the others.
func TestQuota_MailboxAtQuotaRefusedAtRCPT(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.st.SetQuota("alice@example.org", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Append("alice@example.org", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")
	cl.cmd("MAIL FROM:<x@other.test>", "250 ")
	cl.cmd("RCPT TO:<alice@example.org>", "452 4.2.2 ")
	cl.cmd("RCPT TO:<bob@example.org>", "250 ")
	cl.cmd("DATA", "354 ")
	cl.write("Subject: hi\r\n\r\nhi\r\n.\r\n")
	cl.expect("250 ")
	if n := len(e.mailbox("alice@example.org")); n != 1 {
		t.Errorf("alice holds %d messages, want the 1 she had", n)
	}
	if n := len(e.mailbox("bob@example.org")); n != 1 {
		t.Errorf("bob holds %d messages, want 1", n)
	}
}

// TestQuota_OverflowAtDATA: a message that would take its only mailbox past
// the quota is 552 5.2.2; when another recipient's copy is stored the reply
// is 250 and the refused recipient goes to the queue, which bounces it.
func TestQuota_OverflowAtDATA(t *testing.T) {
	overflow := &fakeQueue{}
	e := newEnv(t, func(o *Options, _ *Local) { o.Overflow = overflow })
	if err := e.st.SetQuota("alice@example.org", 50); err != nil {
		t.Fatal(err)
	}
	msg := "Subject: big\r\n\r\n" + strings.Repeat("x", 100) + "\r\n"
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")

	t.Run("the only recipient: 552 5.2.2", func(t *testing.T) {
		if got := cl.send("x@other.test", []string{"alice@example.org"}, msg); !strings.HasPrefix(got, "552 5.2.2 ") {
			t.Fatalf("got %q, want 552 5.2.2", got)
		}
		if n := len(e.mailbox("alice@example.org")); n != 0 {
			t.Errorf("alice holds %d messages", n)
		}
		if q := overflow.entries(); len(q) != 0 {
			t.Errorf("queued %v for a refused message", q)
		}
	})
	t.Run("another recipient stored: 250, the full one queued", func(t *testing.T) {
		got := cl.send("x@other.test", []string{"alice@example.org", "bob@example.org"}, msg)
		if !strings.HasPrefix(got, "250 ") {
			t.Fatalf("got %q, want 250", got)
		}
		if n := len(e.mailbox("bob@example.org")); n != 1 {
			t.Errorf("bob holds %d messages, want 1", n)
		}
		if n := len(e.mailbox("alice@example.org")); n != 0 {
			t.Errorf("alice holds %d messages, want 0", n)
		}
		q := overflow.entries()
		if len(q) != 1 || q[0].ID != replyID(t, got) || q[0].From != "x@other.test" || strings.Join(q[0].Rcpts, ",") != "alice@example.org" {
			t.Fatalf("overflow queue holds %+v, want alice's copy under the reply's id", q)
		}
	})
	if l := e.logs.String(); !strings.Contains(l, `"msg":"over_quota"`) || !strings.Contains(l, `alice@example.org 552`) {
		t.Errorf("log lacks over_quota and the refusal:\n%s", l)
	}
}
