// Package header edits the header section of a CRLF message in place of
// a full parse: the MX and the MSA remove fields that a sender must not set
// (Bcc on submission, forged spam verdicts on the MX) without copying a
// message that has none of them.
package header

import (
	"bytes"
	"slices"
	"strings"
)

// Remove returns the CRLF message msg without the header fields
// named (any case), continuation lines included; msg itself when it has
// none of them.
func Remove(msg []byte, names ...string) []byte {
	var out []byte // nil until a field is dropped: most messages have none
	dropping := false
	pos := 0
	for pos < len(msg) {
		next := len(msg)
		if i := bytes.Index(msg[pos:], []byte("\r\n")); i >= 0 {
			next = pos + i + 2
		}
		line := msg[pos:next]
		if bytes.HasPrefix(line, []byte("\r\n")) {
			break // the empty line that ends the header section
		}
		if line[0] != ' ' && line[0] != '\t' {
			name, _, _ := bytes.Cut(line, []byte(":"))
			n := strings.TrimRight(string(name), " \t")
			dropping = slices.ContainsFunc(names, func(w string) bool { return strings.EqualFold(w, n) })
		}
		switch {
		case dropping && out == nil:
			out = append(make([]byte, 0, len(msg)), msg[:pos]...)
		case !dropping && out != nil:
			out = append(out, line...)
		}
		pos = next
	}
	if out == nil {
		return msg
	}
	return append(out, msg[pos:]...)
}
