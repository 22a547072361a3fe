package remote

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// peer is the server end of one connection to a hostile next hop.
type peer struct {
	conn net.Conn
	r    *bufio.Reader
	sent *atomic.Int64
}

func (p *peer) send(s string) bool {
	n, err := io.WriteString(p.conn, s)
	p.sent.Add(int64(n))
	return err == nil
}

// expect reads one command line and reports whether it starts with verb.
func (p *peer) expect(verb string) bool {
	line, err := p.r.ReadString('\n')
	return err == nil && strings.HasPrefix(strings.ToUpper(line), verb)
}

// readBody reads a DATA body up to its terminating dot line.
func (p *peer) readBody() bool {
	for {
		line, err := p.r.ReadString('\n')
		if err != nil {
			return false
		}
		if line == ".\r\n" {
			return true
		}
	}
}

// flood writes chunk over and over until total bytes are out or the
// client hangs up.
func (p *peer) flood(chunk string, total int64) {
	b := []byte(chunk)
	for sent := int64(0); sent < total; sent += int64(len(b)) {
		n, err := p.conn.Write(b)
		p.sent.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// trickle writes s one byte at a time, every gap, forever (until the
// client hangs up).
func (p *peer) trickle(s string, gap time.Duration) {
	for i := 0; ; i = (i + 1) % len(s) {
		if _, err := p.conn.Write([]byte{s[i]}); err != nil {
			return
		}
		p.sent.Add(1)
		time.Sleep(gap)
	}
}

// greeted sends a greeting and answers EHLO with ext as the last line.
func (p *peer) greeted(ext string) bool {
	return p.send("220 hostile.test ESMTP\r\n") && p.expect("EHLO") && p.send("250-hostile.test\r\n250 "+ext+"\r\n")
}

// inTransaction takes the session up to the point where a command's
// reply is due: "MAIL", "RCPT" (the first one), "DATA" or "." (the end of
// the body).
func (p *peer) inTransaction(upTo string) bool {
	if !p.greeted("8BITMIME") || !p.expect("MAIL") {
		return false
	}
	if upTo == "MAIL" {
		return true
	}
	if !p.send("250 2.1.0 ok\r\n") {
		return false
	}
	for {
		line, err := p.r.ReadString('\n')
		switch verb := strings.ToUpper(strings.TrimSpace(line)); {
		case err != nil:
			return false
		case strings.HasPrefix(verb, "RCPT"):
			if upTo == "RCPT" {
				return true
			}
			if !p.send("250 2.1.5 ok\r\n") {
				return false
			}
		case verb == "DATA":
			if upTo == "DATA" {
				return true
			}
			return p.send("354 go ahead\r\n") && p.readBody()
		default:
			return false
		}
	}
}

// startHostile runs script for every connection to a loopback listener
// and returns its address and a count of the bytes the scripts sent.
func startHostile(t *testing.T, script func(p *peer)) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	sent := new(atomic.Int64)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				script(&peer{conn: conn, r: bufio.NewReader(conn), sent: sent})
			}()
		}
	}()
	return l.Addr().String(), sent
}

// floodBytes is what a hostile peer tries to make us read: far more
// than any reply needs, so that reading it all would show in the heap.
const floodBytes = 64 << 20

// maxAllocGrowth is the most a session with a hostile peer may allocate
// in total, whatever the peer sends.
const maxAllocGrowth = 8 << 20

