package store

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkCompactOnline times the swap of a store whose live data is
// what a busy day leaves: the trace of tens of thousands of messages (the
// benchmark harness's runs leave 30-60 MB of it) and the space of a burst
// of 1 MiB mail that was retrieved and deleted. Every read and write waits
// for the swap, so its time is the pause a client sees.
func BenchmarkCompactOnline(b *testing.B) {
	for _, msgs := range []int{20_000, 80_000} {
		b.Run(fmt.Sprintf("trace-of-%d-messages", msgs), func(b *testing.B) {
			s := openInternal(b, Options{NoOnlineCompaction: true})
			if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
				b.Fatal(err)
			}
			recordTrace(b, s, msgs)
			var live int64
			for b.Loop() {
				b.StopTimer()
				bigMailComesAndGoes(b, s, "alice@example.test", 40)
				live, _ = s.worthCompacting()
				b.StartTimer()
				if _, err := s.compactOnline(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(live)/1e6, "live-MB")
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
