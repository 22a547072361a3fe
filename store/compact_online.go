package store

import (
	"cmp"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Compaction while serving. bbolt never shrinks its file, and its freelist
// costs memory for every free page (about 28 octets each: 19 MB once 2.8 GB
// of mail was retrieved and deleted, as POP3 users do every day, and twice
// that in the process, as the collector lets the heap grow to twice what
// is live). serve compacts a mostly free file when it starts; the
// committer also does it while serving, when that is cheap: the live data
// is small enough to copy in a moment, and, unless it is tiny, no mail
// transaction is open. A big mailbox store is left to the next start or
// `minimail compact`.
//
// Reads and writes go on while a snapshot is copied (startCopy), in a
// goroutine of its own. Then the committer, between two commits, brings
// the copy up to the store (catchUp: the two walked side by side), checks
// it against the store entry by entry and swaps it in (finishCopy): writes
// wait for that only, 41 ms for 26 MB of live data where the whole copy
// took 0.2 s (BenchmarkCompactOnline's writes-waited-ms).
//
// The copy is a new file like Compact's (synced, checked against a digest
// of what it copies, then renamed over the old one), so a crash at any
// point leaves one complete database under the name: the old one until
// the rename, the new one after it.

const (
	// onlineCompactMaxLive bounds the live data an online compaction
	// copies, and so how long writes wait while it catches up (it walks
	// all of the live data): 41 ms for the 26 MB that the trace of 80,000
	// messages takes (BenchmarkCompactOnline), about a tenth of a second
	// at the bound. The benchmark harness's full run ends with 67 MB live.
	onlineCompactMaxLive = 64 << 20
	// onlineCompactEvery is how often the committer looks at the file.
	onlineCompactEvery = time.Second
	// onlineCompactBusyMaxLive is the live data a compaction copies with
	// mail transactions open: a few milliseconds' wait, like one slow
	// fsync (600 MiB of deleted mail and little left took 1.1 ms when
	// writes waited for the whole copy; they wait for less now, the
	// catch-up's walk, and the bound was not measured again). Above it,
	// the compaction waits for a moment without transactions.
	onlineCompactBusyMaxLive = 4 << 20
	// onlineCompactReadersRetry is how many looks a compaction that a
	// long read put off waits: its copy was made in vain, and a backup
	// may read for minutes. So does one that too much mail came in
	// during (errWritesBusy): a burst of big mail lasts a while.
	onlineCompactReadersRetry = 30
)

// maybeCompact runs in the committer after each commit, and when the look
// it put off is due. A failure leaves the old file in use; it is reported
// and tried again at the next look.
func (s *Store) maybeCompact() {
	if s.opts.NoOnlineCompaction {
		return
	}
	if job := s.copying; job != nil {
		// One at a time; a copy made is finished at once (see finishCopying).
		if job.written > maxCatchUpBytes {
			s.stopCopying()
			s.compacted(CompactResult{}, errWritesBusy)
			return
		}
		select {
		case <-job.done:
			s.finishCopying()
		default:
		}
		return
	}
	every := cmp.Or(s.opts.compactEvery, onlineCompactEvery)
	wait := every - time.Since(s.lastCompactLook)
	// A quiet committer looks at once. The last commit of a burst of
	// deletions (the QUIT of the last POP3 session that emptied its
	// mailbox) is often followed by new mail within the second, and then a
	// big copy has to wait for a moment without transactions, while the
	// freelist holds its memory: on the benchmark, for all of the next
	// scenario. A look costs a stat and a read transaction, microseconds;
	// only while writes are on their way are looks spaced out. A look put
	// off on purpose (a long read, a failure) stays put off.
	putOff := wait > every
	if wait > 0 && (putOff || !s.quiet()) {
		// The last commit of a burst must be looked at too.
		s.lookAgain(wait)
		return
	}
	if wait > 0 && s.freePages() <= s.lastLookFree {
		// Quiet, but nothing was freed since the last look, which found
		// the file not worth compacting: that is most commits of a single
		// session, and they need not pay for a look.
		return
	}
	s.lastCompactLook = time.Now()
	defer func() { s.lastLookFree = s.freePages() }()
	live, worth := s.worthCompacting()
	if !worth {
		return
	}
	if s.expected.Load() > 0 && live > onlineCompactBusyMaxLive {
		s.lookAgain(every) // mail on its way: not now
		return
	}
	job, res, err := s.startCopy()
	if err != nil {
		s.compacted(res, err)
		return
	}
	s.copying = job
}

// finishCopying finishes the committer's copy, which is made.
func (s *Store) finishCopying() {
	job := s.copying
	s.copying = nil
	s.compacted(s.finishCopy(job))
}

// copyingDone is the channel closed once the committer's copy is made, nil
// when none is being made.
func (s *Store) copyingDone() <-chan struct{} {
	if s.copying == nil {
		return nil
	}
	return s.copying.done
}

// stopCopying ends the committer's copy, if one is being made, and throws
// it away: the store is closing, or too much mail came in meanwhile.
func (s *Store) stopCopying() {
	if job := s.copying; job != nil {
		s.copying = nil
		job.stop.Store(true)
		<-job.done
		job.dst.Close()
		os.Remove(job.tmp)
	}
}

// maxCatchUpBytes bounds the mail a copy's catch-up takes, which is one
// transaction: like a group commit (maxGroupBytes), bbolt holds all of its
// pages in memory until it commits. A copy that more mail came in during
// is thrown away and made again later.
const maxCatchUpBytes = maxGroupBytes

// errWritesBusy: more mail was stored while the copy was made than its
// catch-up may take.
var errWritesBusy = errors.New("compact: too much mail stored meanwhile")

// compacted is the end of an online compaction, done or failed.
func (s *Store) compacted(res CompactResult, err error) {
	every := cmp.Or(s.opts.compactEvery, onlineCompactEvery)
	if errors.Is(err, errReadersBusy) || errors.Is(err, errWritesBusy) {
		// Not at the next commits either.
		s.lastCompactLook = time.Now().Add((onlineCompactReadersRetry - 1) * every)
		s.lookAgain(onlineCompactReadersRetry * every)
		return
	}
	if err != nil {
		// A full disk, say: not again at every commit, nor in the log.
		s.lastCompactLook = time.Now().Add(onlineCompactRetry)
	}
	if s.opts.Compacted != nil {
		s.opts.Compacted(res, err)
	}
}

// onlineCompactRetry is how long after a failed compaction the next is
// tried.
const onlineCompactRetry = 10 * time.Minute

// freePages is how many pages of the open file are free or about to be,
// as of the last commit.
func (s *Store) freePages() int {
	st := s.db.Stats()
	return st.FreePageN + st.PendingPageN
}

// quiet reports whether no write is waiting for the committer and no mail
// transaction is open.
func (s *Store) quiet() bool {
	return len(s.writes) == 0 && s.expected.Load() == 0
}

// worthCompacting is CompactIfWasteful's rule, for a copy small enough to
// make while serving; live is the size of that copy.
func (s *Store) worthCompacting() (live int64, worth bool) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0, false
	}
	free := int64(s.freePages()) * int64(s.pageSize)
	// The pages in use end below the file's end: bbolt grows the file
	// ahead of need.
	var used int64
	if err := s.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		return 0, false
	}
	live = used - free
	return live, wasteful(fi.Size(), free) && live <= onlineCompactMaxLive
}

