package msgauth

import (
	"errors"
	"fmt"
)

// The DKIM library (go-msgauth v0.7.0) unfolds a field by appending each
// continuation line to a string, so a field folded over n lines costs n
// copies of itself, and it finds each field named in h= by scanning the whole
// header, so a signature naming k fields costs k scans. Both are quadratic
// in the size of a hostile header, and both happen before any signature is
// checked. These bounds keep the work linear in the message size with a
// small constant; messages beyond them never reach the library.
const (
	// MaxHeaderBytes bounds the header section (RFC 5322 section 2.1, the
	// empty line excluded) that Verify and Sign hand to the library.
	MaxHeaderBytes = 1 << 20
	// MaxFieldLines bounds the lines one header field may span, its first
	// line included (RFC 5322 section 2.2.3 folding). Real fields span a few
	// lines; a long References field some dozens.
	MaxFieldLines = 1000
	// maxFieldScans bounds the fields the library looks at while picking the
	// fields a signature lists: for each name in h= it scans every header
	// field. A 50-field header with 30 names in h= costs 1500.
	maxFieldScans = 1 << 22
)

// HeaderShape is what MeasureHeader finds in a message's header section.
type HeaderShape struct {
	// Bytes is the length of the header section: every field line, line
	// endings included, not the empty line that ends it.
	Bytes int
	// Fields counts the header fields; a line without a colon that is not a
	// continuation line counts as a field, as the DKIM library reads it.
	Fields int
	// MaxFieldLines is the most lines any one field spans: 1 for a field on
	// one line, 0 for an empty header section.
	MaxFieldLines int
	// Control reports a control byte in the header section other than TAB
	// and the CRLF or LF line endings: NUL, a bare CR, DEL, ESC, ... RFC 5322
	// section 3.2 allows none of them, and a reader may cut a field at one
	// and see another value than a parser that does not.
	Control bool
}

// MeasureHeader measures the header section of msg in one pass, in time
// linear in its length, with the field boundaries of splitHeader: a line
// starting with SP or TAB continues the field before it, bare LF line
// endings count like CRLF.
func MeasureHeader(msg []byte) HeaderShape {
	var s HeaderShape
	lines := 0 // lines of the current field
	for i := 0; i < len(msg); {
		if msg[i] == '\n' || msg[i] == '\r' && i+1 < len(msg) && msg[i+1] == '\n' {
			break // the empty line ending the header section
		}
		if (msg[i] != ' ' && msg[i] != '\t') || s.Fields == 0 {
			s.Fields++
			lines = 0
		}
		lines++
		s.MaxFieldLines = max(s.MaxFieldLines, lines)
		for ; i < len(msg); i++ {
			c := msg[i]
			if c == '\n' {
				i++
				break
			}
			if isControl(msg, i) {
				s.Control = true
			}
		}
		s.Bytes = i
	}
	return s
}

// errHeaderShape explains why a message is not handed to the DKIM library.
var errHeaderShape = errors.New("header too costly to process")

// check returns an error wrapping errHeaderShape when the header is beyond
// the bounds above.
func (s HeaderShape) check() error {
	switch {
	case s.Bytes > MaxHeaderBytes:
		return fmt.Errorf("%w: header section of %d bytes, more than %d", errHeaderShape, s.Bytes, MaxHeaderBytes)
	case s.MaxFieldLines > MaxFieldLines:
		return fmt.Errorf("%w: a field folded over %d lines, more than %d", errHeaderShape, s.MaxFieldLines, MaxFieldLines)
	}
	return nil
}

// checkFieldScans returns an error wrapping errHeaderShape when picking
// names field names out of a header of fields fields would scan more than
// maxFieldScans fields.
func checkFieldScans(fields, names int) error {
	if int64(fields)*int64(names) > maxFieldScans {
		return fmt.Errorf("%w: %d field names to find among %d fields", errHeaderShape, names, fields)
	}
	return nil
}

// isControl reports whether b[i] is a control byte other than TAB, LF and
// the CR of a CRLF.
func isControl(b []byte, i int) bool {
	c := b[i]
	switch {
	case c == '\t' || c == '\n':
		return false
	case c == '\r':
		return i+1 == len(b) || b[i+1] != '\n'
	}
	return c < ' ' || c == 0x7f
}

// hasControl reports whether b holds a control byte in the sense of
// isControl.
func hasControl(b []byte) bool {
	for i := range b {
		if isControl(b, i) {
			return true
		}
	}
	return false
}
