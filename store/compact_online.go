package store

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"time"
)

// Compaction while serving. bbolt never shrinks its file, and its freelist
// costs memory for every free page (about 40 octets each: 20 MB once 2 GB
// of mail was retrieved and deleted, as POP3 users do every day). serve
// compacts a mostly free file when it starts; the committer also does it
// while serving, when that is cheap: the live data is small enough to copy
// in a moment (every read and write waits meanwhile) and no mail
// transaction is open. A big mailbox store is left to the next start or
// `minimail compact`.
//
// It is the same copy as Compact (writeCompacted: a new file, checked
// against the original's digest and fsync'd, then renamed over the old
// one), so a crash at any point leaves one complete database under the
// name: the old one until the rename, the new one after it.

const (
	// onlineCompactMaxLive bounds the live data an online compaction
	// copies: tens of milliseconds of writing.
	onlineCompactMaxLive = 32 << 20
	// onlineCompactEvery is how often the committer looks at the file.
	onlineCompactEvery = time.Second
)

// maybeCompact runs in the committer, between commits. A failure leaves
// the old file in use; it is reported and tried again at the next look.
func (s *Store) maybeCompact() {
	if s.opts.NoOnlineCompaction || s.expected.Load() > 0 || time.Since(s.lastCompactLook) < cmp.Or(s.opts.compactEvery, onlineCompactEvery) {
		return
	}
	s.lastCompactLook = time.Now()
	fi, err := os.Stat(s.path)
	if err != nil {
		return
	}
	st := s.db.Stats()
	free := int64(st.FreePageN+st.PendingPageN) * int64(s.db.Info().PageSize)
	if !wasteful(fi.Size(), free) || fi.Size()-free > onlineCompactMaxLive {
		return
	}
	res, err := s.compactOnline()
	if errors.Is(err, errReadersBusy) {
		return // looked at again in a moment
	}
	if s.opts.Compacted != nil {
		s.opts.Compacted(res, err)
	}
}

// errReadersBusy: a read transaction stayed open, so the compaction waits
// for a later look.
var errReadersBusy = errors.New("compact: reads in progress")

// swapWait bounds how long a compaction waits for the reads under way to
// end. Meanwhile new reads wait at the gate; behind a long reader (a backup
// of a big store) they would otherwise all stall until it is done.
const swapWait = 100 * time.Millisecond

// lockExclusive takes swapMu for a swap: it closes the gate to new reads,
// waits up to swapWait for the reads under way, and gives up if one is
// still open. unlock releases the lock and opens the gate.
func (s *Store) lockExclusive() (unlock func(), ok bool) {
	gate := make(chan struct{})
	s.swapGate.Store(&gate)
	open := func() {
		s.swapGate.Store(nil)
		close(gate)
	}
	for deadline := time.Now().Add(swapWait); ; time.Sleep(time.Millisecond) {
		if s.swapMu.TryLock() {
			return func() { s.swapMu.Unlock(); open() }, true
		}
		if time.Now().After(deadline) {
			open()
			return nil, false
		}
	}
}

// lockShared takes swapMu for a use of s.db, once no swap waits for it.
func (s *Store) lockShared() (unlock func()) {
	if gate := s.swapGate.Load(); gate != nil {
		<-*gate
	}
	s.swapMu.RLock()
	return s.swapMu.RUnlock
}

// compactOnline swaps the open file for a compacted copy. Only the
// committer calls it, so no write is under way; it holds swapMu so that no
// read is either.
func (s *Store) compactOnline() (CompactResult, error) {
	start := time.Now()
	unlock, ok := s.lockExclusive()
	if !ok {
		return CompactResult{}, errReadersBusy
	}
	defer unlock()
	old := s.db
	fi, err := os.Stat(s.path)
	if err != nil {
		return CompactResult{}, fmt.Errorf("compact: %w", err)
	}
	st := old.Stats()
	res := CompactResult{Before: fi.Size(), After: fi.Size(),
		Free: int64(st.FreePageN+st.PendingPageN) * int64(old.Info().PageSize)}
	tmp := s.path + compactSuffix
	if err := removeCompactLeftover(s.path); err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}
	step := s.opts.compactStep
	if step == nil {
		step = func(compactStep, int) {}
	}
	if err := writeCompacted(old, tmp, CompactOptions{step: step}); err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("compact %s: %w", s.path, err)
	}
	// Opened, and so locked, before the rename: no other process can take
	// the new file in between.
	db, err := openBolt(tmp, boltOpen{lockTimeout: s.opts.LockTimeout, freelist: s.freelist})
	if err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("compact %s: %w", s.path, err)
	}
	s.step(stepSynced)
	if err := os.Rename(tmp, s.path); err != nil {
		db.Close()
		os.Remove(tmp)
		return res, fmt.Errorf("compact %s: %w", s.path, err)
	}
	s.step(stepRenamed)
	// The new file is the database now, whatever follows.
	s.db = db
	old.Close()
	res.Compacted = true
	if fi, err := os.Stat(s.path); err == nil {
		res.After = fi.Size()
	}
	res.Duration = time.Since(start)
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return res, fmt.Errorf("compact %s: renamed, but the rename may not survive a crash: %w", s.path, err)
	}
	// The old freelist and the copy's buffers are garbage now, tens of
	// megabytes after a big deletion: give them back at once (twice, as
	// in the mta's buffer pool: a sync.Pool outlives one collection).
	runtime.GC()
	debug.FreeOSMemory()
	return res, nil
}

func (s *Store) step(at compactStep) {
	if s.opts.compactStep != nil {
		s.opts.compactStep(at, 0)
	}
}
