package store

import (
	"cmp"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Trace events wait in memory for a while before they are written.
//
// Written in the transaction of the change they describe, a delivery's
// two events (received, delivered) rewrote three pages of every commit
// (the trace bucket's own page and the events tree's leaf and branch) out
// of twelve, each a separate write request on its way to the disk: a
// quarter of what one session's commit sends to the disk. So a write
// records its events (putEvents) and the committer, once the write is
// committed, keeps them in memory; the first commit at least traceDelay
// after the oldest of them writes them all, in order, with its own
// writes. When no write comes, a timer writes them on their own. A
// session's delivery then writes the trace's pages once in about 100 ms
// instead of once a message: 9.06 pages a delivery instead of 12.0
// (BenchmarkAppendTraced). Side by side with the code before (README,
// Performance) that made 10-recipient mail 7-24% faster and one session's
// p50 3% lower, and its p99 about 0.5 ms higher: the commit that carries
// a tenth of a second's events is the slowest of its sixty or so.
//
// The price: a crash (kill -9, a power cut) loses the events of the last
// tenth of a second or so, never the change they describe; the mail is in
// its mailbox or queue either way, as the 250 said. The log file the
// kernel writes back in its own time loses more. A reader of the trace
// (Trace, TraceCount, Backup) first has the events waiting written, so
// what it reads is up to date, and Close writes them before the file
// closes.
const (
	// traceDelay is how long events may wait for a commit to carry them.
	traceDelay = 100 * time.Millisecond
	// traceAlone is how long after the oldest of them the committer writes
	// them on their own, when no write came to carry them.
	traceAlone = traceDelay + traceDelay/2
	// maxPendingEvents bounds the events waiting (a few hundred kilobytes
	// at most): more make the next commit write them.
	maxPendingEvents = 4096
)

// tracePending is the committer's: the events of committed writes that
// are not written yet, and those the transaction being run records.
type tracePending struct {
	events []Event
	since  time.Time   // when the oldest of events was committed
	timer  *time.Timer // writes them alone; nil when events is empty, or after failed
	tx     []Event     // recorded by the writes of the transaction being run
	failed bool        // the last commit of the events alone failed
}

// putEvents records events of the write being run, to be written once it
// commits (see traceDelay). Only a write's fn, run by the committer, may
// call it.
func (s *Store) putEvents(events []Event) {
	for _, e := range events {
		if e.ID == "" || e.Kind == "" {
			continue // nothing could ever find it
		}
		e.Time = e.Time.UTC()
		s.trace.tx = append(s.trace.tx, e)
	}
}

// traceDue reports whether the transaction of group writes the events
// waiting and its own: they waited long enough, there are many, a reader
// asked for them, or the commit is made for them alone (no group).
func (s *Store) traceDue(group []*writeReq) bool {
	t := &s.trace
	n := len(t.events) + len(t.tx)
	switch {
	case n == 0:
		return false
	case len(group) == 0, n >= maxPendingEvents:
		return true
	case len(t.events) > 0 && time.Since(t.since) >= cmp.Or(s.opts.traceDelay, traceDelay):
		return true
	}
	for _, req := range group {
		if req.flushTrace {
			return true
		}
	}
	return false
}

// writeTrace writes the events waiting, then the transaction's own, in tx.
func (s *Store) writeTrace(tx *bolt.Tx) error {
	if err := writeEvents(tx, s.trace.events); err != nil {
		return err
	}
	return writeEvents(tx, s.trace.tx)
}

// traceCommitted updates the events waiting after a commit that succeeded:
// written tells whether it wrote them.
func (s *Store) traceCommitted(written bool) {
	t := &s.trace
	if written {
		clear(t.events) // the strings they hold
		t.events = t.events[:0]
		t.failed = false
		if t.timer != nil {
			t.timer.Stop()
			t.timer = nil
		}
	} else if len(t.tx) > 0 {
		if len(t.events) == 0 {
			t.since = time.Now()
		}
		t.events = append(t.events, t.tx...)
		if t.timer == nil && !t.failed {
			t.timer = time.NewTimer(cmp.Or(s.opts.traceAlone, traceAlone))
		}
	}
	t.dropTx()
	s.tracePendingN.Store(int64(len(t.events)))
}

// dropTx forgets the events the transaction recorded: kept or written by
// traceCommitted, or describing nothing once it rolled back.
func (t *tracePending) dropTx() {
	clear(t.tx) // the strings they hold
	t.tx = t.tx[:0]
}

// traceAloneC is the timer's channel, nil (never ready) when none is set.
func (s *Store) traceAloneC() <-chan time.Time {
	if s.trace.timer == nil {
		return nil
	}
	return s.trace.timer.C
}

// writeTraceAlone is the timer's commit: the events waiting, on their own.
// When the disk fails it, they wait for the next write's commit instead of
// a timer that would fail again and again.
func (s *Store) writeTraceAlone() {
	s.trace.timer = nil
	if len(s.trace.events) == 0 {
		return
	}
	if !s.commitGroup(nil) {
		s.trace.failed = true
	}
}

// flushTrace has the events waiting written, for a reader that must see
// them. None waiting costs nothing. A disk that fails the commit leaves
// them waiting and the reader with what the file holds: on a full disk
// `trace` still shows everything but the last tenth of a second, which
// matters more than those events; the failure itself is the writes' to
// report (and Writable's).
func (s *Store) flushTrace() {
	if s.tracePendingN.Load() == 0 {
		return
	}
	_ = s.submit(&writeReq{fn: func(*bolt.Tx) error { return nil }, flushTrace: true})
}
