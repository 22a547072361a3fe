package remote

import (
	"fmt"
	"net"
)

// Bounds on one reply from a remote server. The next hop is chosen by
// whoever controls the recipient's DNS, so it may be hostile; these keep
// what it can make us buffer small, however much it sends. go-smtp bounds
// line length but not the number of continuation lines, and textproto
// gathers a whole multi-line reply in memory.
const (
	// maxReplyLineBytes is four times the 512 octets RFC 5321 4.5.3.1.5
	// allows a reply line, CRLF included. go-smtp's own limit (2000)
	// trips first on the replies it reads; this one guards startTLS.
	maxReplyLineBytes = 2048
	// maxReplyLines is generous for EHLO, the longest reply in practice
	// (a dozen extensions).
	maxReplyLines = 100
	// maxReplyBytes bounds the bytes read after one command, including
	// what the reader buffers ahead.
	maxReplyBytes = 64 << 10
)

// Time per reply is bounded elsewhere: go-smtp sets a deadline of
// Client.Timeout (twice that after DATA) before every command, and
// startTLS does the same for its own exchange, so a server trickling a
// reply byte by byte is cut off when the deadline passes.

// replyLimitError says a server's reply broke one of the bounds above.
type replyLimitError struct{ what string }

func (e *replyLimitError) Error() string { return "reply " + e.what }

// replyLimitedConn counts what the server sends after each command we
// write and fails the read that breaks a bound. The count starts again
// with every write: SMTP replies answer commands (RFC 5321 4.2), and
// go-smtp never pipelines. A broken bound leaves the connection broken.
type replyLimitedConn struct {
	net.Conn
	lineBytes, lines, bytes int
	err                     error
}

func limitReplies(conn net.Conn) *replyLimitedConn { return &replyLimitedConn{Conn: conn} }

func (c *replyLimitedConn) Write(p []byte) (int, error) {
	if c.err == nil {
		c.lineBytes, c.lines, c.bytes = 0, 0, 0
	}
	return c.Conn.Write(p)
}

func (c *replyLimitedConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	c.bytes += n
	if c.bytes > maxReplyBytes {
		c.err = &replyLimitError{fmt.Sprintf("longer than %d bytes", maxReplyBytes)}
		return 0, c.err
	}
	for _, b := range p[:n] {
		c.lineBytes++
		if c.lineBytes > maxReplyLineBytes {
			c.err = &replyLimitError{fmt.Sprintf("line longer than %d bytes", maxReplyLineBytes)}
			return 0, c.err
		}
		if b == '\n' {
			c.lines++
			c.lineBytes = 0
		}
	}
	if c.lines > maxReplyLines {
		c.err = &replyLimitError{fmt.Sprintf("of more than %d lines", maxReplyLines)}
		return 0, c.err
	}
	return n, err
}
