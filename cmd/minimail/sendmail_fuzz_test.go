package main

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzSendmailInput feeds sendmail's parsers, the command line and the
// message (its end, its size limit, the -t recipients), arbitrary input:
// they must never panic, never return a message over the limit, and never
// a recipient that is not an address.
func FuzzSendmailInput(f *testing.F) {
	f.Add("-t -oi -fbob@a.test", "To: alice@a.test, root\nCc: \"B\" <b@x.test>\nBcc: c@y.test\n\nbody\n.\nmore\n")
	f.Add("-F -- x", "To: undisclosed-recipients:;\n\n")
	f.Add("-i a@b", "Subject: x\r\n\r\n..\r\n.\r\n")
	cfg := &Config{Hostname: "mx.a.test", Domains: []string{"a.test"}}
	f.Fuzz(func(t *testing.T, args, msg string) {
		o, err := parseSendmailArgs(strings.Fields(args))
		if err != nil {
			return
		}
		const limit = 1 << 12
		m, err := readSendmailMessage(strings.NewReader(msg), o.ignoreDots, limit, "limit")
		if err != nil {
			return
		}
		if len(m) > limit || !bytes.HasPrefix([]byte(msg), m) {
			t.Fatalf("message of %d bytes, not a prefix of the input", len(m))
		}
		rcpts, err := sendmailRecipients(cfg, o, m)
		if err == nil && len(rcpts) == 0 {
			t.Fatal("no error and no recipients")
		}
		for _, r := range rcpts {
			if !strings.Contains(r, "@") {
				t.Fatalf("recipient %q has no domain", r)
			}
		}
	})
}
