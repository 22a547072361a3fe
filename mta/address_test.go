package mta

import (
	"strings"
	"testing"
)

func TestIsAddressLiteral(t *testing.T) {
	tests := []struct {
		domain string
		want   bool
	}{
		{"[127.0.0.1]", true},
		{"[169.254.169.254]", true},
		{"[0.0.0.0]", true},
		{"[10.1.2.3]", true},
		{"[ipv6:::1]", true},
		{"[ipv6:::ffff:127.0.0.1]", true},
		{"[ipv6:fe80::1]", true},
		{"[192.0.2.1", true}, // malformed, but a literal all the same
		{"127.0.0.1", true},  // the implicit MX of a dotted quad is that IP
		{"169.254.169.254", true},
		{"127.1", true},
		{"2130706433", true},
		{"0x7f.0.0.1", true},
		{"127.0.0.1.", true},
		{"example.org", false},
		{"remote.test", false},
		{"1password.com", false},
		{"123.example.org", false},
		{"mx1.example.org", false},
		{"3com", false},
		{"xn--bcher-kva.example", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := isAddressLiteral(tt.domain); got != tt.want {
			t.Errorf("isAddressLiteral(%q) = %v, want %v", tt.domain, got, tt.want)
		}
	}
}

// TestParseAddressSRSLocalPartsPast64: an SRS address carries a whole
// address in its local part; it is taken past 64 octets, others are not.
func TestParseAddressSRSLocalPartsPast64(t *testing.T) {
	long := strings.Repeat("l", 60)
	if _, err := parseAddress("SRS0=HHHH=TT=other.example=" + long + "@example.org"); err != nil {
		t.Errorf("long SRS0 local part: %v", err)
	}
	if _, err := parseAddress("x" + long + "abcd@example.org"); err != errAddrTooLong {
		t.Errorf("65-octet local part: %v, want errAddrTooLong", err)
	}
	if _, err := parseAddress("SRS0=" + strings.Repeat("l", 260) + "@example.org"); err != errAddrTooLong {
		t.Errorf("an SRS path past 256 octets: %v, want errAddrTooLong", err)
	}
}
