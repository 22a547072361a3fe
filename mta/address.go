package mta

import (
	"errors"
	"net/netip"
	"strings"

	"minimail/mta/mailaddr"
	"minimail/mta/srs"
)

// RFC 5321 4.5.3.1 size limits.
const (
	maxLocalPart   = 64
	maxPath        = 256 // including the angle brackets
	maxCommandLine = 512 // including CRLF
)

// address is an envelope address split at its last '@', the domain lower
// cased. go-smtp has already removed any source route (RFC 5321 C: "@a:"
// is ignored) and the quotes around a quoted local part, so Local may
// contain characters that need quoting again, even '@'.
type address struct {
	Local, Domain string
}

func (a address) String() string { return a.Local + "@" + a.Domain }

// Path is the address as RFC 5321 4.1.2 writes it, the local part quoted
// when it is not a Dot-string: the form every later use of an envelope
// address takes (SPF, Return-Path, the queue's MAIL FROM), so that none of
// them can read a different address out of it. go-smtp hands the address
// over with its quotes removed, so '"x@evil.test>, <ceo"@paypal.test'
// arrives as 'x@evil.test>, <ceo@paypal.test': its domain is the part
// after the last '@' (domains hold none), and only Path puts it back.
func (a address) Path() string {
	if isDotAtom(a.Local) {
		return a.String()
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(a.Local); i++ {
		// RFC 5321 quoted-pairSMTP: backslash and quote are escaped.
		if c := a.Local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(a.Local[i])
	}
	b.WriteString(`"@`)
	b.WriteString(a.Domain)
	return b.String()
}

var (
	errAddrSyntax  = errors.New("address is not local-part@domain")
	errAddrTooLong = errors.New("address too long")
	errAddrControl = errors.New("address contains control characters")
	errAddrDomain  = errors.New("malformed domain")
)

// parseAddress checks an envelope address as go-smtp hands it over.
func parseAddress(s string) (address, error) {
	if len(s)+2 > maxPath {
		return address{}, errAddrTooLong
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return address{}, errAddrSyntax
	}
	a := address{Local: s[:at], Domain: strings.ToLower(s[at+1:])}
	// SRS addresses (minimail/mta/srs) carry a whole address in their
	// local part and often pass 64 octets; RFC 5321 4.5.3.1 asks servers
	// to take longer objects where they can. The path limit still holds.
	if len(a.Local) > maxLocalPart && !srs.IsSRS(a.Local) {
		return address{}, errAddrTooLong
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return address{}, errAddrControl
		}
	}
	if !validDomain(a.Domain) {
		return address{}, errAddrDomain
	}
	return a, nil
}

// validDomain accepts a domain name (mailaddr.ValidDomain) or an address
// literal (RFC 5321 4.1.3).
func validDomain(d string) bool {
	if !strings.HasPrefix(d, "[") {
		return mailaddr.ValidDomain(d)
	}
	if len(d) > mailaddr.MaxDomain {
		return false
	}
	if d[len(d)-1] != ']' {
		return false
	}
	lit := d[1 : len(d)-1]
	if v6, ok := strings.CutPrefix(lit, "ipv6:"); ok {
		ip, err := netip.ParseAddr(v6)
		return err == nil && ip.Is6() && ip.Zone() == ""
	}
	ip, err := netip.ParseAddr(lit)
	return err == nil && ip.Is4()
}

// isAddressLiteral reports whether domain (as parseAddress returns it)
// names a host by its IP address rather than by a name: an address literal
// (RFC 5321 4.1.3: "[192.0.2.1]", "[ipv6:...]"), or a dotted quad written
// as a domain, which the implicit MX rule (RFC 5321 5.1) dials all the
// same. No top-level domain is all digits (RFC 3696 2), so a domain whose
// last label is a number is taken as an IPv4 address in disguise ("127.1",
// "2130706433", "0x7f.0.0.1" included: some resolvers read those too).
//
// Submission refuses such recipients: relaying to them would let any user
// make the server connect to port 25 of its own loopback, the internal
// network or a cloud metadata address.
func isAddressLiteral(domain string) bool { return mailaddr.IsIPDomain(domain) }

// relayTrick reports whether a local part addressed to one of our domains
// tries to route elsewhere: the percent hack (user%other@local), a bang path
// (other!user@local) or a quoted local part holding an '@'
// ("user@other"@local). Such mail is refused as relaying (550 5.7.1) rather
// than risk a later hop interpreting it.
func relayTrick(local string) bool {
	return strings.ContainsAny(local, "@%!")
}

// isDotAtom reports whether local can be written without quotes
// (RFC 5321 4.1.2 Dot-string; UTF-8 allowed per RFC 6531). Submission only
// relays such addresses: go-smtp drops the quotes, and re-quoting every
// oddity correctly is not worth the risk for addresses nobody uses.
func isDotAtom(local string) bool { return mailaddr.IsDotString(local) }

// sameAddress compares addresses the way the store keys users: case
// insensitively, local part included.
func sameAddress(a, b string) bool { return strings.ToLower(a) == strings.ToLower(b) }