func TestDeliverBoundsEveryReplyFromAHostilePeer(t *testing.T) {
	line := "250-" + strings.Repeat("x", 70) + "\r\n"
	tests := []struct {
		name   string
		script func(p *peer)
	}{
		{"greeting that never ends", func(p *peer) {
			p.flood("220-"+strings.Repeat("x", 70)+"\r\n", floodBytes)
		}},
		{"greeting without a line feed", func(p *peer) {
			p.send("220 ")
			p.flood(strings.Repeat("x", 4096), floodBytes)
		}},
		{"EHLO reply with endless continuation lines", func(p *peer) {
			if p.send("220 hostile.test\r\n") && p.expect("EHLO") {
				p.flood(line, floodBytes)
			}
		}},
		{"STARTTLS reply without a line feed", func(p *peer) {
			if p.greeted("STARTTLS") && p.expect("STARTTLS") && p.send("220 ") {
				p.flood(strings.Repeat("x", 4096), floodBytes)
			}
		}},
		{"STARTTLS reply with endless continuation lines", func(p *peer) {
			if p.greeted("STARTTLS") && p.expect("STARTTLS") {
				p.flood("220-"+strings.Repeat("x", 70)+"\r\n", floodBytes)
			}
		}},
		{"endless MAIL reply", func(p *peer) {
			if p.inTransaction("MAIL") {
				p.flood(line, floodBytes)
			}
		}},
		{"endless RCPT reply", func(p *peer) {
			if p.inTransaction("RCPT") {
				p.flood(line, floodBytes)
			}
		}},
		{"endless DATA reply", func(p *peer) {
			if p.inTransaction("DATA") {
				p.flood("354-"+strings.Repeat("x", 70)+"\r\n", floodBytes)
			}
		}},
		{"endless reply to the message", func(p *peer) {
			if p.inTransaction(".") {
				p.flood(line, floodBytes)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, sent := startHostile(t, tt.script)
			c := &Client{Hostname: "mx.a.test", Routes: map[string]string{"b.test": addr}, Timeout: 5 * time.Second}
			before := totalAlloc()
			res := c.Deliver(context.Background(), "bob@a.test", []string{"x@b.test", "y@b.test"}, []byte(testMsg))
			grown := totalAlloc() - before
			for i := range res {
				wantErr(t, i, res[i], "4.5.0", true)
			}
			if grown > maxAllocGrowth {
				t.Errorf("the session allocated %d MB while the peer sent %d MB; want at most %d MB",
					grown>>20, sent.Load()>>20, maxAllocGrowth>>20)
			}
		})
	}
}

func TestDeliverGivesUpOnAReplyTrickledByteByByte(t *testing.T) {
	tests := []struct {
		name   string
		script func(p *peer)
	}{
		{"greeting", func(p *peer) { p.trickle("220-hostile.test\r\n", time.Millisecond) }},
		{"EHLO reply", func(p *peer) {
			if p.send("220 hostile.test\r\n") && p.expect("EHLO") {
				p.trickle("250-hostile.test\r\n", time.Millisecond)
			}
		}},
		{"STARTTLS reply", func(p *peer) {
			if p.greeted("STARTTLS") && p.expect("STARTTLS") {
				p.trickle("220-wait\r\n", time.Millisecond)
			}
		}},
		{"reply to the message", func(p *peer) {
			if p.inTransaction(".") {
				p.trickle("250-queued\r\n", time.Millisecond)
			}
		}},
	}
	const timeout = 200 * time.Millisecond
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := startHostile(t, tt.script)
			c := &Client{Hostname: "mx.a.test", Routes: map[string]string{"b.test": addr}, Timeout: timeout}
			start := time.Now()
			res := c.Deliver(context.Background(), "bob@a.test", []string{"x@b.test"}, []byte(testMsg))
			// The end of DATA may take twice the timeout; allow 10x slack
			// on top for a busy machine.
			if took := time.Since(start); took > 2*timeout*10 {
				t.Errorf("delivery took %v against a trickling peer, want about %v", took, timeout)
			}
			var e *Error
			if !errors.As(res[0], &e) || !e.Temporary() {
				t.Errorf("result %v, want a temporary error", res[0])
			}
		})
	}
}

// totalAlloc is the number of bytes this process has allocated on the
// heap so far, freed or not: a peak that garbage collection cannot hide.
func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// pipeDialer connects every dial to an in-memory server that sends
// script, whatever the client says, and hangs up once the client has read
// it all and waits for more.
type pipeDialer struct{ script []byte }

func (d pipeDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	client, server := net.Pipe()
	go io.Copy(io.Discard, server)
	go func() {
		server.Write(d.script)
		// A write to a net.Pipe returns when the other end reads, even
		// an empty one: so the client is now waiting on us.
		server.Write(nil)
		server.Close()
	}()
	return client, nil
}

// FuzzSession plays arbitrary server bytes to a delivery: whatever the
// next hop sends, Deliver must return, without a panic, one well-formed
// result per recipient.
func FuzzSession(f *testing.F) {
	f.Fuzz(func(t *testing.T, script []byte) {
		c := &Client{Hostname: "mx.a.test", Routes: map[string]string{"b.test": "192.0.2.1:25"},
			Dialer: pipeDialer{script: script}, Timeout: 2 * time.Second}
		done := make(chan []error, 1)
		go func() {
			done <- c.Deliver(context.Background(), "bob@a.test", []string{"x@b.test", "y@b.test", "z@b.test"}, []byte(testMsg))
		}()
		var res []error
		select {
		case res = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Deliver hung on a peer that hung up")
		}
		if len(res) != 3 {
			t.Fatalf("%d results for 3 recipients", len(res))
		}
		for i, err := range res {
			if err == nil {
				continue
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("rcpt %d: %v is not an *Error", i, err)
			}
			if !statusRE.MatchString(e.Status()) || strings.ContainsAny(e.Error(), "\r\n") {
				t.Fatalf("rcpt %d: status %q, text %q", i, e.Status(), e.Error())
			}
		}
	})
}
