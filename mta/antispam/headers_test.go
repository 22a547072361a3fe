package antispam

import (
	"strings"
	"testing"
)

func TestRewriteSubject(t *testing.T) {
	msg := []byte("From: a@b.test\r\nSubject: cheap\r\n pills\r\nTo: c@d.test\r\n\r\nbody\r\n")
	got := string(RewriteSubject(msg, "[SPAM] cheap pills"))
	want := "Subject: [SPAM] cheap pills\r\nFrom: a@b.test\r\nTo: c@d.test\r\n\r\nbody\r\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	got = string(RewriteSubject(msg, "[SPAM] caf\u00e9\r\nBcc: x@y.test"))
	if !strings.HasPrefix(got, "Subject: =?utf-8?q?[SPAM]_caf=C3=A9Bcc:_x@y.test?=\r\nFrom:") {
		t.Fatalf("non-ASCII or CRLF subject: %q", got)
	}
}

func TestResultFields(t *testing.T) {
	res := Result{Action: ActionAddHeader, Score: 7.5, Required: 15, Symbols: []Symbol{{"B_RULE", 1}, {"A_RULE", 6.5}, {"NEG", -2}}}
	got := string(ResultFields(res))
	want := "X-Spam: Yes\r\nX-Spamd-Result: default: True [7.50 / 15.00];\r\n\tA_RULE(6.50);\r\n\tNEG(-2.00);\r\n\tB_RULE(1.00)\r\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	got = string(ResultFields(Result{Action: ActionNoAction, Score: 0.1, Required: 15}))
	if got != "X-Spamd-Result: default: False [0.10 / 15.00]\r\n" {
		t.Fatalf("no action: %q", got)
	}
}
