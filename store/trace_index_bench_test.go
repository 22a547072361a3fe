package store

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkIndexTrace is one pass of the queue's runner over the events of
// a busy minute (indexPerPass of them: 2,500 messages received and
// delivered) on a trace that already indexes those of 100,000 messages.
// The index's keys (ids, Message-IDs, recipients) are random, so a pass
// that put them among the old ones rewrote most of the index's pages:
// 115 ms, 4,254 pages/pass and 68 alloc-MB/pass, most of it held until
// its commit. Written in runs (trace_runs.go), 20 ms, 401 and 13: what a
// pass costs must grow with the pass, not with the trace. heap-after-MB is
// the heap in use once the pass returns: its garbage given back, what is
// live (a trace's worth of collector goal otherwise).
func BenchmarkIndexTrace(b *testing.B) {
	const passEvents = 5000 // the queue runner's indexPerPass
	s := openInternal(b, Options{NoOnlineCompaction: true})
	seq := 0
	record := func(n int) {
		now := time.Now()
		var events []Event
		for range n {
			seq++
			// Ids are random in life: spread them over the index.
			id := fmt.Sprintf("%016x", uint64(seq)*0x9e3779b97f4a7c15)
			events = append(events,
				Event{Time: now, Kind: EventReceived, ID: id, Facts: []Fact{
					{"client", "192.0.2.7"}, {"from", "bob@example.net"},
					{FactRcpt, fmt.Sprintf("u%d@example.test", seq%32)},
					{FactMessageID, fmt.Sprintf("<%x.%d@example.net>", uint64(seq)*0xbf58476d1ce4e5b9, seq)}}},
				Event{Time: now, Kind: EventDelivered, ID: id, Facts: []Fact{
					{FactMailbox, fmt.Sprintf("u%d@example.test", seq%32)}, {FactMsg, fmt.Sprint(seq)}}})
		}
		if err := s.RecordEvents(events); err != nil {
			b.Fatal(err)
		}
	}
	index := func() {
		for {
			n, err := s.IndexTrace(passEvents)
			if err != nil {
				b.Fatal(err)
			}
			if n < passEvents {
				return
			}
		}
	}
	for range 100 {
		record(1000)
	}
	index()
	var pages, alloc, heapAfter uint64
	var ms runtime.MemStats
	for b.Loop() {
		b.StopTimer()
		record(passEvents / 2)
		runtime.ReadMemStats(&ms)
		allocBefore, pagesBefore := ms.TotalAlloc, s.PagesWritten()
		b.StartTimer()
		if _, err := s.IndexTrace(passEvents); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.ReadMemStats(&ms)
		alloc += ms.TotalAlloc - allocBefore
		heapAfter += ms.HeapInuse
		pages += uint64(s.PagesWritten() - pagesBefore)
		b.StartTimer()
	}
	b.ReportMetric(float64(pages)/float64(b.N), "pages/pass")
	b.ReportMetric(float64(alloc)/1e6/float64(b.N), "alloc-MB/pass")
	b.ReportMetric(float64(heapAfter)/1e6/float64(b.N), "heap-after-MB")
}

// BenchmarkTraceUnindexed looks up a recipient's last messages while
// 20,000 messages' events wait for the index, as at a server busier than
// the runner's pace: the query falls through the id and Message-ID lookups
// and shows TraceRecipientMessages messages. The events past the index are
// read twice a query (lookInTail, eventsOf), not once a lookup and once a
// message (23 times): 65-77 ms and 47 MB allocated a query, against
// 510-607 ms and 420 MB.
func BenchmarkTraceUnindexed(b *testing.B) {
	s := openInternal(b, Options{})
	recordTrace(b, s, 20_000)
	for b.Loop() {
		evs, err := s.Trace("u3@example.test")
		if err != nil {
			b.Fatal(err)
		}
		if len(evs) != 2*TraceRecipientMessages {
			b.Fatalf("%d events, want %d", len(evs), 2*TraceRecipientMessages)
		}
	}
}
