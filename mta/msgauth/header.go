package msgauth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// field is one header field exactly as it appears in the message, folded
// continuation lines and final line ending included, so that a message can be
// rebuilt byte for byte from its fields.
type field struct {
	name string // the text before the colon, trailing WSP removed; "" for a line without colon
	raw  []byte
}

// value returns the field body unfolded, without the name and colon.
func (f field) value() string {
	i := bytes.IndexByte(f.raw, ':')
	if f.name == "" || i < 0 {
		return ""
	}
	return unfold(f.raw[i+1:])
}

// unfold removes the line breaks of folding (RFC 5322 section 2.2.3: CRLF
// followed by WSP is removed) and the white space around the text.
func unfold(v []byte) string {
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return strings.TrimSpace(string(v))
}

// dkimName returns the field's name as the DKIM library reads it, to find
// signatures and the fields h= names: the text before the first colon, which
// may be on a continuation line, white space trimmed; the whole field when it
// has no colon.
func (f field) dkimName() string {
	name := f.raw
	if i := bytes.IndexByte(name, ':'); i >= 0 {
		name = name[:i]
	}
	return strings.TrimSpace(string(name))
}

// splitHeader cuts msg into its header fields and the rest (the empty line
// ending the header section and the body). Bare LF line endings are accepted
// like CRLF. The concatenation of every field's raw bytes and rest is msg.
func splitHeader(msg []byte) (fields []field, rest []byte) {
	start, i := 0, 0 // start of the current field, start of the current line
	for i < len(msg) {
		if msg[i] == '\n' || bytes.HasPrefix(msg[i:], []byte("\r\n")) {
			break // the empty line: RFC 5322 section 2.1
		}
		n := lineLen(msg[i:])
		if (msg[i] == ' ' || msg[i] == '\t') && len(fields) > 0 {
			// A continuation line of a folded field (RFC 5322 section 2.2.3).
			i += n
			fields[len(fields)-1].raw = msg[start:i:i]
			continue
		}
		start = i
		i += n
		fields = append(fields, field{name: fieldName(msg[start:i]), raw: msg[start:i:i]})
	}
	return fields, msg[i:]
}

// errContinuationFirst explains why we add no field above a message.
var errContinuationFirst = errors.New("message header starts with a continuation line")

// startsWithContinuation reports whether msg starts with SP or TAB: a field
// prepended to it would continue on its first line (RFC 5322 section 2.2.3).
func startsWithContinuation(msg []byte) bool {
	return len(msg) > 0 && (msg[0] == ' ' || msg[0] == '\t')
}

// lineLen is the length of the first line of b, its LF included.
func lineLen(b []byte) int {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return i + 1
	}
	return len(b)
}

// fieldName returns the name of the field starting on line, allowing WSP
// before the colon (obs-optional, RFC 5322 section 4.5.3), or "" when the
// line is not a field at all.
func fieldName(line []byte) string {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return ""
	}
	name := strings.TrimRight(string(line[:i]), " \t")
	for j := 0; j < len(name); j++ {
		// ftext: printable US-ASCII except colon (RFC 5322 section 3.6.8).
		if name[j] < 33 || name[j] > 126 {
			return ""
		}
	}
	return name
}

// lineEnding returns the line ending the message uses, judged by its first
// line, so that a prepended field matches the rest.
func lineEnding(msg []byte) string {
	if i := bytes.IndexByte(msg, '\n'); i > 0 && msg[i-1] == '\r' || i < 0 {
		return "\r\n"
	}
	return "\n"
}

// stripAuthResults returns the message without the Authentication-Results
// fields that claim authServID: RFC 8601 section 5 requires removing such
// fields, which only we may add, before adding our own. Fields of other
// authserv-ids stay.
func stripAuthResults(msg []byte, authServID string) []byte {
	fields, rest := splitHeader(msg)
	if !slices.ContainsFunc(fields, func(f field) bool { return claimsAuthServID(f, authServID) }) {
		return msg
	}
	out := make([]byte, 0, len(msg))
	for _, f := range fields {
		if claimsAuthServID(f, authServID) {
			continue
		}
		out = append(out, f.raw...)
	}
	return append(out, rest...)
}

