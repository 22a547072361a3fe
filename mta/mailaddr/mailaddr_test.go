package mailaddr_test

import (
	"strings"
	"testing"

	"minimail/mta/mailaddr"
)

func TestDomain(t *testing.T) {
	for in, want := range map[string]string{
		"bob@Example.ORG":                  "example.org",
		"bob@example.org.":                 "example.org",
		`"x@evil.test>, <ceo"@paypal.test`: "paypal.test",
		"bob":                              "",
		"bob@":                             "",
		"bob@[192.0.2.1]":                  "[192.0.2.1]",
	} {
		if got := mailaddr.Domain(in); got != want {
			t.Errorf("Domain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsASCII(t *testing.T) {
	for in, want := range map[string]bool{"": true, "bob@example.org": true, "jürgen@example.org": false, "\x7f": true, "\xff": false} {
		if got := mailaddr.IsASCII(in); got != want {
			t.Errorf("IsASCII(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestValidDomain(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	long := strings.Repeat(label63+".", 4)[:mailaddr.MaxDomain]
	for _, tt := range []struct {
		d    string
		want bool
	}{
		{"example.org", true},
		{"Example.ORG", true},
		{"mail_1.example.org", true},
		{"xn--bcher-kva.example", true},
		{"bücher.example", true},
		{"localhost", true},
		{"a-b.example", true},
		{long, true},
		{long + "a", false},
		{label63 + ".example", true},
		{label63 + "a.example", false},
		{"", false},
		{"example.org.", false},
		{".example.org", false},
		{"a..b", false},
		{"-a.example", false},
		{"a-.example", false},
		{"mx example", false},
		{"a/b.example", false},
		{"[192.0.2.1]", false},
	} {
		if got := mailaddr.ValidDomain(tt.d); got != tt.want {
			t.Errorf("ValidDomain(%q) = %v, want %v", tt.d, got, tt.want)
		}
	}
}