// lookAgain has the committer call maybeCompact after d, unless a look is
// already due. Only the committer uses the timer.
func (s *Store) lookAgain(d time.Duration) {
	if s.lookDue == nil {
		s.lookDue = time.NewTimer(d)
	}
}

// lookDueC is the channel of the pending look, nil when none is.
func (s *Store) lookDueC() <-chan time.Time {
	if s.lookDue == nil {
		return nil
	}
	return s.lookDue.C
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

// compactOnline swaps the open file for a compacted copy, made while the
// store takes writes (startCopy, finishCopy). The committer does it a step
// at a time; tests and benchmarks call this.
func (s *Store) compactOnline() (CompactResult, error) {
	job, res, err := s.startCopy()
	if err != nil {
		return res, err
	}
	return s.finishCopy(job)
}

// copyJob is the copy an online compaction makes of a snapshot of the
// store, in a goroutine of its own, while the committer goes on.
type copyJob struct {
	dst   *bolt.DB // the copy, open
	tmp   string   // its file
	res   CompactResult
	start time.Time
	stop  atomic.Bool   // set: end the copy (the store is closing)
	done  chan struct{} // closed once the copy is made, or failed
	// written is the message octets committed since the snapshot (the
	// committer's), which the catch-up will take.
	written int
	err     error // the copy's, once done is closed
}

// startCopy starts copying the store as it is into a new file beside it.
// Reads and writes go on: the snapshot copied is a read transaction, which
// ends as soon as the copy is made, synced. (While it is open, a commit
// that has to grow bbolt's map waits for it.)
func (s *Store) startCopy() (*copyJob, CompactResult, error) {
	job := &copyJob{tmp: s.path + compactSuffix, start: time.Now(), done: make(chan struct{})}
	fail := func(err error) (*copyJob, CompactResult, error) {
		job.res.Duration = time.Since(job.start)
		return nil, job.res, fmt.Errorf("compact %s: %w", s.path, err)
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return fail(err)
	}
	job.res = CompactResult{Before: fi.Size(), After: fi.Size(), Free: int64(s.freePages()) * int64(s.pageSize)}
	if err := removeCompactLeftover(s.path); err != nil {
		return fail(err)
	}
	snap, err := s.db.Begin(false)
	if err != nil {
		return fail(err)
	}
	if job.dst, err = createCopy(job.tmp, liveSize(s.db, snap.Size()), s.opts.LockTimeout); err != nil {
		snap.Rollback()
		os.Remove(job.tmp)
		return fail(err)
	}
	step := s.opts.compactStep
	if step == nil {
		step = func(compactStep, int) {}
	}
	go func() {
		defer close(job.done)
		_, err := copySnapshot(snap, job.dst, nil, step, &job.stop)
		snap.Rollback()
		if err == nil {
			// Synced now, so that the sync while writes wait is of what
			// the catch-up writes.
			err = job.dst.Sync()
		}
		job.err = err
	}()
	return job, job.res, nil
}

// finishCopy waits for job's copy, brings it up to the store as it is now
// (catchUpCopy) and swaps it in. No write may be under way: the committer
// calls it between commits, and writes wait (res.WritesWaited), while
// reads go on. Then reads wait at the gate a moment, while the copy is
// swapped in. The old file is closed after that, in the background.
func (s *Store) finishCopy(job *copyJob) (CompactResult, error) {
	<-job.done
	paused := time.Now()
	res, tmp := job.res, job.tmp
	err := job.err
	if err == nil {
		err = s.catchUpCopy(job)
	}
	if err != nil {
		job.dst.Close()
		os.Remove(tmp)
		res.Duration = time.Since(job.start)
		return res, fmt.Errorf("compact %s: %w", s.path, err)
	}
	unlock, ok := s.lockExclusive()
	if !ok {
		os.Remove(tmp)
		return CompactResult{}, errReadersBusy
	}
	// The last close of the old file, once renamed over, is when the
	// kernel frees its blocks: 1.6 s for the 2 GB file of the benchmark's
	// 1 MiB rows. bbolt drops its freelist first thing in Close, but
	// closes the file last, so with bbolt's descriptor the last one the
	// freelist's tens of megabytes would be given back only after those
	// seconds, into the next burst of mail. This descriptor is the last,
	// and frees the blocks a step at a time (releaseFile). It is opened
	// for writing, which the truncation needs.
	last, _ := os.OpenFile(s.path, os.O_RDWR, 0) // without it the memory just comes back later
	old, err := s.swapIn(tmp, &res)
	unlock()
	res.Duration, res.WritesWaited = time.Since(job.start), time.Since(paused)
	if old == nil {
		closeFile(last)
		return res, err
	}
	// Opening the copy read all of it, to rebuild the freelist.
	s.touchedMap()
	s.retiring.Add(1)
	go func() {
		defer s.retiring.Done()
		old.Close()
		// The old freelist and the copy's buffers are garbage now, tens of
		// megabytes after a big deletion: give them back at once (twice,
		// as in the mta's buffer pool: a sync.Pool outlives one
		// collection).
		runtime.GC()
		debug.FreeOSMemory()
		releaseFile(last, cmp.Or(s.opts.releaseStep, releaseStep), s.releasePacer(), s.opts.released)
	}()
	return res, err
}

// releaseStep is how much of the old file releaseFile frees at a time: a
// quarter of the 32 MiB steps that made fsyncs wait up to 5 ms. Smaller
// steps, one after each commit, hit more of the commits: with 2 MiB, one
// session's p50 during the release rose by 0.1-0.2 ms (see releasePace).
const releaseStep = 8 << 20

// releaseWait bounds how long a step of the release waits for a commit to
// follow; a store busy with something else than commits (a long read, a
// slow sender) still gets its disk space back.
const releaseWait = 20 * time.Millisecond

// releasePace is releaseFile's pace: a step goes at once while no mail is
// on its way, and otherwise just after a commit, while the senders are
// between messages and the disk has nothing to sync, and no sooner than
// releaseGap after the step before. On the benchmark machine, one session
// of 4 KiB mail sent just as 2 GB of deleted mail was compacted away (2000
// messages after 2000 of 1 MiB were deleted, on a new store, twice each in
// turn) had a p99 of 10.5-13.5 ms with steps of 32 MiB taken back to back,
// and 5.0-5.6 ms with steps after commits; its p50 was 1.23-1.45 and
// 1.33-1.44 ms. A step after every commit still slowed most of them: with
// the gap, the same session's p50 was 1.29-1.35 ms instead of 1.38-1.47
// and its p99 4.1-4.2 instead of 4.9-5.1 (twice each), and eight sessions
// of 10-recipient mail (200 messages, three times each) had a p50 of
// 5.5-6.3 ms instead of 6.9-7.8 and 72-84 device flushes instead of
// 117-133.
func (s *Store) releasePace(last time.Time) {
	if s.quiet() {
		return
	}
	if wait := time.Until(last.Add(cmp.Or(s.opts.releaseGap, releaseGap))); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.stop:
			t.Stop()
			return
		}
		if s.quiet() {
			return
		}
	}
	// A commit signalled before this step was asked for is stale.
	select {
	case <-s.committed:
	default:
	}
	t := time.NewTimer(cmp.Or(s.opts.releaseWait, releaseWait))
	defer t.Stop()
	select {
	case <-s.committed:
	case <-s.stop: // closing: no commit will come, and Close waits for the release
	case <-t.C:
	}
}

