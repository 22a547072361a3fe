package xtext

import (
	"errors"
	"testing"
)

func TestEncode(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"bob@a.test", "bob@a.test"},
		{"e=mc2@a.test", "e+3Dmc2@a.test"},
		{"bob+tag@a.test", "bob+2Btag@a.test"},
		{"two words", "two+20words"},
		{"\x00\x7f\xff", "+00+7F+FF"},
		{"!~", "!~"},
	} {
		if got := Encode(tt.in); got != tt.want {
			t.Errorf("Encode(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDecode(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", true},
		{"QQ123", "QQ123", true},
		{"e+3Dmc2@a.test", "e=mc2@a.test", true},
		{"bob+2Btag@a.test", "bob+tag@a.test", true},
		{"+41", "A", true}, // needless but valid
		{"+FF", "\xff", true},
		{"a+3d", "", false},   // lower-case digits
		{"a+3", "", false},    // incomplete
		{"a+", "", false},     // lone plus
		{"a+G0", "", false},   // not hex
		{"a=b", "", false},    // raw "="
		{"a b", "", false},    // raw space
		{"a\x01b", "", false}, // control character
		{"caf\xc3\xa9", "", false},
	} {
		got, err := Decode(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("Decode(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrSyntax) {
			t.Errorf("Decode(%q): error %v does not wrap ErrSyntax", tt.in, err)
		}
	}
}

// FuzzXtext checks the codec's promises on any input: what Encode writes
// always decodes back to the input, and whatever decodes re-encodes to a
// canonical form that decodes to the same text.
func FuzzXtext(f *testing.F) {
	for _, s := range []string{"", "bob@a.test", "e+3Dmc2", "+", "+4", "+zz", "a=b", "\x00\xff", "QQ+20+2B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := Encode(s)
		dec, err := Decode(enc)
		if err != nil || dec != s {
			t.Fatalf("Decode(Encode(%q)) = %q, %v", s, dec, err)
		}
		for i := 0; i < len(enc); i++ {
			if enc[i] < '!' || enc[i] > '~' || enc[i] == '=' {
				t.Fatalf("Encode(%q) = %q holds %q", s, enc, enc[i])
			}
		}
		if d, err := Decode(s); err == nil {
			if again, err := Decode(Encode(d)); err != nil || again != d {
				t.Fatalf("re-encoding %q: %q, %v", d, again, err)
			}
			if len(Encode(d)) > len(s) {
				t.Fatalf("Encode(%q) = %q is longer than the input %q", d, Encode(d), s)
			}
		}
	})
}
