package mta

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeRecorder is a listener whose connections record every write the
// server makes on them.
type writeRecorder struct {
	net.Listener
	mu     sync.Mutex
	writes []string
}

func (l *writeRecorder) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordedConn{Conn: c, l: l}, nil
}

func (l *writeRecorder) recorded() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.writes...)
}

type recordedConn struct {
	net.Conn
	l *writeRecorder
}

func (c *recordedConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.writes = append(c.l.writes, string(p))
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

// startRecorded serves e's MX on a listener that records the server's
// writes.
func startRecorded(t *testing.T, e *env) *writeRecorder {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &writeRecorder{Listener: inner}
	done := make(chan error, 1)
	go func() { done <- e.mx.Serve(l) }()
	t.Cleanup(func() {
		// Before the env's own cleanup, which shuts the server down after
		// this one ran.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.mx.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l
}

// checkWrites compares the server's writes, CRLF at the end trimmed, with
// the prefixes wanted.
func checkWrites(t *testing.T, l *writeRecorder, want ...string) {
	t.Helper()
	var got []string
	for _, w := range l.recorded() {
		got = append(got, strings.TrimSuffix(w, "\r\n"))
	}
	if len(got) != len(want) {
		t.Fatalf("%d writes, want %d:\n%q", len(got), len(want), got)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("write %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// Each reply goes out in one write, its lines together: the nine lines of
// the reply to EHLO were nine writes (go-smtp flushes each line), so nine
// segments and nine wake-ups of the client.
func TestReplies_OneWriteAReply(t *testing.T) {
	e := newEnv(t, nil)
	l := startRecorded(t, e)
	cl := dial(t, l.Addr().String())
	ehlo := cl.cmd("EHLO client.test", "250 ")
	if len(ehlo) < 3 {
		t.Fatalf("EHLO reply of %d lines: %q", len(ehlo), ehlo)
	}
	cl.cmd("MAIL FROM:<bob@example.net>", "250 ")
	cl.cmd("QUIT", "221 ")
	checkWrites(t, l, "220 ", strings.Join(ehlo, "\r\n"), "250 ", "221 ")
}

// The replies to a pipelined group go out together (RFC 2920 3.2), once
// the server has no command left to read or has a reply that is not a 250
// (a refusal, the 354): five replies in two writes; the reply to the
// message at once.
func TestReplies_PipelinedGroupInOneWrite(t *testing.T) {
	e := newEnv(t, nil)
	l := startRecorded(t, e)
	cl := dial(t, l.Addr().String())
	cl.cmd("EHLO client.test", "250 ")
	cl.write("MAIL FROM:<bob@example.net>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
	cl.expect("250 ")
	cl.expect("250 ")
	cl.expect("550 ")
	cl.expect("250 ")
	cl.expect("354 ")
	cl.write("Subject: pipelined\r\n\r\nhello\r\n.\r\n")
	cl.expect("250 ")
	cl.cmd("QUIT", "221 ")
	// A refusal is not held: it goes with the replies before it.
	checkWrites(t, l, "220 ", "250-", "250 ", "250 ", "250 ", "221 ")
	writes := l.recorded()
	if w := writes[2]; strings.Count(w, "\r\n") != 3 || !strings.HasSuffix(w, "\r\n550 5.1.1 no such user here\r\n") {
		t.Errorf("write %q, want the replies to MAIL, RCPT and the refused RCPT", w)
	}
	if w := writes[3]; strings.Count(w, "\r\n") != 2 || !strings.Contains(w, "\r\n354 ") {
		t.Errorf("write %q, want the replies to the last RCPT and DATA", w)
	}
	if got := e.mailbox("alice@example.org"); len(got) != 1 {
		t.Errorf("alice has %d messages, want 1", len(got))
	}
}

func TestContinuesReply(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"250-PIPELINING\r\n", true},
		{"250 SIZE 10\r\n", false},
		{"250-a\r\n250 b\r\n", false},
		{"250 a\r\n250-b\r\n", true},
		{"25-x\r\n", false},
		{"ab0-x\r\n", false},
		{"", false},
		{"-\r\n", false},
	}
	for _, tt := range tests {
		if got := continuesReply([]byte(tt.in)); got != tt.want {
			t.Errorf("continuesReply(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// A reply longer than maxHeldReply goes out in pieces of at most that
// size, every line of it, in order. (Its last line is a 221, which is
// never held.)
func TestReplies_LongReplyInPieces(t *testing.T) {
	inner, outer := net.Pipe()
	defer inner.Close()
	l := &writeRecorder{}
	tc := &trackedConn{srv: &Server{shims: newReplyShims(1000, testHost)}, conn: &recordedConn{Conn: inner, l: l}}
	received := make(chan string)
	go func() {
		var b strings.Builder
		buf := make([]byte, 1024)
		for {
			n, err := outer.Read(buf)
			b.Write(buf[:n])
			if err != nil || strings.Contains(b.String(), "221 end\r\n") {
				received <- b.String()
				return
			}
		}
	}()
	var want strings.Builder
	for i := range 300 {
		line := "250-line " + strings.Repeat("x", 20) + " " + strconv.Itoa(i) + "\r\n"
		want.WriteString(line)
		if _, err := tc.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	want.WriteString("221 end\r\n")
	if _, err := tc.Write([]byte("221 end\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := <-received; got != want.String() {
		t.Errorf("the client read %d octets, want %d", len(got), want.Len())
	}
	writes := l.recorded()
	if len(writes) < 2 || len(writes) > want.Len()/maxHeldReply+2 {
		t.Errorf("%d writes for %d octets", len(writes), want.Len())
	}
	for i, w := range writes {
		if len(w) > maxHeldReply+64 {
			t.Errorf("write %d of %d octets, over the bound", i, len(w))
		}
	}
}
