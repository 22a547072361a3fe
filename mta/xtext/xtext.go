// Package xtext is the "xtext" encoding of RFC 3461 4, in which the DSN
// parameters ENVID and ORCPT travel in SMTP commands and the
// Original-Envelope-Id and Original-Recipient fields of a delivery status
// notification (RFC 3464 2.2.1, 2.3.1) are written:
//
//	xtext   = *( xchar / hexchar )
//	xchar   = any ASCII CHAR between "!" (33) and "~" (126) inclusive,
//	          except for "+" and "="
//	hexchar = ASCII "+" immediately followed by two upper case
//	          hexadecimal digits
//
// Decode is strict (a lower-case digit, a lone "+", a raw "=" or a byte
// outside 33..126 is an error); Encode writes the shortest form, a
// hexchar only where an xchar cannot stand, so Decode(Encode(s)) == s for
// every string and Encode(Decode(x)) == x for every canonical x.
package xtext

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSyntax is wrapped by every Decode error.
var ErrSyntax = errors.New("malformed xtext")

const hexDigits = "0123456789ABCDEF"

// isXchar reports whether c may stand for itself in xtext.
func isXchar(c byte) bool { return c >= '!' && c <= '~' && c != '+' && c != '=' }

// Encode returns s as xtext, byte by byte.
func Encode(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isXchar(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('+')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	return b.String()
}

// Decode returns the text x encodes, or an error wrapping ErrSyntax that
// names the offset of the first fault.
func Decode(x string) (string, error) {
	var b strings.Builder
	b.Grow(len(x))
	for i := 0; i < len(x); i++ {
		c := x[i]
		switch {
		case c == '+':
			if i+2 >= len(x) {
				return "", fmt.Errorf("%w: incomplete hexchar at offset %d", ErrSyntax, i)
			}
			hi, lo := unhex(x[i+1]), unhex(x[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("%w: bad hexchar %q at offset %d", ErrSyntax, x[i:i+3], i)
			}
			b.WriteByte(byte(hi<<4 | lo))
			i += 2
		case isXchar(c):
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("%w: character %q at offset %d", ErrSyntax, c, i)
		}
	}
	return b.String(), nil
}

// unhex is the value of an upper-case hexadecimal digit, or -1.
func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
