package mta

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestStripBcc(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no Bcc: the message as it was",
			"From: a@x\r\nTo: b@y\r\n\r\nBcc: body text stays\r\n",
			"From: a@x\r\nTo: b@y\r\n\r\nBcc: body text stays\r\n"},
		{"one Bcc",
			"From: a@x\r\nBcc: c@z\r\nTo: b@y\r\n\r\nbody\r\n",
			"From: a@x\r\nTo: b@y\r\n\r\nbody\r\n"},
		{"folded Bcc goes with its continuation lines",
			"From: a@x\r\nBcc: c@z,\r\n d@z,\r\n\te@z\r\nTo: b@y\r\n\r\nbody\r\n",
			"From: a@x\r\nTo: b@y\r\n\r\nbody\r\n"},
		{"any case, several, Resent-Bcc too",
			"bcc: c@z\r\nFrom: a@x\r\nBCC:\r\nResent-Bcc: d@z\r\n\r\n",
			"From: a@x\r\n\r\n"},
		{"last field, no body",
			"From: a@x\r\nBcc: c@z\r\n",
			"From: a@x\r\n"},
		{"empty Bcc",
			"Bcc:\r\nFrom: a@x\r\n\r\nx",
			"From: a@x\r\n\r\nx"},
		{"fields that only start like Bcc stay",
			"Bcc-Note: kept\r\nX-Bcc: kept\r\nBc: kept\r\n\r\n",
			"Bcc-Note: kept\r\nX-Bcc: kept\r\nBc: kept\r\n\r\n"},
		{"a continuation of another field is kept",
			"Subject: a\r\n Bcc: not a field\r\nBcc: c@z\r\n\r\n",
			"Subject: a\r\n Bcc: not a field\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(stripBcc([]byte(tt.in))); got != tt.want {
				t.Fatalf("stripBcc(%q)\n = %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzStripBcc(f *testing.F) {
	for _, s := range []string{
		"From: a@x\r\nBcc: c@z\r\nTo: b@y\r\n\r\nbody\r\n",
		"Bcc: c@z,\r\n d@z\r\n\r\nBcc: in the body\r\n",
		"bcc:\r\nRESENT-BCC: x\r\n\tmore\r\nSubject: s\r\n",
		"Subject: a\r\n Bcc: b\r\n\r\n",
		"no header at all",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		before, err := parseHeader(msg)
		if err != nil {
			return // refused before stripBcc would run
		}
		out := stripBcc(msg)
		after, err := parseHeader(out)
		if err != nil {
			t.Fatalf("stripBcc(%q) = %q, which no longer parses: %v", msg, out, err)
		}
		var want []headerField
		for _, f := range before {
			if !strings.EqualFold(f.Name, "Bcc") && !strings.EqualFold(f.Name, "Resent-Bcc") {
				want = append(want, f)
			}
		}
		if fmt.Sprint(after) != fmt.Sprint(want) {
			t.Fatalf("stripBcc(%q) = %q: fields %q, want %q", msg, out, after, want)
		}
		if !bytes.Equal(afterHeader(out), afterHeader(msg)) {
			t.Fatalf("stripBcc(%q) = %q changed the body", msg, out)
		}
		if again := stripBcc(out); !bytes.Equal(again, out) {
			t.Fatalf("stripBcc is not idempotent on %q: %q", out, again)
		}
	})
}

// afterHeader returns what follows the empty line that ends msg's header
// section, as parseHeader finds it; nil without one.
func afterHeader(msg []byte) []byte {
	if bytes.HasPrefix(msg, crlf) {
		return msg[2:]
	}
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[i+4:]
	}
	return nil
}

func TestAddressInDisplayName(t *testing.T) {
	tests := []struct{ value, want string }{
		{`"bob@x.test" <alice@x.test>`, "bob@x.test"},
		{`"Bob <bob@x.test>" <alice@x.test>`, "bob@x.test"},
		{`=?utf-8?q?bob=40x.test?= <alice@x.test>`, "bob@x.test"},
		{`"support@bank.example via Alice" <alice@x.test>`, "support@bank.example"},
		{`Us: "bob@x.test" <alice@x.test>;`, "bob@x.test"},
		{`"alice@x.test" <alice@x.test>`, ""}, // its own address: no lie
		{`"ALICE@X.TEST" <alice@x.test>`, ""},
		{`Alice <alice@x.test>`, ""},
		{`"Alice @ home" <alice@x.test>`, ""},
		{`"@alice" <alice@x.test>`, ""},
		{`alice@x.test`, ""},
		{`not an address list`, ""},
	}
	for _, tt := range tests {
		if got := addressInDisplayName(tt.value); got != tt.want {
			t.Errorf("addressInDisplayName(%q) = %q, want %q", tt.value, got, tt.want)
		}
	}
}