// claimsAuthServID reports whether f is an Authentication-Results field that
// must go as a claim of authServID: one whose authserv-id is exactly that
// (compared case-insensitively, as host names are, a final dot ignored), or
// one with a control byte anywhere. RFC 5322 allows no control byte in a
// field, and a reader that cuts the field at one may see our authserv-id
// where the grammar sees another. The name is matched with white space and
// control bytes dropped, so that "Authentication-Results\x00:" or a colon
// on a continuation line does not hide a field from us that a lax reader
// takes for one.
func claimsAuthServID(f field, authServID string) bool {
	name, value, ok := bytes.Cut(f.raw, []byte(":"))
	if !ok || !strings.EqualFold(printable(name), "Authentication-Results") {
		return false
	}
	if hasControl(f.raw) {
		return true
	}
	id, ok := authServIDOf(unfold(value))
	return ok && strings.EqualFold(strings.TrimSuffix(id, "."), strings.TrimSuffix(authServID, "."))
}

// printable returns b without white space and control bytes.
func printable(b []byte) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c > ' ' && c != 0x7f {
			out = append(out, c)
		}
	}
	return string(out)
}

// authServIDOf returns the authserv-id that starts an Authentication-Results
// value, and whether there is one by the grammar of RFC 8601 section 2.2:
// [CFWS] authserv-id, where authserv-id is a value, a token or a
// quoted-string (RFC 2045 section 5.1), followed by CFWS, the ";" before the
// results, or nothing. Anything else ("mx.example/x", an unterminated quoted
// string, a token with 8-bit bytes) is no authserv-id at all, so none of ours.
func authServIDOf(v string) (string, bool) {
	v = skipCFWS(v)
	var id, rest string
	if strings.HasPrefix(v, `"`) {
		var ok bool
		if id, rest, ok = quotedString(v); !ok {
			return "", false
		}
	} else {
		n := 0
		for n < len(v) && isTokenChar(v[n]) {
			n++
		}
		if n == 0 {
			return "", false
		}
		id, rest = v[:n], v[n:]
	}
	if rest != "" && !strings.ContainsRune(" \t(;", rune(rest[0])) {
		return "", false
	}
	return id, true
}

// isTokenChar reports whether c may appear in an RFC 2045 token: US-ASCII
// except SPACE, CTLs and tspecials.
func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}

// quotedString reads the quoted-string starting v (RFC 5322 section 3.2.4)
// and returns its content, quoted-pairs resolved, and what follows it; ok is
// false when it does not end.
func quotedString(v string) (content, rest string, ok bool) {
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		switch v[i] {
		case '\\':
			if i+1 == len(v) {
				return "", "", false
			}
			i++
			b.WriteByte(v[i])
		case '"':
			return b.String(), v[i+1:], true
		default:
			b.WriteByte(v[i])
		}
	}
	return "", "", false
}

// skipCFWS drops leading white space and (nested) comments.
func skipCFWS(v string) string {
	depth := 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0, c == ' ', c == '\t', c == '\r', c == '\n':
		default:
			return v[i:]
		}
	}
	return ""
}

// errFrom explains why a message has no single usable RFC5322.From domain.
var errFrom = errors.New("message must have exactly one From field with addresses of one domain")

// fromDomain returns the domain of the RFC5322.From field, lower-cased.
// RFC 7489 section 6.6.1: a message with no From, several From fields, an
// unparsable From or addresses of several domains cannot be evaluated and is
// "typically rejected"; the caller rejects it.
func fromDomain(fields []field) (string, error) {
	var values []string
	for _, f := range fields {
		if strings.EqualFold(f.name, "From") {
			values = append(values, f.value())
		}
	}
	if len(values) != 1 {
		return "", fmt.Errorf("%w: found %d From fields", errFrom, len(values))
	}
	// Encoded words in display names are decoded with any charset passed
	// through as is: only the domain matters here, and an exotic charset in
	// a display name must not make a well-formed address unparsable.
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
	}}
	addrs, err := p.ParseList(values[0])
	if err != nil {
		return "", fmt.Errorf("%w: %v", errFrom, err)
	}
	domain := ""
	for _, a := range addrs {
		at := strings.LastIndexByte(a.Address, '@')
		d := strings.ToLower(strings.TrimSuffix(a.Address[at+1:], "."))
		if at < 0 || d == "" || strings.HasPrefix(d, "[") {
			return "", fmt.Errorf("%w: %q has no domain", errFrom, a.Address)
		}
		if _, ok := dns.IsDomainName(d); !ok {
			return "", fmt.Errorf("%w: %q is not a domain name", errFrom, d)
		}
		if domain != "" && d != domain {
			return "", fmt.Errorf("%w: %s and %s", errFrom, domain, d)
		}
		domain = d
	}
	if domain == "" {
		return "", fmt.Errorf("%w: no address", errFrom)
	}
	return domain, nil
}

// tagValue returns the value of tag in a DKIM tag-list (RFC 6376 section
// 3.2), white space removed, or "".
func tagValue(list, tag string) string {
	for _, kv := range strings.Split(list, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == tag {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}
