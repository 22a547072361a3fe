package mta

import "bytes"

// Stored and relayed messages are CRLF-only, and this package is the one
// that makes them so: every message enters minimail through Data, which
// normalises it once, before any check reads it. Everything after relies
// on it: the hooks (Verify and Sign keep CRLF text CRLF), Local (the
// mailbox copy) and Queue (the copy sent on, dot-stuffed, to the next hop).
// A bare CR or LF never ends DATA in go-smtp, and with none left no later
// hop can be made to see an end of data (SMTP smuggling) that we did not.

// normalizeCRLF returns msg with every line ending (CRLF, bare LF, bare CR)
// written as CRLF, and a final CRLF if the last line lacked one, in one
// pass. It returns msg itself when nothing needs changing, the usual case.
func normalizeCRLF(msg []byte) []byte {
	i := cleanPrefix(msg)
	if i == len(msg) && (i == 0 || msg[i-1] == '\n') {
		return msg
	}
	out := make([]byte, i, len(msg)+len(msg)/32+2)
	copy(out, msg[:i])
	for ; i < len(msg); i++ {
		switch c := msg[i]; c {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(msg) && msg[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return out
}

// cleanPrefix returns the length of the longest prefix of msg in which
// every CR and LF is part of a CRLF pair. It goes a line at a time with
// bytes.IndexByte (vector instructions) rather than an octet at a time:
// every message is scanned whole, and for big ones the octet loop was a
// tenth of the server's CPU.
func cleanPrefix(msg []byte) int {
	for i := 0; ; {
		rest := msg[i:]
		j := bytes.IndexByte(rest, '\n')
		if j < 0 {
			// No LF left: any CR in the rest is a bare one.
			if k := bytes.IndexByte(rest, '\r'); k >= 0 {
				return i + k
			}
			return len(msg)
		}
		// rest[:j] ends the line; a CR may only be its last octet.
		line := rest[:j]
		paired := j > 0 && line[j-1] == '\r'
		if paired {
			line = line[:j-1]
		}
		if k := bytes.IndexByte(line, '\r'); k >= 0 {
			return i + k // a bare CR before the line's end
		}
		if !paired {
			return i + j // a bare LF
		}
		i += j + 1
	}
}
