package mta

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkMXDelivery is the end-to-end figure: N concurrent
// clients, each on its own connection, send 4 KiB messages over loopback
// to local users; every 250 means the message was committed (fsync'd) to
// the store. Reported per run: msgs/s, store commits and fsyncs per
// message (a bbolt commit is two fsyncs: data pages, then meta page), and
// CPU per message (client and server together, one process).
//
//	go test -run XXX -bench MXDelivery -benchtime 4000x ./mta/
func BenchmarkMXDelivery(b *testing.B) {
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchDelivery(b, n) })
	}
}

func benchDelivery(b *testing.B, clients int) {
	e := newEnv(b, func(o *Options, _ *Local) {
		o.Logger = nil
		o.MaxConnectionsPerIP = -1
		o.MaxConnections = -1
	})
	body := "From: bob@other.test\r\nTo: alice@example.org\r\nSubject: benchmark\r\n\r\n" +
		strings.Repeat(strings.Repeat("x", 62)+"\r\n", 4096/64)
	conns := make([]*benchClient, clients)
	for i := range conns {
		c, err := newBenchClient(e.mxAddr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.conn.Close()
		conns[i] = c
	}

	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	commits := e.st.Commits()
	cpu := cpuTime()
	b.ResetTimer()
	start := time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rcpt := []string{"alice@example.org", "bob@example.org"}[i%2]
			for next.Add(1) <= int64(b.N) {
				if err := c.send("bob@other.test", rcpt, body); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	perMsg := float64(e.st.Commits()-commits) / float64(b.N)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(perMsg, "commits/msg")
	b.ReportMetric(2*perMsg, "fsyncs/msg")
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/msg")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchClient pipelines MAIL, RCPT and DATA (RFC 2920), as MTAs do.
type benchClient struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

func newBenchClient(addr string) (*benchClient, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &benchClient{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn)}
	if err := c.expect("220"); err != nil {
		return nil, err
	}
	c.w.WriteString("EHLO bench.test\r\n")
	c.w.Flush()
	return c, c.expect("250")
}

func (c *benchClient) send(from, rcpt, body string) error {
	fmt.Fprintf(c.w, "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", from, rcpt)
	if err := c.w.Flush(); err != nil {
		return err
	}
	for _, code := range []string{"250", "250", "354"} {
		if err := c.expect(code); err != nil {
			return err
		}
	}
	c.w.WriteString(body)
	c.w.WriteString(".\r\n")
	if err := c.w.Flush(); err != nil {
		return err
	}
	return c.expect("250")
}

// expect reads one reply and checks its code.
func (c *benchClient) expect(code string) error {
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return err
		}
		if len(line) < 4 || !strings.HasPrefix(line, code) {
			return fmt.Errorf("want %s, got %q", code, line)
		}
		if line[3] == ' ' {
			return nil
		}
	}
}
