package pop3

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func stuffed(msg string) string {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	writeDotStuffed(w, []byte(msg))
	w.Flush()
	return b.String()
}

func TestWriteDotStuffed(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{".", "..\r\n.\r\n"},
		{"..x\r\n", "...x\r\n.\r\n"},
		{"a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
		{"a\r\n.b\r\n.c\r\n", "a\r\n..b\r\n..c\r\n.\r\n"},
		{"a\r\n\r\n.\r\n", "a\r\n\r\n..\r\n.\r\n"},
		{"a.b\r\n x.\r\n", "a.b\r\n x.\r\n.\r\n"},
		{"no newline", "no newline\r\n.\r\n"},
		{"a\r\n.", "a\r\n..\r\n.\r\n"},
		{"bare\n.lf\n", "bare\n..lf\n.\r\n"},
		{"\xff\xfe.\r\n.\x80\r\n", "\xff\xfe.\r\n..\x80\r\n.\r\n"},
	}
	for _, tt := range tests {
		if got := stuffed(tt.in); got != tt.want {
			t.Errorf("stuffed(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestWriteDotStuffed_NoAllocations: streaming a message through the
// connection's bufio.Writer makes no per-line copies (or any allocation).
func TestWriteDotStuffed_NoAllocations(t *testing.T) {
	msg := []byte(strings.Repeat("line\r\n.dot\r\n..two\r\n", 10000))
	w := bufio.NewWriterSize(io.Discard, 32<<10)
	allocs := testing.AllocsPerRun(10, func() { writeDotStuffed(w, msg) })
	if allocs != 0 {
		t.Fatalf("writeDotStuffed allocates %v times per message", allocs)
	}
}

func TestTopCut(t *testing.T) {
	const m = "A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"
	tests := []struct {
		msg   string
		lines uint64
		want  string
	}{
		{m, 0, "A: 1\r\nB: 2\r\n\r\n"},
		{m, 1, "A: 1\r\nB: 2\r\n\r\nl1\r\n"},
		{m, 3, m},
		{m, 1 << 63, m},
		{"A: 1\r\n", 5, "A: 1\r\n"},                 // no body: all header
		{"A: 1\r\n\r\n", 5, "A: 1\r\n\r\n"},         // empty body
		{"\r\nbody\r\nmore\r\n", 1, "\r\nbody\r\n"}, // empty header
		{"A: 1\r\n\r\nl1\r\nlast", 2, "A: 1\r\n\r\nl1\r\nlast"},
		{"A: 1\n\nl1\nl2\n", 1, "A: 1\n\nl1\n"}, // bare LF
		{"", 3, ""},
	}
	for _, tt := range tests {
		if got := tt.msg[:topCut([]byte(tt.msg), tt.lines)]; got != tt.want {
			t.Errorf("topCut(%q, %d) keeps %q, want %q", tt.msg, tt.lines, got, tt.want)
		}
	}
}

// bigMessage builds a CRLF message of about size octets: 8-bit text, lines
// that start with "." or are only ".", and base64-looking attachment lines.
func bigMessage(size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	var b bytes.Buffer
	b.WriteString("From: bob@example.org\r\nTo: alice@example.org\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\n")
	for b.Len() < size {
		switch r.IntN(6) {
		case 0:
			b.WriteString(".\r\n")
		case 1:
			b.WriteString(".. starts with dots\r\n")
		case 2:
			b.WriteString("Grüße, 8-bit: \xe9\xff\x80\r\n")
		default:
			for range 76 {
				b.WriteByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[r.IntN(64)])
			}
			b.WriteString("\r\n")
		}
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// TestRETR_ByteExact: what RETR and TOP deliver, once unstuffed, is exactly
// what the maildrop holds, and the octet count matches.
func TestRETR_ByteExact(t *testing.T) {
	msgs := [][]byte{
		[]byte(msg1),
		[]byte(msg2),
		[]byte(".\r\n..\r\n...\r\n.x\r\n"),
		[]byte("Subject: 8bit\r\n\r\n\x00\x01\xfe\xff\r\n\xc3\xa9t\xc3\xa9\r\n"),
		bigMessage(5<<20, 1),
	}
	st := newFakeMaildrop()
	st.users[alice] = alicePW
	for _, m := range msgs {
		st.add(alice, string(m))
	}
	h := startServer(t, st, Options{AllowInsecureAuth: true})
	c := greeted(t, h.addr)
	c.login(alice, alicePW)
	for i, m := range msgs {
		n := i + 1
		c.cmd(fmt.Sprintf("RETR %d", n), fmt.Sprintf("+OK %d octets", len(m)))
		if got := c.body(); !bytes.Equal(got, m) {
			t.Fatalf("RETR %d: got %d octets, want %d, first difference at %d", n, len(got), len(m), firstDiff(got, m))
		}
		c.cmd(fmt.Sprintf("LIST %d", n), fmt.Sprintf("+OK %d %d", n, len(m)))
		c.cmd(fmt.Sprintf("TOP %d 10", n), "+OK")
		want := m[:topCut(m, 10)]
		if got := c.body(); !bytes.Equal(got, want) {
			t.Fatalf("TOP %d 10: got %q, want %q", n, got, want)
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestRETR_Pipelined sends all RETRs in one write and checks the answers
// arrive whole and in order.
func TestRETR_Pipelined(t *testing.T) {
	st := newFakeMaildrop()
	st.users[alice] = alicePW
	var msgs [][]byte
	for i := range 50 {
		m := bigMessage(1000+i*997, uint64(i))
		msgs = append(msgs, m)
		st.add(alice, string(m))
	}
	h := startServer(t, st, Options{AllowInsecureAuth: true})
	c := greeted(t, h.addr)
	cmds := []string{"USER " + alice, "PASS " + alicePW}
	for i := range msgs {
		cmds = append(cmds, fmt.Sprintf("RETR %d", i+1))
	}
	c.send(append(cmds, "QUIT")...)
	c.expect("+OK send PASS")
	c.expectPrefix("+OK alice@example.org has 50 messages")
	for i, m := range msgs {
		c.expect(fmt.Sprintf("+OK %d octets", len(m)))
		if !bytes.Equal(c.body(), m) {
			t.Fatalf("pipelined RETR %d: wrong body", i+1)
		}
	}
	c.expectPrefix("+OK pop.test POP3 server signing off")
}
