package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// compactSuffix names Compact's new file: FileName + compactSuffix.
const compactSuffix = ".compact"

// When CompactIfWasteful compacts, that is, when serve compacts before it
// starts. Compaction copies the live data, so it takes as long as writing
// it: at least half the file being free means the copy writes less than it
// gives back and needs less free disk space than the file takes. Below
// autoCompactMinBytes the space at stake does not justify delaying a start.
const (
	autoCompactMinBytes  = 64 << 20
	autoCompactFreeShare = 0.5
)

// maxCopyTxBytes bounds the data one write transaction of the new file
// holds before it is committed (bbolt keeps a transaction's pages in
// memory until then, and for small entries its nodes take several times
// their size). An online compaction runs while serving, so this is memory
// on top of the mail in flight. Together with the copy's freelist (see
// writeCompacted), 1 MiB took a compaction of 26 MB of live data from a
// peak of 39-43 MB above the process's PSS to 2-7 MB, and no longer
// (BenchmarkCompactOnline's peak-rise-MB).
const maxCopyTxBytes = 1 << 20

// maxCopyTxEntries bounds the entries of one such transaction too. Each
// Put finds its place by a binary search of the leaf's node, which holds
// every entry put in the transaction until it commits, and grows it: a
// megabyte of the trace index's small keys is tens of thousands of
// entries. The compaction of 26 MB of live data (while serving, when every
// write waited for it) took 249-252 ms without this bound and 204-220 ms with it
// (BenchmarkCompactOnline, three runs each in turn; 1024 measured the same
// as 2048). Its more frequent commits read more of the copy back through
// the map, which copier.visit releases after each.
const maxCopyTxEntries = 2048

// CompactOptions tune Compact. The zero value is ready for production.
type CompactOptions struct {
	// LockTimeout bounds the wait for the file lock; 0 means 1 second.
	LockTimeout time.Duration

	// step, when set, is called as compaction proceeds; tests stop or kill
	// it there.
	step func(s compactStep, entries int)
}

// compactStep is where a compaction is.
type compactStep int

const (
	stepCopied  compactStep = iota // one more entry (key or bucket) copied
	stepSynced                     // the new file is complete and synced, not renamed
	stepRenamed                    // renamed over minimail.db, directory not yet synced
)

// CompactResult tells what a compaction did.
type CompactResult struct {
	Compacted bool
	// Before and After are the file's sizes in bytes; After is Before when
	// nothing was done.
	Before, After int64
	// Free is the bytes in free pages before: what compaction gives back,
	// give or take the pages it fills.
	Free int64
	// Duration is the whole call, from waiting for the lock to the last
	// fsync.
	Duration time.Duration
	// WritesWaited is, for a compaction while serving, how long writes
	// waited: while the copy caught up and was swapped in.
	WritesWaited time.Duration
}

// Compact rewrites DIR/minimail.db with only its live data, while no one
// else has it open (ErrLocked otherwise). The package doc (Compaction)
// says how, and why a crash at any point loses nothing.
func Compact(dir string, opts CompactOptions) (CompactResult, error) {
	return compact(dir, opts, func(int64, int64) bool { return true })
}

// CompactIfWasteful compacts DIR/minimail.db when it is larger than
// autoCompactMinBytes and more than autoCompactFreeShare of it is free
// pages; otherwise it changes nothing. A missing file is not an error: Open
// will create it.
func CompactIfWasteful(dir string, opts CompactOptions) (CompactResult, error) {
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if errors.Is(err, os.ErrNotExist) {
		return CompactResult{}, nil
	}
	if err != nil {
		return CompactResult{}, fmt.Errorf("compact: %w", err)
	}
	if fi.Size() <= autoCompactMinBytes {
		return CompactResult{Before: fi.Size(), After: fi.Size()}, nil
	}
	return compact(dir, opts, wasteful)
}

// wasteful is CompactIfWasteful's rule.
func wasteful(size, free int64) bool {
	return size > autoCompactMinBytes && float64(free) > autoCompactFreeShare*float64(size)
}

