// Package mailaddr holds the rules for addresses and domain names that the
// SMTP server, the queue, the outbound client and the configuration share,
// so that each is written once and all of them read a domain alike.
package mailaddr

import "strings"

// MaxDomain is the longest domain RFC 5321 4.5.3.1.2 allows, in octets.
const MaxDomain = 255

// Domain returns the domain of an address, in the form domains are
// compared in (see NormalDomain), or "" when addr has no '@'. The domain is
// after the last '@': a quoted local part may hold one, a domain never.
func Domain(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return NormalDomain(addr[at+1:])
}

// NormalDomain lower-cases a domain and drops a trailing dot: domains
// compare without regard to case (RFC 1035 2.3.3), and "example.org." is
// the absolute form of "example.org".
func NormalDomain(d string) string { return strings.TrimSuffix(strings.ToLower(d), ".") }

// IsASCII reports whether s is all US-ASCII. An address that is not needs
// SMTPUTF8 (RFC 6531 3.4); text that is not is 8-bit content.
func IsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// ValidDomain reports whether d is a domain name as mail uses it: labels of
// 1 to 63 octets separated by dots, each of letters (either case), digits,
// hyphens (neither first nor last), underscores and UTF-8 (RFC 6531
// U-labels), at most MaxDomain octets in all, with no trailing dot.
// Underscores are no part of a host name (RFC 5321 4.1.2), but they are
// seen in mail domains in the wild and DNS allows them (RFC 2181 11), so a
// domain the server takes mail for can also be configured. Address
// literals ("[192.0.2.1]") are not names.
func ValidDomain(d string) bool {
	if d == "" || len(d) > MaxDomain {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= 0x80) {
				return false
			}
		}
	}
	return true
}

// IsIPDomain reports whether domain names a host by its IP address rather
// than by a name: an address literal (RFC 5321 4.1.3: "[192.0.2.1]",
// "[ipv6:...]"), or a dotted quad written as a domain, which the implicit
// MX rule (RFC 5321 5.1) dials all the same. No top-level domain is all
// digits (RFC 3696 2), so a domain whose last label is a number is taken
// as an IPv4 address in disguise ("127.1", "2130706433", "0x7f.0.0.1").
func IsIPDomain(domain string) bool {
	domain = strings.TrimSuffix(domain, ".")
	if strings.HasPrefix(domain, "[") {
		return true
	}
	last := domain[strings.LastIndexByte(domain, '.')+1:]
	return last != "" && strings.Trim(last, "0123456789") == ""
}

// IsDotString reports whether local can be written without quotes
// (RFC 5321 4.1.2 Dot-string; UTF-8 allowed per RFC 6531).
func IsDotString(local string) bool {
	if local == "" || local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0:
		default:
			return false
		}
	}
	return true
}
