package mta

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"minimail/mta/header"
	"net/mail"
	"net/netip"
	"slices"
	"strings"
	"time"

	"minimail/mta/delivery"
)

// headerField is one field of a message header: its name and its value
// with folding removed (RFC 5322 2.2.3).
type headerField struct {
	Name  string
	Value string
}

var errHeaderSyntax = errors.New("malformed header section")

var crlf = []byte("\r\n")

// parseHeader returns the fields named in want (all fields if want is
// empty) of a CRLF message's header section, which ends at the first empty
// line (or with the message). A line that is neither a field nor a
// continuation is an error: a client that sends it has not produced an
// RFC 5322 message.
//
// The work is linear in the header size, however it is folded: unfolding
// by appending each continuation to a string was quadratic, and a few MB of
// continuation lines from one authenticated client pinned a CPU for hours.
// Fields not wanted are checked but not kept, so memory stays small too.
func parseHeader(msg []byte, want ...string) ([]headerField, error) {
	var fields []headerField
	// The field being read: its value is msg[start:end], folding included.
	name, start, end := "", 0, 0
	flush := func() {
		if name == "" || len(want) > 0 && !slices.ContainsFunc(want, func(w string) bool { return strings.EqualFold(w, name) }) {
			return
		}
		v := msg[start:end]
		if bytes.Contains(v, crlf) {
			v = bytes.ReplaceAll(v, crlf, nil) // RFC 5322 2.2.3 unfolding
		}
		fields = append(fields, headerField{Name: name, Value: strings.TrimSpace(string(v))})
	}
	for pos := 0; pos < len(msg); {
		lineEnd, next := len(msg), len(msg)
		if i := bytes.Index(msg[pos:], crlf); i >= 0 {
			lineEnd, next = pos+i, pos+i+2
		}
		line := msg[pos:lineEnd]
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if name == "" {
				return nil, errHeaderSyntax
			}
			end = lineEnd
		} else {
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 || !isFieldName(line[:colon]) {
				return nil, errHeaderSyntax
			}
			flush()
			name, start, end = string(line[:colon]), pos+colon+1, lineEnd
		}
		pos = next
	}
	flush()
	return fields, nil
}

// isFieldName checks RFC 5322 3.6.8 ftext: printable ASCII except ':'.
func isFieldName(b []byte) bool {
	for _, c := range b {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

func fieldsNamed(fields []headerField, name string) []headerField {
	var out []headerField
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f)
		}
	}
	return out
}

// addrParser reads From: values. Encoded display names in any charset are
// passed through undecoded: only the addresses matter here, and net/mail
// would otherwise reject names in charsets it does not know.
var addrParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// checkFrom enforces the submission rule against sender spoofing: the
// message has at most one From: field (RFC 5322 3.6) and every mailbox in
// it is the authenticated user's address, or one owns allows (an alias of
// the user's, see Senders). Sender: is held to the same rule (at most one,
// the user's), because clients show it as the real sender ("alice on
// behalf of ..."). It reports whether From: is missing, in which
// case the caller adds one.
func checkFrom(fields []headerField, user string, owns func(addr string) bool) (missing bool, err error) {
	for _, name := range []string{"From", "Sender"} {
		found := fieldsNamed(fields, name)
		switch len(found) {
		case 0:
			missing = missing || name == "From"
			continue
		case 1:
		default:
			return false, fmt.Errorf("more than one %s: field", name)
		}
		list, err := addrParser.ParseList(found[0].Value)
		if err != nil {
			return false, fmt.Errorf("unreadable %s: field: %w", name, err)
		}
		if len(list) == 0 {
			return false, fmt.Errorf("no address in %s: field", name)
		}
		for _, a := range list {
			if !sameAddress(a.Address, user) && (owns == nil || !owns(a.Address)) {
				return false, fmt.Errorf("%s: <%s> is not the authenticated user nor one of its aliases", name, a.Address)
			}
		}
	}
	return missing, nil
}

// stripBcc removes the Bcc: and Resent-Bcc: fields, continuation lines
// included, from the header section of a CRLF message that parseHeader
// accepts. RFC 5322 3.6.3 leaves it to the sender how blind copies stay
// blind; like sendmail -t, the MSA removes the field from every copy, so
// that no recipient, To:, Cc: or Bcc:, learns who else got one.
func stripBcc(msg []byte) []byte { return header.Remove(msg, "Bcc", "Resent-Bcc") }

