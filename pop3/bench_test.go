package pop3

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
)

// BenchmarkRETR downloads a whole 10,000-message mailbox (1-12 KiB each,
// about 64 MB) from an in-memory maildrop over loopback, once with every RETR
// pipelined in one stream and once waiting for each answer. One iteration
// is one session; msgs/s and MB/s count message octets before stuffing.
func BenchmarkRETR(b *testing.B) {
	const count = 10000
	st := newFakeMaildrop()
	st.users[alice] = alicePW
	r := rand.New(rand.NewPCG(1, 2))
	var total int64
	for i := range count {
		m := bigMessage(1024+r.IntN(11*1024), uint64(i))
		st.add(alice, string(m))
		total += int64(len(m))
	}
	h := startServer(b, st, Options{AllowInsecureAuth: true})

	for _, pipelined := range []bool{true, false} {
		name := "pipelined"
		if !pipelined {
			name = "one-at-a-time"
		}
		b.Run(name, func(b *testing.B) {
			sessions := 0
			for b.Loop() {
				downloadAll(b, h.addr, count, pipelined)
				h.waitEnded(b, 1)
				sessions++
			}
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(sessions*count)/secs, "msgs/s")
			b.ReportMetric(float64(int64(sessions)*total)/secs/1e6, "MB/s")
		})
	}
}

// downloadAll logs in, RETRs messages 1..count and QUITs, reading replies
// with as little client work as possible.
func downloadAll(b *testing.B, addr string, count int, pipelined bool) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 64<<10)
	status := func() {
		line, err := r.ReadSlice('\n')
		if err != nil || !strings.HasPrefix(string(line), "+OK") {
			b.Fatalf("reply %q, %v", line, err)
		}
	}
	skipBody := func() {
		for {
			line, err := r.ReadSlice('\n')
			if err != nil && err != bufio.ErrBufferFull {
				b.Fatal(err)
			}
			if string(line) == ".\r\n" {
				return
			}
		}
	}
	status()
	fmt.Fprintf(conn, "USER %s\r\nPASS %s\r\n", alice, alicePW)
	status()
	status()
	if pipelined {
		go func() {
			w := bufio.NewWriter(conn)
			for i := 1; i <= count; i++ {
				fmt.Fprintf(w, "RETR %d\r\n", i)
			}
			w.Flush()
		}()
		for range count {
			status()
			skipBody()
		}
	} else {
		for i := 1; i <= count; i++ {
			fmt.Fprintf(conn, "RETR %d\r\n", i)
			status()
			skipBody()
		}
	}
	io.WriteString(conn, "QUIT\r\n")
	status()
}
