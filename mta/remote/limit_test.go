package remote

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// scriptedConn plays the server's bytes from r and swallows our writes.
type scriptedConn struct {
	net.Conn
	r io.Reader
}

func (s *scriptedConn) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *scriptedConn) Write(p []byte) (int, error) { return len(p), nil }

func TestReplyLimits(t *testing.T) {
	lines := func(n int, line string) string { return strings.Repeat(line, n) }
	long := func(n int) string { return "250 " + strings.Repeat("x", n-6) + "\r\n" }
	tests := []struct {
		name    string
		replies []string // one per command written before it
		ok      bool
	}{
		{"100 lines", []string{lines(100, "250-x\r\n")}, true},
		{"101 lines", []string{lines(101, "250-x\r\n")}, false},
		{"line of 2048 bytes", []string{long(2048)}, true},
		{"line of 2049 bytes", []string{long(2049)}, false},
		{"64 KiB", []string{lines(32, long(2048))}, true},
		{"64 KiB and one byte", []string{lines(32, long(2048)) + "2"}, false},
		{"the count starts again with each command", []string{lines(100, "250-x\r\n"), lines(100, "250-x\r\n")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			server := &scriptedConn{}
			c := limitReplies(server)
			for _, reply := range tt.replies {
				server.r = strings.NewReader(reply)
				c.Write([]byte("NOOP\r\n"))
				if _, err = io.ReadAll(c); err != nil {
					break
				}
			}
			var le *replyLimitError
			if tt.ok && err != nil || !tt.ok && !errors.As(err, &le) {
				t.Errorf("read error %v, want ok %v", err, tt.ok)
			}
		})
	}
}
