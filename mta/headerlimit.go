package mta

import (
	"bytes"
	"fmt"

	"github.com/emersion/go-smtp"
)

// MaxFoldedLines bounds the lines one header field may be folded over.
// Nothing legitimate comes near it (a To: with 500 addresses, one per line,
// is 500), and it keeps any code that unfolds a field by appending, as the
// DKIM library does, from costing more than linear time in practice.
const MaxFoldedLines = 1000

// DefaultMaxHeaderBytes is Exchange's fixed header limit (256 KB), which
// is refused with the same 552 5.3.4; Postfix's header_size_limit is 100 KB
// but it truncates instead of refusing.
const DefaultMaxHeaderBytes = 256 << 10

// checkHeader applies the header limits to a CRLF message in one linear
// pass, before anything parses the header: its size (MaxHeaderBytes), the
// lines a field is folded over (MaxFoldedLines), and control characters in
// field lines (NUL and the other C0 controls but TAB, and DEL), which no
// RFC 5322 field may hold and which let a forged Authentication-Results
// look different to each program that reads it.
func (s *Server) checkHeader(msg []byte) *smtp.SMTPError {
	limit := s.opts.MaxHeaderBytes
	folded := 0
	for pos := 0; pos < len(msg); {
		end := bytes.Index(msg[pos:], crlf)
		if end < 0 {
			end = len(msg) - pos
		}
		line := msg[pos : pos+end]
		if len(line) == 0 {
			return nil // the end of the header section
		}
		if pos+end > limit {
			return smtpErr(552, smtp.EnhancedCode{5, 3, 4}, fmt.Sprintf("message header exceeds %d bytes", limit))
		}
		if line[0] == ' ' || line[0] == '\t' {
			if pos == 0 {
				// It would continue whatever field the server prepends
				// (Received, Authentication-Results) with the client's text.
				return smtpErr(550, smtp.EnhancedCode{5, 6, 0}, "message starts with a continuation line")
			}
			if folded++; folded >= MaxFoldedLines {
				return smtpErr(552, smtp.EnhancedCode{5, 3, 4}, fmt.Sprintf("header field folded over more than %d lines", MaxFoldedLines))
			}
		} else {
			folded = 0
		}
		for _, c := range line {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return smtpErr(550, smtp.EnhancedCode{5, 6, 0}, "control character in message header")
			}
		}
		pos += end + 2
	}
	return nil
}