func compact(dir string, opts CompactOptions, worth func(size, free int64) bool) (CompactResult, error) {
	start := time.Now()
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	if opts.step == nil {
		opts.step = func(compactStep, int) {}
	}
	path := filepath.Join(dir, FileName)
	fi, err := os.Stat(path)
	if err != nil {
		return CompactResult{}, fmt.Errorf("compact: %w", err)
	}
	if fi.Size() == 0 {
		return CompactResult{}, nil // what an interrupted first Open leaves
	}
	if err := checkExisting(path, opts.LockTimeout); err != nil {
		return CompactResult{}, err
	}
	src, err := openBolt(path, boltOpen{lockTimeout: opts.LockTimeout, freelist: productionFreelist()})
	if err != nil {
		return CompactResult{}, err
	}
	// Closed after the rename: the lock on the old file is held to the
	// end, and openers that waited for it find the new file (openBolt).
	defer src.Close()
	if err := removeCompactLeftover(path); err != nil {
		return CompactResult{}, fmt.Errorf("compact: %w", err)
	}
	if fi, err = os.Stat(path); err != nil {
		return CompactResult{}, fmt.Errorf("compact: %w", err)
	}
	stats := src.Stats()
	res := CompactResult{
		Before: fi.Size(),
		After:  fi.Size(),
		Free:   int64(stats.FreePageN+stats.PendingPageN) * int64(src.Info().PageSize),
	}
	if !worth(res.Before, res.Free) {
		return res, nil
	}
	tmp := path + compactSuffix
	if err := writeCompacted(src, tmp, opts); err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	opts.step(stepSynced, 0)
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	opts.step(stepRenamed, 0)
	if err := syncDir(dir); err != nil {
		return res, fmt.Errorf("compact %s: renamed, but the rename may not survive a crash: %w", path, err)
	}
	res.Compacted = true
	res.Duration = time.Since(start)
	if fi, err := os.Stat(path); err == nil {
		res.After = fi.Size()
	}
	return res, nil
}

// writeCompacted copies src into a new file tmp, checks the copy and
// leaves tmp synced, its directory entry too.
func writeCompacted(src *bolt.DB, tmp string, opts CompactOptions) error {
	var used int64
	if err := src.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		return err
	}
	dst, err := createCopy(tmp, liveSize(src, used), opts.LockTimeout)
	if err != nil {
		return err
	}
	seed := maphash.MakeSeed()
	want, err := copyLive(src, dst, newDigester(seed), opts.step)
	if err != nil {
		dst.Close()
		return err
	}
	return checkCopy(dst, tmp, seed, want)
}

