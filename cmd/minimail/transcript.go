package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
)

// transcript prints a protocol conversation as C:/S: lines with secrets
// masked. It serves two kinds of input: a recordingConn, which knows each
// byte's direction, and go-smtp's Client.DebugWriter, which gets both
// directions on one stream; there, replies are told apart by their
// three-digit code (RFC 5321 4.2), and DATA content by the 354 that starts it.
type transcript struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string // indentation for the hop

	partial  []byte // unterminated line from the mixed stream
	inData   bool   // between 354 and the final "."
	maskNext bool   // the line after a 334 challenge is a SASL secret
}

func newTranscript(w io.Writer, prefix string) *transcript {
	return &transcript{w: w, prefix: prefix}
}

// Write takes the mixed stream of a go-smtp client.
func (t *transcript) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, b...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := strings.TrimRight(string(t.partial[:i]), "\r")
		t.partial = t.partial[i+1:]
		t.classify(line)
	}
}

func isReply(line string) bool {
	return len(line) >= 3 && line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
		line[2] >= '0' && line[2] <= '9' && (len(line) == 3 || line[3] == ' ' || line[3] == '-')
}

func (t *transcript) classify(line string) {
	switch {
	case t.inData:
		if line == "." {
			t.inData = false
		}
		t.line("C", line)
	case isReply(line):
		t.inData = strings.HasPrefix(line, "354")
		t.maskNext = strings.HasPrefix(line, "334")
		t.line("S", line)
	default:
		t.line("C", t.mask(line))
	}
}

// mask hides SASL secrets: the AUTH initial response, and any line sent in
// answer to a 334 challenge. POP3's PASS too.
func (t *transcript) mask(line string) string {
	if t.maskNext {
		t.maskNext = false
		return "**** (secret masked)"
	}
	upper := strings.ToUpper(line)
	switch {
	case strings.HasPrefix(upper, "AUTH "):
		f := strings.Fields(line)
		if len(f) >= 3 {
			return f[0] + " " + f[1] + " **** (secret masked)"
		}
	case strings.HasPrefix(upper, "PASS "):
		return "PASS **** (secret masked)"
	}
	return line
}

// line prints one line; long message content is shortened, so a 5 MiB
// attachment does not flood the terminal.
func (t *transcript) line(dir, s string) {
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	fmt.Fprintf(t.w, "%s%s: %s\n", t.prefix, dir, s)
}

// recordingConn copies each direction of a connection into a transcript.
type recordingConn struct {
	net.Conn
	t          *transcript
	rbuf, wbuf []byte
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.rbuf = c.flushLines(c.rbuf, b[:n], "S")
	return n, err
}

func (c *recordingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.wbuf = c.flushLines(c.wbuf, b[:n], "C")
	return n, err
}

func (c *recordingConn) flushLines(buf, b []byte, dir string) []byte {
	buf = append(buf, b...)
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return buf
		}
		line := strings.TrimRight(string(buf[:i]), "\r")
		buf = buf[i+1:]
		if dir == "C" {
			line = c.t.mask(line)
		} else {
			c.t.maskNext = line == "+" || strings.HasPrefix(line, "+ ") // a POP3 SASL challenge
		}
		c.t.line(dir, line)
	}
}
