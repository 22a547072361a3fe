package srs

import (
	"strings"
	"testing"
)

// FuzzReverse: any local part either reverses to an address whose
// forward form reverses to it again, or is refused; never a panic.
func FuzzReverse(f *testing.F) {
	r := rewriter(day0)
	good, _ := r.Forward("bob@remote.test", "example.org")
	f.Add(strings.TrimSuffix(good, "@example.org"))
	f.Add("SRS0=abcd=JV=remote.test=bob")
	f.Add("srs0+ABCD=jv=remote.test=a=b")
	f.Add("SRS0==JV==")
	f.Add("SRS0")
	f.Fuzz(func(t *testing.T, local string) {
		if _, err := Parse(local); err != nil {
			return
		}
		orig, err := r.Reverse(local)
		if err != nil {
			return
		}
		again, err := r.Forward(orig, "example.org")
		if err != nil {
			t.Fatalf("Forward(%q) after Reverse(%q): %v", orig, local, err)
		}
		back, err := r.Reverse(strings.TrimSuffix(again, "@example.org"))
		if err != nil || !strings.EqualFold(back, orig) {
			t.Fatalf("round trip of %q: %q, %v", orig, back, err)
		}
	})
}
