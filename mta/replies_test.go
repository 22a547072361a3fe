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

// Each reply goes out in one write, its lines together: the ten lines of
// the reply to EHLO were ten writes (go-smtp flushes each line), so ten
// segments and ten wake-ups of the client. Replies of one line are not
// held back.
func TestReplies_OneWriteAReply(t *testing.T) {
	e := newEnv(t, nil)
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

	cl := dial(t, l.Addr().String())
	ehlo := cl.cmd("EHLO client.test", "250 ")
	if len(ehlo) < 3 {
		t.Fatalf("EHLO reply of %d lines: %q", len(ehlo), ehlo)
	}
	cl.cmd("MAIL FROM:<bob@example.net>", "250 ")
	cl.cmd("QUIT", "221 ")

	writes := l.recorded()
	var got []string
	for _, w := range writes {
		got = append(got, strings.TrimSuffix(w, "\r\n"))
	}
	want := []string{"220 ", strings.Join(ehlo, "\r\n"), "250 ", "221 "}
	if len(got) != len(want) {
		t.Fatalf("%d writes for 4 replies, want one each:\n%q", len(got), got)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("write %d = %q, want %q", i, got[i], want[i])
		}
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
// size, every line of it, in order.
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
			if err != nil || strings.Contains(b.String(), "250 end\r\n") {
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
	want.WriteString("250 end\r\n")
	if _, err := tc.Write([]byte("250 end\r\n")); err != nil {
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