// releaseGap is the least time between two steps of a release while mail
// is on its way: 2 GB then takes at least 13 s to give back.
const releaseGap = 50 * time.Millisecond

// releasePacer returns the pace of one release: releasePace, with the
// time of the release's last step.
func (s *Store) releasePacer() func() {
	var last time.Time
	return func() {
		s.releasePace(last)
		last = time.Now()
	}
}

// closeFile closes f, which may be nil.
func closeFile(f *os.File) {
	if f != nil {
		f.Close()
	}
}

// catchUpCopy brings job's copy up to the store as it is now, checks it
// against the store entry by entry (their digests), and leaves it synced,
// closed.
func (s *Store) catchUpCopy(job *copyJob) error {
	seed := maphash.MakeSeed()
	want := newDigester(seed)
	if err := s.catchUpTx(job.dst, want); err != nil {
		return err
	}
	return checkCopy(job.dst, job.tmp, seed, want.sum())
}

// catchUpTx runs catchUp in one transaction of the copy dst, committed
// while the store's read transaction, whose keys and values it holds, is
// still open.
func (s *Store) catchUpTx(dst *bolt.DB, sum *digester) error {
	cur, err := s.db.Begin(false)
	if err != nil {
		return err
	}
	defer cur.Rollback()
	tx, err := dst.Begin(true)
	if err != nil {
		return err
	}
	if err := catchUp(cur, tx, sum); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// swapIn puts the copy tmp in the old file's place, with swapMu held. It
// returns the old database once the new one is in use.
func (s *Store) swapIn(tmp string, res *CompactResult) (old *bolt.DB, err error) {
	// Opened, and so locked, before the rename: no other process can take
	// the new file in between.
	db, err := openBolt(tmp, boltOpen{lockTimeout: s.opts.LockTimeout, freelist: s.freelist})
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("compact %s: %w", s.path, err)
	}
	s.step(stepSynced)
	if err := os.Rename(tmp, s.path); err != nil {
		db.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("compact %s: %w", s.path, err)
	}
	s.step(stepRenamed)
	// The new file is the database now, whatever follows.
	old, s.db, s.pageSize = s.db, db, db.Info().PageSize
	res.Compacted = true
	if fi, err := os.Stat(s.path); err == nil {
		res.After = fi.Size()
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return old, fmt.Errorf("compact %s: renamed, but the rename may not survive a crash: %w", s.path, err)
	}
	return old, nil
}

func (s *Store) step(at compactStep) {
	if s.opts.compactStep != nil {
		s.opts.compactStep(at, 0)
	}
}
