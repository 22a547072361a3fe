package pop3

import (
	"bufio"
	"bytes"
)

const (
	crlf       = "\r\n"
	terminator = ".\r\n"
)

// writeDotStuffed sends msg as the body of a multi-line response followed
// by the terminating ".\r\n" line (RFC 1939 section 3): every line that
// begins with "." gets one more ".". It writes straight from msg into w,
// splitting only where a line starts with ".", so a large message costs no
// per-line copies. A message that does not end in a line break gets CRLF
// before the terminator, or the client would read the "." as message text.
func writeDotStuffed(w *bufio.Writer, msg []byte) error {
	if len(msg) > 0 && msg[0] == '.' {
		w.WriteByte('.')
	}
	for {
		i := bytes.Index(msg, []byte("\n."))
		if i < 0 {
			break
		}
		// Write through the "\n", then the stuffing "."; the message's own
		// "." starts the next chunk.
		w.Write(msg[:i+1])
		w.WriteByte('.')
		msg = msg[i+1:]
	}
	w.Write(msg)
	if len(msg) > 0 && msg[len(msg)-1] != '\n' {
		w.WriteString(crlf)
	}
	_, err := w.WriteString(terminator)
	return err
}

// topCut returns how much of msg TOP n lines sends: the header, the blank
// line that ends it, and at most lines lines of the body (RFC 1939 section
// 7). A message without a blank line is all header and is sent whole.
func topCut(msg []byte, lines uint64) int {
	body := -1
	for start := 0; start < len(msg); {
		j := bytes.IndexByte(msg[start:], '\n')
		if j < 0 {
			break
		}
		line := msg[start : start+j]
		start += j + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			body = start
			break
		}
	}
	if body < 0 {
		return len(msg)
	}
	end := body
	for ; lines > 0 && end < len(msg); lines-- {
		j := bytes.IndexByte(msg[end:], '\n')
		if j < 0 {
			return len(msg)
		}
		end += j + 1
	}
	return end
}
