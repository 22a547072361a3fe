package header

import (
	"bytes"
	"strings"
	"testing"
)

func TestRemove_NamedFieldsGo(t *testing.T) {
	msg := "X-Spam: No\r\nFrom: a@b.test\r\nx-spamd-result: default: False [-99 / 15]\r\n\tFORGED(-99)\r\nX-Spam-Status: No\r\nX-Spammy: kept\r\nSubject: s\r\n\r\nX-Spam: body text stays\r\n"
	got := string(Remove([]byte(msg), "X-Spam", "X-Spamd-Result", "X-Spam-Status", "X-Spam-Flag"))
	want := "From: a@b.test\r\nX-Spammy: kept\r\nSubject: s\r\n\r\nX-Spam: body text stays\r\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	clean := []byte("From: a@b.test\r\n\r\nbody\r\n")
	if out := Remove(clean, "X-Spam", "X-Spamd-Result", "X-Spam-Status", "X-Spam-Flag"); &out[0] != &clean[0] {
		t.Fatal("a message without the fields was copied")
	}
}

// FuzzRemove: whatever the message, Remove never grows it, keeps
// everything after the header section as it was, and leaves no field of
// the removed name in the header section.
func FuzzRemove(f *testing.F) {
	f.Add([]byte("Bcc: a@b.test\r\n c@d.test\r\nSubject: s\r\n\r\nBcc: body\r\n"))
	f.Add([]byte("bcc : x\r\nFrom: a\r\n\r\n"))
	f.Add([]byte("Subject: no end of header"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out := Remove(msg, "Bcc")
		if len(out) > len(msg) {
			t.Fatalf("grew: %q -> %q", msg, out)
		}
		head, body, found := bytes.Cut(out, []byte("\r\n\r\n"))
		if bytes.HasPrefix(out, []byte("\r\n")) { // no header section at all
			head, body, found = nil, out[2:], true
		}
		if found && !bytes.HasSuffix(msg, body) {
			t.Fatalf("body changed: %q -> %q", msg, out)
		}
		for _, line := range bytes.Split(head, []byte("\r\n")) {
			name, _, ok := bytes.Cut(line, []byte(":"))
			if ok && len(line) > 0 && line[0] != ' ' && line[0] != '\t' && strings.EqualFold(strings.TrimRight(string(name), " \t"), "Bcc") {
				t.Fatalf("Bcc left in %q (from %q)", out, msg)
			}
		}
	})
}
