package store

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// bbolt reads the database through a shared, read-only map of the file.
// Every page read through it stays in the process's resident set until the
// map is remapped, and bbolt is copy-on-write: each commit moves the pages
// it changes to new places in the file, which the next reads fault in. Over
// a day of deliveries and deletions the resident set grows towards the
// whole file, though none of it is the process's own memory: it is the
// kernel's page cache, which can drop it at any time, counted again.
// Operators read RSS and PSS as what the server costs, so the store gives
// those pages back (MADV_DONTNEED) shortly after it has touched them. For a
// shared file map that only drops the page table entries: the pages stay
// cached and the next read maps them again, at the cost of a minor fault.

// releaseDelay is how long pages that were read stay mapped. A page fault
// maps the cached pages around the one read too (the kernel's fault-around,
// 64 KiB), so a burst of retrievals maps up to sixteen times what it reads:
// POP3 at tens of thousands of messages a second would pile up tens of
// megabytes in a 50 ms window. 10 ms keeps that to a few, at the cost of
// faulting the tree's hot pages (root, branches) in again up to a hundred
// times a second. Deliveries pay for that: 5,500 faults a second at 8
// sessions. Letting a release wait up to 100 ms while the map had grown by
// less than 4 MiB took that to 2,500 and the CPU a message down 3-6%, and
// put a megabyte on the PSS of every 4 KiB row of the benchmark, whose
// goal (30 MB) those rows meet by one or two: not taken.
const releaseDelay = 10 * time.Millisecond

// touchedMap notes that pages were read through the map; they are released
// releaseDelay later. Cheap enough for every transaction: one atomic
// operation unless a release is to be scheduled.
func (s *Store) touchedMap() {
	if s.releasePending.CompareAndSwap(false, true) {
		time.AfterFunc(releaseDelay, s.releaseMap)
	}
}

// releaseMap drops the map's resident pages. It runs inside a read
// transaction: bbolt remaps (on growth) only once every reader is done, so
// the map cannot move while it is released.
func (s *Store) releaseMap() {
	s.releaseMu.Lock()
	defer s.releaseMu.Unlock()
	s.releasePending.Store(false)
	defer s.lockShared()()
	_ = s.db.View(func(tx *bolt.Tx) error {
		// tx.Size is the end of the pages in use; the map may extend past
		// it, over pages never read.
		return releaseMapped(s.db.Info().Data, tx.Size())
	})
}

// releaseEveryFreed is how many bodies a write transaction frees between
// releases of the map (freeing).
const releaseEveryFreed = 16

// freeing releases the map inside one write transaction every
// releaseEveryFreed bodies it frees (releaseBody tells it). bbolt reads the
// first page of every bucket it deletes (the page's header says what
// follows), and the fault maps the 64 KiB around it; a mailbox's bodies
// lie among everyone else's, so each body freed maps a window of its own,
// and the release after a commit comes only when the commit is over.
// Eight POP3 QUITs of 250 4 KiB messages each, grouped into one commit,
// mapped 76-240 MB of the file for its length (sampled every 20 ms);
// released every 16 bodies, the deletions never showed more than the
// retrievals before them, a few MB. It costs faults: the windows dropped
// hold other mailboxes' bodies, which their own QUITs fault in again
// (BenchmarkDeleteInterleaved: 30-39 ms for 2000 deletions against 14-18;
// every 64 bodies, 22-32 and up to 4 MB). The release is safe
// mid-transaction: the map is shared and read-only, so a dropped page that
// bbolt reads again faults back in as it was, and only this transaction's
// own commit could remap it. A nil freeing releases nothing.
type freeing struct {
	tx    *bolt.Tx
	freed int
}

// freedBody notes one more body freed.
func (f *freeing) freedBody() {
	if f == nil {
		return
	}
	f.freed++
	if f.freed%releaseEveryFreed == 0 {
		_ = releaseMapped(f.tx.DB().Info().Data, f.tx.Size())
	}
}

// view runs fn in a read transaction, and schedules the release of what it
// read. Every read of the store goes through it.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	defer s.touchedMap()
	defer s.lockShared()()
	return s.db.View(fn)
}
