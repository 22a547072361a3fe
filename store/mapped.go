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

// releaseDelay is how soon after a read its pages may be released. A page
// fault maps the cached pages around the one read too (the kernel's
// fault-around, 64 KiB), so a burst of retrievals maps up to sixteen times
// what it reads: POP3 at tens of thousands of messages a second would pile
// up tens of megabytes in a 50 ms window. 10 ms keeps that to a few.
//
// Deliveries read the same few pages again and again (the tree's root and
// branches, the users' records, the mailboxes' last leaves), and releasing
// them every 10 ms made each commit fault them in anew: 5,500 faults a
// second at 8 sessions, about 5% of the server's CPU in the release and
// the faults after it. So a release that is due waits while the process's
// file-backed resident memory has grown by less than releaseGrowth since
// the last release, up to releaseMaxDelay. Deliveries at 8 sessions map
// 3-4 MB again in the 100 ms after a release: 2,500 faults a second, a
// megabyte more resident, 6% less CPU a message (medians of 8 runs each).
// A burst of retrievals or a walk of a big mailbox grows past the bound
// within a few of releaseDelay's looks and is released as soon as before.
const (
	releaseDelay    = 10 * time.Millisecond
	releaseMaxDelay = 100 * time.Millisecond
	releaseGrowth   = 4 << 20
)

// touchedMap notes that pages were read through the map; they are released
// releaseDelay later, or up to releaseMaxDelay when few were mapped (see
// releaseDue). Cheap enough for every transaction: one atomic operation
// unless a release is to be scheduled.
func (s *Store) touchedMap() {
	if s.releasePending.CompareAndSwap(false, true) {
		time.AfterFunc(releaseDelay, s.releaseMap)
	}
}

// releaseDue reports whether a scheduled release goes now: the map grew
// by releaseGrowth since the last release, or that was releaseMaxDelay ago.
func releaseDue(grown int64, since time.Duration) bool {
	return grown >= releaseGrowth || since >= releaseMaxDelay
}

// releaseMap drops the map's resident pages, or looks again releaseDelay
// later when releaseDue says the release may wait. It runs inside a read
// transaction: bbolt remaps (on growth) only once every reader is done, so
// the map cannot move while it is released.
func (s *Store) releaseMap() {
	s.releaseMu.Lock()
	defer s.releaseMu.Unlock()
	if !releaseDue(fileResident()-s.releasedResident, time.Since(s.releasedAt)) {
		time.AfterFunc(releaseDelay, s.releaseMap)
		return
	}
	s.releasePending.Store(false)
	defer s.lockShared()()
	_ = s.db.View(func(tx *bolt.Tx) error {
		// tx.Size is the end of the pages in use; the map may extend past
		// it, over pages never read.
		return releaseMapped(s.db.Info().Data, tx.Size())
	})
	s.releasedAt, s.releasedResident = time.Now(), fileResident()
}

// view runs fn in a read transaction, and schedules the release of what it
// read. Every read of the store goes through it.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	defer s.touchedMap()
	defer s.lockShared()()
	return s.db.View(fn)
}
