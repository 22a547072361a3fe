package msgauth

import (
	"bytes"
	"strings"
	"testing"
)

func TestStripAuthResults(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"ours", "Authentication-Results: mx.b.test; spf=pass\r\nFrom: a@a.test\r\n\r\nbody",
			"From: a@a.test\r\n\r\nbody"},
		{"ours, folded before the id", "X: 1\r\nAuthentication-Results:\r\n mx.b.test;\r\n spf=pass\r\nY: 2\r\n\r\n",
			"X: 1\r\nY: 2\r\n\r\n"},
		{"ours, any case", "AUTHENTICATION-RESULTS: Mx.B.Test; none\r\n\r\n", "\r\n"},
		{"ours, after a comment", "Authentication-Results: (hi (there)) mx.b.test (v1) 1; none\r\n\r\n", "\r\n"},
		{"ours, quoted, rooted", "Authentication-Results: \"mx.b.test.\"; none\r\n\r\n", "\r\n"},
		{"ours, WSP before colon", "Authentication-Results \t: mx.b.test; none\r\n\r\n", "\r\n"},
		{"ours, bare LF", "Authentication-Results: mx.b.test;\n\tnone\nFrom: a\n\nb", "From: a\n\nb"},
		{"ours, last line without line ending", "Authentication-Results: mx.b.test; none", ""},
		{"ours, mixed case", "Authentication-Results: mX.b.TeSt; none\r\n\r\n", "\r\n"},
		{"ours, comment right after the id", "Authentication-Results: mx.b.test(by us); none\r\n\r\n", "\r\n"},
		{"ours, TABs", "Authentication-Results:\tmx.b.test;\tnone\r\n\r\n", "\r\n"},
		{"ours, quoted with a quoted-pair", "Authentication-Results: \"mx\\.b.test\"; none\r\n\r\n", "\r\n"},
		{"ours, the id alone", "Authentication-Results: mx.b.test\r\n\r\n", "\r\n"},
		// Control bytes: a reader may cut the field at one and see our id.
		{"NUL after the id", "Authentication-Results: mx.b.test\x00; spf=pass\r\nFrom: a\r\n\r\n", "From: a\r\n\r\n"},
		{"NUL after another id", "Authentication-Results: other.test\x00; spf=pass\r\n\r\n", "\r\n"},
		{"NUL inside the id", "Authentication-Results: mx.b.test\x00.evil; spf=pass\r\n\r\n", "\r\n"},
		{"NUL in the name", "Authentication-Results\x00: mx.b.test; spf=pass\r\n\r\n", "\r\n"},
		{"ESC", "Authentication-Results: \x1b[8mother.test\x1b[0m mx.b.test; spf=pass\r\n\r\n", "\r\n"},
		{"DEL", "Authentication-Results: mx.b.test\x7f; spf=pass\r\n\r\n", "\r\n"},
		{"bare CR", "Authentication-Results: other.test\rmx.b.test; spf=pass\r\n\r\n", "\r\n"},
		{"control in a comment", "Authentication-Results: (\x07) other.test; spf=pass\r\n\r\n", "\r\n"},
		{"control on a continuation line", "Authentication-Results: other.test;\r\n \x01spf=pass\r\n\r\n", "\r\n"},
		{"control in the results", "Authentication-Results: other.test; spf=pass\x00\r\n\r\n", "\r\n"},
		{"colon on a continuation line", "Authentication-Results\r\n : mx.b.test; spf=pass\r\n\r\n", "\r\n"},
		{"foreign", "Authentication-Results: other.test; spf=pass\r\n\r\n", "Authentication-Results: other.test; spf=pass\r\n\r\n"},
		{"foreign with a control byte in another field", "Authentication-Results: other.test; spf=pass\r\nX: \x00\r\n\r\n",
			"Authentication-Results: other.test; spf=pass\r\nX: \x00\r\n\r\n"},
		// Not an authserv-id by the grammar of RFC 8601 section 2.2, so not ours.
		{"our name then a tspecial", "Authentication-Results: mx.b.test/x; none\r\n\r\n", "Authentication-Results: mx.b.test/x; none\r\n\r\n"},
		{"our name then @", "Authentication-Results: mx.b.test@x; none\r\n\r\n", "Authentication-Results: mx.b.test@x; none\r\n\r\n"},
		{"our name unterminated quoted", "Authentication-Results: \"mx.b.test; none\r\n\r\n", "Authentication-Results: \"mx.b.test; none\r\n\r\n"},
		{"our name then 8-bit", "Authentication-Results: mx.b.test\xc2\xa0; none\r\n\r\n", "Authentication-Results: mx.b.test\xc2\xa0; none\r\n\r\n"},
		{"foreign with our name as prefix", "Authentication-Results: mx.b.test.evil; none\r\n\r\n", "Authentication-Results: mx.b.test.evil; none\r\n\r\n"},
		{"in the body stays", "From: a\r\n\r\nAuthentication-Results: mx.b.test; none\r\n", "From: a\r\n\r\nAuthentication-Results: mx.b.test; none\r\n"},
		{"other field mentioning it", "X-Authentication-Results: mx.b.test; none\r\n\r\n", "X-Authentication-Results: mx.b.test; none\r\n\r\n"},
	}
	for _, tc := range tests {
		if got := string(stripAuthResults([]byte(tc.in), "mx.b.test")); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestAuthServIDOf(t *testing.T) {
	tests := []struct {
		value, id string
		ok        bool
	}{
		{"mx.b.test; spf=pass", "mx.b.test", true},
		{"  (c (nested) \\) ) mx.b.test 1; none", "mx.b.test", true},
		{"mx.b.test(c); none", "mx.b.test", true},
		{"mx.b.test\tnone", "mx.b.test", true},
		{"mx.b.test", "mx.b.test", true},
		{`"mx.b.test"; none`, "mx.b.test", true},
		{`"mx\.b\"test"; none`, `mx.b"test`, true},
		{`"with space" ; none`, "with space", true},
		{"", "", false},
		{"; none", "", false},
		{"(unclosed comment mx.b.test; none", "", false},
		{"mx.b.test/x; none", "", false},
		{"mx.b.test=; none", "", false},
		{"mx.b.test,other; none", "", false},
		{"mx.b.test\x00; none", "", false},
		{"mx.b.test\xc3\xa9; none", "", false},
		{`"mx.b.test; none`, "", false},
		{`"mx.b.test"x; none`, "", false},
		{`"mx.b.test\`, "", false},
	}
	for _, tc := range tests {
		id, ok := authServIDOf(tc.value)
		if id != tc.id || ok != tc.ok {
			t.Errorf("authServIDOf(%q) = %q, %v; want %q, %v", tc.value, id, ok, tc.id, tc.ok)
		}
	}
}

func TestSplitHeader(t *testing.T) {
	msg := " stray\r\nA: 1\r\n 2\r\nnot a field\r\nB:3\n\tfour\nC: 5\r\n\r\nbody\r\n"
	fields, rest := splitHeader([]byte(msg))
	var names, values []string
	for _, f := range fields {
		names = append(names, f.name)
		values = append(values, f.value())
	}
	if got := strings.Join(names, ","); got != ",A,,B,C" {
		t.Errorf("names %q", got)
	}
	if got := strings.Join(values, "|"); got != "|1 2||3\tfour|5" {
		t.Errorf("values %q", got)
	}
	if string(rest) != "\r\nbody\r\n" {
		t.Errorf("rest %q", rest)
	}
}

// FuzzStripAuthResults checks the header splitter and the stripping on
// arbitrary input: the fields rebuild the message exactly, no field claiming
// the id survives, the other fields survive in order, stripping twice
// changes nothing, and From parsing never panics.
func FuzzStripAuthResults(f *testing.F) {
	f.Add([]byte("Authentication-Results: mx.b.test; spf=pass\r\nFrom: a@a.test\r\n\r\nbody"), "mx.b.test")
	f.Add([]byte("authentication-results:\r\n (c) \"MX.B.TEST\";\r\n\tnone\nFrom: <a@a.test>\n\n"), "mx.b.test")
	f.Add([]byte(" lead\r\nAuthentication-Results : x; none\r\nFrom: a@a.test, b@b.test"), "x")
	f.Add([]byte("Authentication-Results: (unclosed \\) comment mx; none\r\n\r\n"), "mx")
	f.Fuzz(func(t *testing.T, msg []byte, id string) {
		fields, rest := splitHeader(msg)
		var rebuilt []byte
		var kept []byte
		for _, fl := range fields {
			rebuilt = append(rebuilt, fl.raw...)
			if !claimsAuthServID(fl, id) {
				kept = append(kept, fl.raw...)
			}
		}
		if !bytes.Equal(append(rebuilt, rest...), msg) {
			t.Fatalf("fields do not rebuild the message")
		}
		out := stripAuthResults(msg, id)
		if !bytes.Equal(out, append(kept, rest...)) {
			t.Fatalf("stripping changed more than the claiming fields")
		}
		again, _ := splitHeader(out)
		for _, fl := range again {
			if claimsAuthServID(fl, id) {
				t.Fatalf("field %q claiming %q survived", fl.raw, id)
			}
		}
		if !bytes.Equal(stripAuthResults(out, id), out) {
			t.Fatalf("stripping is not idempotent")
		}
		fromDomain(fields)
	})
}