// addressInDisplayName returns an address written in the display name of
// a mailbox of an originator field value, if it is not the mailbox's own:
// `"bob@x.test" <alice@x.test>` is alice's, but most clients show it as
// bob's. Such a name is allowed (it is only a name) but worth a log line.
func addressInDisplayName(value string) string {
	list, err := addrParser.ParseList(value)
	if err != nil {
		return ""
	}
	for _, a := range list {
		for _, word := range strings.FieldsFunc(a.Name, func(r rune) bool {
			return r <= ' ' || strings.ContainsRune(`<>()[]"',;:`, r)
		}) {
			at := strings.LastIndexByte(word, '@')
			if at > 0 && at < len(word)-1 && !sameAddress(word, a.Address) {
				return word
			}
		}
	}
	return ""
}

// submissionHeaderEdits makes the changes to a submitted message's header
// that follow its checks: fields is what checkFrom passed. Blind copies are
// made blind (stripBcc), and an originator field whose display name holds
// another address is logged.
func (ss *session) submissionHeaderEdits(tx *transaction, user string, fields []headerField, msg []byte) []byte {
	for _, f := range fields {
		if !strings.EqualFold(f.Name, "From") && !strings.EqualFold(f.Name, "Sender") {
			continue
		}
		if addressInDisplayName(f.Value) != "" {
			ss.srv.log.Warn("display name holds another address", "id", tx.id, "client", ss.ip.String(),
				"user", user, "field", f.Name, "value", logSafe(f.Value))
		}
	}
	return stripBcc(msg)
}

// submissionHeaders returns the fields RFC 6409 8.2 and 8.3 have the MSA
// add when missing (Date, Message-ID), plus From: when absent.
func submissionHeaders(fields []headerField, addFrom bool, user, hostname string, now time.Time) []byte {
	var b bytes.Buffer
	if addFrom {
		fmt.Fprintf(&b, "From: <%s>\r\n", user)
	}
	if len(fieldsNamed(fields, "Date")) == 0 {
		fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	if len(fieldsNamed(fields, "Message-ID")) == 0 {
		fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", delivery.NewID(), hostname)
	}
	return b.Bytes()
}

// trace is what a Received field records about one transaction.
type trace struct {
	Helo     string
	IP       netip.Addr
	Hostname string
	TLS      string // e.g. "TLS1.3 TLS_AES_128_GCM_SHA256"; "" without TLS
	User     string // authenticated user; "" for none
	ID       string
	Rcpts    []string
	Time     time.Time
}

// received formats the Received field RFC 5321 4.4 asks every SMTP server
// to prepend:
//
//	Received: from HELO ([IP]) by HOSTNAME with ESMTP[S][A] id ID
//		for <RCPT>; DATE
//
// The protocol name follows RFC 3848. The "for" clause names the recipient
// only when there is exactly one: listing several would reveal Bcc
// recipients to each other.
func received(t trace) []byte {
	proto := "ESMTP"
	if t.TLS != "" {
		proto += "S"
	}
	if t.User != "" {
		proto += "A"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: from %s (%s)\r\n", traceToken(t.Helo), addressLiteral(t.IP))
	if t.User != "" {
		fmt.Fprintf(&b, "\t(authenticated as %s)\r\n", traceToken(t.User))
	}
	fmt.Fprintf(&b, "\tby %s with %s", traceToken(t.Hostname), proto)
	if t.TLS != "" {
		fmt.Fprintf(&b, " (%s)", t.TLS)
	}
	fmt.Fprintf(&b, " id %s", t.ID)
	if len(t.Rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", traceToken(t.Rcpts[0]))
	}
	fmt.Fprintf(&b, "; %s\r\n", t.Time.Format(time.RFC1123Z))
	return b.Bytes()
}

// addressLiteral formats ip as RFC 5321 4.1.3 does.
func addressLiteral(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "[unknown]"
	case ip.Is4():
		return "[" + ip.String() + "]"
	}
	return "[IPv6:" + ip.String() + "]"
}

// traceToken keeps client-chosen text (the HELO name above all) from
// breaking the Received syntax: characters that would end a comment, the
// clause or the line become '_'.
func traceToken(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`()<>;\"`, r) {
			return '_'
		}
		return r
	}, s)
}