// checkCopy compares the digest of the copy dst, in the file tmp, with
// want, the digest of what it was copied from (with seed), closes it and
// leaves it synced, its directory entry too.
func checkCopy(dst *bolt.DB, tmp string, seed maphash.Seed, want []byte) error {
	got, err := digest(dst, newDigester(seed))
	if err == nil && !bytes.Equal(got, want) {
		err = errors.New("the copy differs from the original")
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	return syncDir(filepath.Dir(tmp))
}

// liveSize is what a copy of db takes: the pages in use (used, a
// transaction's Size), less the free ones.
func liveSize(db *bolt.DB, used int64) int64 {
	st := db.Stats()
	return max(0, used-int64(st.FreePageN+st.PendingPageN)*int64(db.Info().PageSize))
}

// createCopy creates the empty file tmp, never one that exists, and opens
// it for a copy of live octets.
func createCopy(tmp string, live int64, lockTimeout time.Duration) (*bolt.DB, error) {
	// Created here, empty, so that an existing file is never written
	// over; bbolt initialises an empty file like a new one.
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	// No fsync per commit: the file means nothing until it is complete,
	// and it is synced once it is. Mapped at the size of what it copies
	// from the start: each time bbolt grows its map, it first copies out
	// every key and value the open transaction holds, which made half
	// the time of a copy of 26 MB. Half as much again as the live data
	// leaves room for pages less full than the original's.
	//
	// The copy's freelist is written to it, unlike the store's: opening a
	// file without one rebuilds it by reading every page in use, and an
	// online compaction opens the copy while serving, so all of the live
	// data came into the process's resident set at once. A compacted
	// file's freelist is a few pages; the store's first commit drops it
	// from the file again.
	copyFreelist := productionFreelist()
	copyFreelist.noSync = false
	return openBolt(tmp, boltOpen{lockTimeout: lockTimeout, freelist: copyFreelist, noSync: true, mapSize: int(live + live/2)})
}

// copier writes the entries of one walk into dst, committing every
// maxCopyTxBytes.
type copier struct {
	dst     *bolt.DB
	tx      *bolt.Tx
	pending int
	// txEntries counts the entries of the open transaction.
	txEntries int
	entries   int
	sum       *digester // nil: no digest
	step      func(compactStep, int)
	stop      *atomic.Bool // set: end the copy (errCopyStopped); nil: never
}

// errCopyStopped ends a copy whose store is closing.
var errCopyStopped = errors.New("compact: the store is closing")

// copyLive copies every entry of src into the empty dst and returns the
// digest (sum) of what it read.
func copyLive(src, dst *bolt.DB, sum *digester, step func(compactStep, int)) (digest []byte, err error) {
	err = src.View(func(stx *bolt.Tx) error {
		digest, err = copySnapshot(stx, dst, sum, step, nil)
		return err
	})
	return digest, err
}

// copySnapshot copies every entry that the read transaction stx sees into
// the empty dst, and returns the digest of what it read when sum is set.
func copySnapshot(stx *bolt.Tx, dst *bolt.DB, sum *digester, step func(compactStep, int), stop *atomic.Bool) ([]byte, error) {
	tx, err := dst.Begin(true)
	if err != nil {
		return nil, err
	}
	c := &copier{dst: dst, tx: tx, sum: sum, step: step, stop: stop}
	defer func() { c.tx.Rollback() }() // a no-op once committed
	err = errCorrupt(func() error {
		rel := mapRelease{db: stx.DB(), size: stx.Size()}
		return walk(stx, func(path [][]byte, k, v []byte, sub *bolt.Bucket) error {
			rel.read(len(k) + len(v))
			return c.visit(path, k, v, sub)
		})
	})
	if err != nil {
		return nil, err
	}
	if err := c.tx.Commit(); err != nil {
		return nil, err
	}
	if sum == nil {
		return nil, nil
	}
	return sum.sum(), nil
}

func (c *copier) visit(path [][]byte, k, v []byte, sub *bolt.Bucket) error {
	if c.stop != nil && c.stop.Load() {
		return errCopyStopped
	}
	if c.sum != nil {
		c.sum.add(path, k, v, sub)
	}
	if c.pending >= maxCopyTxBytes || c.txEntries >= maxCopyTxEntries {
		size := c.tx.Size()
		if err := c.tx.Commit(); err != nil {
			return err
		}
		// Each transaction reads the pages the one before wrote on its
		// way to the last leaves: give those back too (see mapRelease).
		// No transaction is open, so the map cannot move.
		_ = releaseMapped(c.dst.Info().Data, size)
		tx, err := c.dst.Begin(true)
		if err != nil {
			return err
		}
		c.tx, c.pending, c.txEntries = tx, 0, 0
	}
	c.pending += len(k) + len(v)
	c.txEntries++
	var parent *bolt.Bucket
	for i, name := range path {
		if i == 0 {
			parent = c.tx.Bucket(name)
		} else {
			parent = parent.Bucket(name)
		}
	}
	var err error
	switch {
	case sub != nil && parent == nil:
		var b *bolt.Bucket
		if b, err = c.tx.CreateBucket(k); err == nil {
			err = b.SetSequence(sub.Sequence())
		}
	case sub != nil:
		var b *bolt.Bucket
		if b, err = parent.CreateBucket(k); err == nil {
			err = b.SetSequence(sub.Sequence())
		}
	default:
		// Full pages: ids only grow, so new keys go after the last
		// page; only new addresses (users, mailboxes) land between
		// keys, and there a page splits once.
		parent.FillPercent = 1.0
		err = parent.Put(k, v)
	}
	if err != nil {
		return fmt.Errorf("copy %q/%q: %w", bytes.Join(path, []byte("/")), k, err)
	}
	c.entries++
	c.step(stepCopied, c.entries)
	return nil
}

// digest is the sum of every entry of db, as copyLive computes it.
func digest(db *bolt.DB, sum *digester) ([]byte, error) {
	err := db.View(func(tx *bolt.Tx) error {
		rel := mapRelease{db: db, size: tx.Size()}
		return walk(tx, func(path [][]byte, k, v []byte, sub *bolt.Bucket) error {
			rel.read(len(k) + len(v))
			sum.add(path, k, v, sub)
			return nil
		})
	})
	return sum.sum(), err
}

// mapRelease gives back the pages a walk of a whole store reads through
// bbolt's map (see mapped.go) as it goes: a compaction while serving reads
// the live data twice, the original and the copy, which would otherwise
// stay in the process's resident set until the old file is closed. Used
// inside a transaction of db, while the map cannot move.
type mapRelease struct {
	db     *bolt.DB
	size   int64 // the transaction's tx.Size()
	unread int   // octets read since the last release
}

// mapReleaseEvery is how much a walk reads between two releases: with
// the kernel's fault-around, up to a few times that stays mapped.
const mapReleaseEvery = 1 << 20

func (r *mapRelease) read(n int) {
	if r.unread += n; r.unread >= mapReleaseEvery {
		r.unread = 0
		_ = releaseMapped(r.db.Info().Data, r.size)
	}
}

// digester sums the entries of a store, for the check of a copy against
// its original. The check is against a copy gone wrong, not an adversary:
// a fast 64-bit hash, seeded afresh for each copy, does (SHA-256 took a
// third of the copy's time).
type digester struct {
	h       maphash.Hash
	framing []byte // one entry's bytes but its value, reused
}

func newDigester(seed maphash.Seed) *digester {
	d := &digester{}
	d.h.SetSeed(seed)
	return d
}

// add feeds one entry, every part length-prefixed so that no two
// different entries feed the same bytes. The framing goes in one write:
// a write of each part took a quarter of a compaction's time.
func (d *digester) add(path [][]byte, k, v []byte, sub *bolt.Bucket) {
	b := binary.AppendUvarint(d.framing[:0], uint64(len(path)))
	for _, p := range path {
		b = append(binary.AppendUvarint(b, uint64(len(p))), p...)
	}
	b = append(binary.AppendUvarint(b, uint64(len(k))), k...)
	if sub != nil {
		b = binary.AppendUvarint(append(b, 'b'), sub.Sequence())
	} else {
		b = binary.AppendUvarint(append(b, 'v'), uint64(len(v)))
	}
	d.h.Write(b)
	d.h.Write(v) // nil for a bucket
	d.framing = b
}

func (d *digester) sum() []byte { return d.h.Sum(nil) }

// walk calls fn for every entry of tx, depth first in key order: with sub
// set for a bucket (before its own entries), with v for a value. path names
// the buckets above the entry; fn must not keep it.
func walk(tx *bolt.Tx, fn func(path [][]byte, k, v []byte, sub *bolt.Bucket) error) error {
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walkBucket(nil, name, b, fn) })
}

// walkBucket visits the bucket b, named name inside path, and everything in
// it.
func walkBucket(path [][]byte, name []byte, b *bolt.Bucket, fn func(path [][]byte, k, v []byte, sub *bolt.Bucket) error) error {
	if err := fn(path, name, nil, b); err != nil {
		return err
	}
	return walkEntries(append(path, name), b, fn)
}

// walkEntries visits everything in the bucket b, whose path is path.
func walkEntries(path [][]byte, b *bolt.Bucket, fn func(path [][]byte, k, v []byte, sub *bolt.Bucket) error) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if sub := b.Bucket(k); sub != nil {
				return walkBucket(path, k, sub, fn)
			}
			v = []byte{}
		}
		return fn(path, k, v, nil)
	})
}

// removeCompactLeftover removes the new file of a Compact that did not get
// to its rename.
func removeCompactLeftover(path string) error {
	err := os.Remove(path + compactSuffix)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes the directory's entries (a created or renamed file)
// durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
