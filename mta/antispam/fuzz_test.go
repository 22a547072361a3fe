package antispam

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseReply: whatever rspamd (or something in its place) answers, the
// parse never panics, and a verdict it returns is one the MX can act on
// and write into a header.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
		`{"is_skipped":false,"score":0.0,"required_score":15.0,"action":"no action","symbols":{},"messages":{}}`,
		`{"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0}},"messages":{"smtp_message":"Gtube pattern"}}`,
		`{"score":9,"required_score":15,"action":"rewrite subject","subject":"[SPAM] hi"}`,
		`{"score":1e308,"action":"add header","symbols":{"A\r\nB":{"score":1}}}`,
		`{"action":"soft reject","score":-1,"messages":{"smtp_message":["x"]}}`,
		`[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := ParseReply(b)
		if err != nil {
			return
		}
		switch res.Action {
		case ActionNoAction, ActionGreylist, ActionAddHeader, ActionRewriteSubject, ActionSoftReject, ActionReject:
		default:
			t.Fatalf("unknown action %q accepted", res.Action)
		}
		if strings.ContainsAny(res.Message, "\r\n") || len(res.Message) > maxReplyText {
			t.Fatalf("reply text %q", res.Message)
		}
		fields := string(ResultFields(res))
		for _, line := range strings.Split(strings.TrimSuffix(fields, "\r\n"), "\r\n") {
			if strings.ContainsAny(line, "\r\n") || len(line) > 998 {
				t.Fatalf("header line %q", line)
			}
			if !strings.HasPrefix(line, "X-Spam") && !strings.HasPrefix(line, "\t") {
				t.Fatalf("a line that starts a field of its own: %q", line)
			}
		}
		msg := RewriteSubject([]byte("Subject: x\r\n\r\nbody\r\n"), res.Subject)
		if first, _, _ := strings.Cut(string(msg), "\r\n"); !strings.HasPrefix(first, "Subject: ") || len(first) > 998 {
			t.Fatalf("rewritten subject line %q", first)
		}
	})
}

// FuzzDNSBLAnswer: any set of A records and any TXT reason give a verdict
// without panicking, and the reason quoted in a reply stays one bounded
// line of printable ASCII.
func FuzzDNSBLAnswer(f *testing.F) {
	f.Add([]byte{127, 0, 0, 2}, "Listed, see https://bl.test/q?ip=127.0.0.2")
	f.Add([]byte{127, 255, 255, 254}, "")
	f.Add([]byte{127, 0, 1, 2, 192, 0, 2, 1}, "a\r\n250 injected")
	f.Fuzz(func(t *testing.T, raw []byte, txt string) {
		var addrs []netip.Addr
		for i := 0; i+4 <= len(raw); i += 4 {
			addrs = append(addrs, netip.AddrFrom4([4]byte(raw[i:i+4])))
		}
		got := ClassifyAnswer(addrs)
		listed := false
		for _, a := range addrs {
			b := a.As4()
			listed = listed || b[0] == 127 && b[1] == 0 && b[2] == 0
		}
		if (got == Listed) != listed {
			t.Fatalf("ClassifyAnswer(%v) = %v", addrs, got)
		}
		r := ReplyText(txt)
		if len(r) > maxReplyText {
			t.Fatalf("reply text of %d octets", len(r))
		}
		for i := 0; i < len(r); i++ {
			if r[i] < 0x20 || r[i] > 0x7e {
				t.Fatalf("reply text %q has octet %#x", r, r[i])
			}
		}
	})
}
