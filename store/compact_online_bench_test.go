package store

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkCompactOnline times the swap of a store whose live data is
// what a busy day leaves: the trace of tens of thousands of messages (the
// benchmark harness's runs leave 30-60 MB of it) and the space of a burst
// of 1 MiB mail that was retrieved and deleted. Writes wait while the copy
// catches up and is swapped in (writes-waited-ms), the pause a client
// sees; reads only while it is swapped in.
func BenchmarkCompactOnline(b *testing.B) {
	for _, msgs := range []int{20_000, 80_000} {
		b.Run(fmt.Sprintf("trace-of-%d-messages", msgs), func(b *testing.B) {
			s := openInternal(b, Options{NoOnlineCompaction: true})
			if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
				b.Fatal(err)
			}
			recordTrace(b, s, msgs)
			var live, rise int64
			var waited time.Duration
			for b.Loop() {
				b.StopTimer()
				bigMailComesAndGoes(b, s, "alice@example.test", 40)
				live, _ = s.worthCompacting()
				s.retiring.Wait()
				runtime.GC()
				peak := watchPSS()
				b.StartTimer()
				res, err := s.compactOnline()
				if err != nil {
					b.Fatal(err)
				}
				waited += res.WritesWaited
				rise = max(rise, peak())
			}
			b.ReportMetric(float64(live)/1e6, "live-MB")
			b.ReportMetric(float64(waited.Milliseconds())/float64(b.N), "writes-waited-ms")
			if rise > 0 {
				b.ReportMetric(float64(rise)/1e6, "peak-rise-MB")
			}
		})
	}
}

// recordTrace writes the events of n messages received and delivered.
func recordTrace(b testing.TB, s *Store, n int) {
	b.Helper()
	now := time.Now()
	const batch = 1000
	for i := 0; i < n; i += batch {
		var events []Event
		for j := i; j < min(n, i+batch); j++ {
			id := fmt.Sprintf("%016x", j*7919)
			events = append(events,
				Event{Time: now, Kind: "received", ID: id, Facts: []Fact{
					{"client", "192.0.2.7"}, {"helo", "mail.example.net"}, {"from", "bob@example.net"},
					{FactRcpt, fmt.Sprintf("u%d@example.test", j%32)}, {FactMessageID, fmt.Sprintf("<%d@example.net>", j)},
					{"size", "4373"}, {"checks", "spf=pass dkim=none dmarc=none"}}},
				Event{Time: now, Kind: "delivered", ID: id, Facts: []Fact{
					{FactMailbox, fmt.Sprintf("u%d@example.test", j%32)}, {FactMsg, fmt.Sprint(j)}}})
		}
		if err := s.RecordEvents(events); err != nil {
			b.Fatal(err)
		}
	}
}

// watchPSS samples the process's proportional resident set every
// millisecond until the returned func is called, which reports how far it
// rose above where it was at the start; 0 where /proc/self/smaps_rollup
// is not there. The peak of a compaction is what a server adds to the mail
// in flight while it serves.
func watchPSS() (peak func() int64) {
	start, ok := processPSS()
	if !ok {
		return func() int64 { return 0 }
	}
	top := watchPeak(func() int64 { n, _ := processPSS(); return n })
	return func() int64 { return top() - start }
}

// watchPeak calls sample every millisecond until the returned func is
// called, which reports the largest value sampled.
func watchPeak(sample func() int64) (peak func() int64) {
	stop, most := make(chan struct{}), make(chan int64)
	go func() {
		var top int64
		for {
			top = max(top, sample())
			select {
			case <-stop:
				most <- top
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(stop)
		return <-most
	}
}

// processPSS is the Pss line of /proc/self/smaps_rollup, in octets.
func processPSS() (int64, bool) {
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Pss:")); ok {
			kb, err := strconv.ParseInt(string(bytes.Fields(rest)[0]), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}
