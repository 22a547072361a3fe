package msgauth

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestMeasureHeader(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want HeaderShape
	}{
		{"empty message", "", HeaderShape{}},
		{"no header section", "\r\nbody\r\n", HeaderShape{}},
		{"two fields", "A: 1\r\nB: 2\r\n\r\nbody", HeaderShape{Bytes: 12, Fields: 2, MaxFieldLines: 1}},
		{"bare LF", "A: 1\nB: 2\n\nbody", HeaderShape{Bytes: 10, Fields: 2, MaxFieldLines: 1}},
		{"folded over three lines", "A: 1\r\n 2\r\n\t3\r\nB: 4\r\n\r\n", HeaderShape{Bytes: 20, Fields: 2, MaxFieldLines: 3}},
		{"continuation first counts as a field", " lead\r\nA: 1\r\n\r\n", HeaderShape{Bytes: 13, Fields: 2, MaxFieldLines: 1}},
		{"line without colon is a field", "A: 1\r\nnot a field\r\n\r\n", HeaderShape{Bytes: 19, Fields: 2, MaxFieldLines: 1}},
		{"no empty line, no final line ending", "A: 1\r\n 2", HeaderShape{Bytes: 8, Fields: 1, MaxFieldLines: 2}},
		{"body not measured", "A: 1\r\n\r\nB: \x00\r\n 2\r\n 3\r\n", HeaderShape{Bytes: 6, Fields: 1, MaxFieldLines: 1}},
		{"TAB is no control", "A:\t1\r\n\r\n", HeaderShape{Bytes: 6, Fields: 1, MaxFieldLines: 1}},
		{"8-bit is no control", "A: caf\xc3\xa9\r\n\r\n", HeaderShape{Bytes: 10, Fields: 1, MaxFieldLines: 1}},
		{"NUL", "A: 1\x00\r\n\r\n", HeaderShape{Bytes: 7, Fields: 1, MaxFieldLines: 1, Control: true}},
		{"NUL in a name", "A\x00: 1\r\n\r\n", HeaderShape{Bytes: 7, Fields: 1, MaxFieldLines: 1, Control: true}},
		{"ESC", "A: \x1b[1m\r\n\r\n", HeaderShape{Bytes: 9, Fields: 1, MaxFieldLines: 1, Control: true}},
		{"DEL", "A: \x7f\r\n\r\n", HeaderShape{Bytes: 6, Fields: 1, MaxFieldLines: 1, Control: true}},
		{"bare CR inside", "A: 1\r2\r\n\r\n", HeaderShape{Bytes: 8, Fields: 1, MaxFieldLines: 1, Control: true}},
		{"CR before CRLF", "A: 1\r\r\n\r\n", HeaderShape{Bytes: 7, Fields: 1, MaxFieldLines: 1, Control: true}},
		{"CR at the very end", "A: 1\r", HeaderShape{Bytes: 5, Fields: 1, MaxFieldLines: 1, Control: true}},
		{"control on a continuation line", "A: 1\r\n \x01\r\n\r\n", HeaderShape{Bytes: 10, Fields: 1, MaxFieldLines: 2, Control: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := MeasureHeader([]byte(tc.msg)); got != tc.want {
				t.Errorf("MeasureHeader(%q) = %+v, want %+v", tc.msg, got, tc.want)
			}
		})
	}
}

// hostileHeader returns a signed message whose header section is about size
// bytes, nearly all of it one field folded over lines lines.
func hostileHeader(b *testing.B, size, lines int) []byte {
	s := &Signer{Selector: "mail", Key: key(b), Domains: []string{"a.test"}}
	signed, err := s.Sign("a.test", plainMessage("alice@a.test"))
	if err != nil {
		b.Fatal(err)
	}
	lineLen := max(size/lines, 4)
	field := "X-Folded: " + strings.Repeat(strings.Repeat("x", lineLen-3)+"\r\n ", lines-1) + "end"
	return prependField(signed, field)
}

// BenchmarkVerifyHostileHeader verifies a signed message with one field
// folded over many lines: the time must grow linearly with the header size
// (ns/op twice for twice the size; MB/s flat), whether the field is folded
// over every 80 bytes and so kept from the DKIM library, or over exactly
// MaxFieldLines lines, the worst the library gets.
func BenchmarkVerifyHostileHeader(b *testing.B) {
	v := &Verifier{Resolver: world(b).Resolver(), AuthServID: ourID, Timeout: 10 * time.Second}
	for _, folding := range []string{"every 80 bytes", "MaxFieldLines"} {
		for _, kb := range []int{100, 200, 400, 800} {
			size := kb << 10
			lines := size / 80
			if folding == "MaxFieldLines" {
				lines = MaxFieldLines
			}
			msg := hostileHeader(b, size, lines)
			b.Run(fmt.Sprintf("folded %s/%dKB", folding, kb), func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					verdict, err := v.Verify(context.Background(), net.ParseIP("127.0.0.1"), "mx.a.test", "alice@a.test", msg)
					if err != nil || !bytes.Contains(verdict.delivered(), []byte("dkim=")) {
						b.Fatalf("Verify: %v", err)
					}
				}
			})
		}
	}
}
