// Package store keeps all of minimail's persistent state in one bbolt file:
// users, their mailboxes and the outbound queue. It is the only package that
// imports bbolt.
//
// On-disk layout (schema version 7):
//
//	meta       "schema" -> SchemaVersion
//	users      lower-cased address -> JSON userRecord
//	mailboxes  sequence = last message id handed out (global, never reused)
//	  <addr>   one bucket per user
//	    "used" 8-byte big-endian sum of the sizes in index, kept with
//	           every change of it (schema 6; absent in a mailbox not
//	           changed since an older schema: summed from index instead)
//	    index  8-byte big-endian id -> index entry (no body):
//	           size, arrival time, epoch, body id (8 bytes each)
//	    head   8-byte big-endian id -> this copy's own trace header lines
//	           (absent when empty, or kept with the body, see bodies:
//	           copies stored before schema 5, and of big shared bodies)
//	    body   8-byte big-endian id -> whole message (schema 1 copies only)
//	bodies     sequence = last body id; 8-byte body id -> a bucket:
//	           "m" -> message bytes (CRLF), stored once for every
//	           mailbox that received them; "h" -> the head of the one
//	           copy, when the body was stored for one; "h" + 8-byte copy
//	           id -> that copy's head, when the body is shared and at most
//	           64 KiB (schema 5)
//	bodyrefs   8-byte body id -> 8-byte count of index entries naming it;
//	           absent for a body stored for one copy, whose bucket's
//	           sequence is 1 instead (schema 4)
//	queue      8-byte big-endian id -> JSON QueueEntry (no body)
//	queuebody  8-byte big-endian id -> raw message bytes
//	aliases    lower-cased alias (local@domain or @domain) -> JSON
//	           aliasRecord (created when missing at Open: no migration,
//	           see aliases.go)
//	meta "srs_secret" -> 32 random bytes, the SRS key (srs.go; drawn at
//	           the first read-write Open that finds none: no migration)
//	trace      the events `minimail trace` shows, and their indexes
//	           (created when missing at Open, see trace.go)
//	certs      ACME client key name -> PEM (account key; certificate and
//	           its key), created when missing at Open like aliases
//	           (certcache.go)
//
// A stored message is its mailbox's head followed by the shared body. One
// delivery to a hundred mailboxes writes the body once and a hundred small
// heads (Return-Path and Delivered-To differ per mailbox); the body goes when
// the last index entry naming it is deleted. The size in the index entry is
// the whole message, head included, which is what POP3 LIST reports.
//
// Every write is committed and fsync'd before the call returns. Writes from
// concurrent callers are grouped into one bbolt transaction (group commit), so
// many concurrent deliveries share one pair of fsyncs.
//
// # UIDLs
//
// A message's POP3 unique id (RFC 1939 section 7) is "<epoch>-<id>": the
// epoch as 16 hex digits and the message id in decimal. The id comes from
// the database's sequence; the epoch is a random 64-bit number drawn anew
// every time the database is opened, kept in memory, and written into each
// index entry the open store creates. So:
//
//   - A message's UIDL is fixed when it is stored and never changes: both
//     parts are read from its own index entry, however often the file is
//     reopened, backed up or restored.
//   - The database is the only opener while it is open, so within one epoch
//     the sequence hands out each id once.
//   - A restored older copy, a file re-created from scratch, a copy taken
//     with cp or a filesystem snapshot: whatever the file's history, the
//     open that serves it draws a new epoch, so every message stored from
//     then on has a UIDL no earlier open produced, even when its id was
//     handed out before by the file the copy was taken from. Detecting
//     copies instead (a flag in backups, the file's inode) would miss a
//     plain cp over the live file or a backup restored twice; a new epoch per
//     open costs nothing, because stored messages keep the epoch they got.
//   - Messages that were in the restored copy keep the UIDLs they had when
//     the copy was taken; a client that has seen them skips them, and one
//     that deleted them meanwhile may fetch them again.
//
// Two epochs collide with probability 2^-64 per pair of opens.
//
// Schema 1 files are migrated when opened read-write: the bodies and
// bodyrefs buckets are created (a mailbox's head bucket is created with its
// first schema 2 message) and nothing is rewritten. Schema 1 messages stay
// whole in their mailbox's body bucket; their 16-byte index entries (size,
// arrival time) have no epoch, so their UIDL stays the decimal id it was and
// an upgrade makes no client fetch its mail again. No schema 1
// UIDL is handed out after the upgrade, and schema 2 UIDLs contain "-", so
// the two kinds never meet. A minimail that reads only schema 1 refuses a
// schema 2 file.
//
// # Compaction
//
// bbolt reuses the pages of deleted mail but never gives them back: after a
// burst of large mail that POP3 users then delete, the file stays at its
// high-water mark. Compact writes the live data into a fresh file next to it,
// DIR/minimail.db.compact, and renames that over minimail.db:
//
//  1. Lock minimail.db exclusively, as Open does, so no server or admin
//     command uses it meanwhile, and remove a minimail.db.compact left by
//     an earlier crash.
//  2. Copy every bucket, key, value and bucket sequence in one read
//     transaction of the old file, then check that the copy holds the same
//     entries (a SHA-256 over both walks).
//  3. fsync the new file, then the directory.
//  4. Rename the new file over minimail.db (rename(2) is atomic: the name
//     points at one whole file or the other), fsync the directory again.
//
// A crash before the rename leaves the old file as it was, plus a partial
// or complete minimail.db.compact that the next Open or Compact removes; a
// crash after it leaves the new file, complete and synced. Either way no
// message is lost or changed: the new file holds the same bytes under the
// same keys, so UIDLs (stored per message), reference counts of shared
// bodies, the queue, the id sequences and the schema version carry over.
package store

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the on-disk layout this code writes. It also reads
// schemas 1 to 6, migrating them on Open.
const SchemaVersion = "7"

// schemaV1 is the layout before shared bodies and epochs; schemaV2 the one
// before a copy's index entry could hold its trace id (records.go);
// schemaV3 the one before a body of one copy kept its reference count in
// its bucket's sequence instead of bodyrefs; schemaV4 the one before that
// body's bucket held its copy's head too (mailbox.go, bodyWriter.finish);
// schemaV5 the one before a mailbox kept the running total of its sizes
// (usage); schemaV6 the one before the trace index was written in runs
// (trace_runs.go). An older minimail would take either for corruption (or
// serve messages without their heads, change a mailbox and leave its total
// wrong, or miss the events its index holds in runs): files are of the
// current schema from the first Open of this code on, and older code
// refuses them by their version instead. None of schemas 3 to 6 needs
// rewriting: their bodies all have their count in bodyrefs or their
// sequence, their heads are in the head buckets, where schema 5 looks when
// the body's bucket has none, a mailbox without a total is summed from its
// index until its next change writes one, and the flat trace index is
// read as the run before the first.
const (
	schemaV1 = "1"
	schemaV2 = "2"
	schemaV3 = "3"
	schemaV4 = "4"
	schemaV5 = "5"
	schemaV6 = "6"
)

// FileName is the database file inside data_dir.
const FileName = "minimail.db"

var (
	bucketMeta      = []byte("meta")
	bucketUsers     = []byte("users")
	bucketMailboxes = []byte("mailboxes")
	bucketIndex     = []byte("index")
	bucketBody      = []byte("body")
	bucketHead      = []byte("head")
	bucketBodies    = []byte("bodies")
	bucketBodyRefs  = []byte("bodyrefs")
	bucketQueue     = []byte("queue")
	bucketQueueBody = []byte("queuebody")
	keySchema       = []byte("schema")
)

// ErrLocked means another process holds the database open.
var ErrLocked = errors.New("database is in use by another process")

// Options tune a Store. The zero value is ready for production.
type Options struct {
	// LockTimeout bounds the wait for the file lock; 0 means 1 second.
	LockTimeout time.Duration
	// BcryptCost is the password hash cost; 0 means bcrypt.DefaultCost.
	// Tests lower it to keep suites fast.
	BcryptCost int

	// MaxConcurrentHashes bounds the bcrypt computations (logins, new
	// passwords) running at once; 0 means half of GOMAXPROCS, rounded up.
	// A burst of logins then leaves cores for deliveries.
	MaxConcurrentHashes int

	// freelist, when set, replaces productionFreelist: the benchmark that
	// chose it compares the alternatives.
	freelist *freelistSettings
	// compareHash replaces bcrypt.CompareHashAndPassword, for tests.
	compareHash func(hash, password []byte) error
	// now is the clock of the verified-password cache, for tests.
	now func() time.Time
	// linger and straggle replace groupLinger and groupStraggle, and
	// traceDelay and traceAlone the constants, for tests.
	linger, straggle       time.Duration
	traceDelay, traceAlone time.Duration

	// NoOnlineCompaction keeps the store from compacting its file while
	// open (see compact_online.go); Compacted, when set, is told of each
	// compaction it does.
	NoOnlineCompaction bool
	Compacted          func(CompactResult, error)
	// compactStep is CompactOptions.step for online compactions, and
	// compactEvery replaces onlineCompactEvery, for tests.
	compactStep  func(compactStep, int)
	compactEvery time.Duration
	// releaseStep, releaseWait and releaseGap replace the constants, and
	// released is told of each step of the old file's release, for tests.
	releaseStep int64
	releaseWait time.Duration
	releaseGap  time.Duration
	released    func(size int64)
	// giveBack replaces debug.FreeOSMemory after a big index pass, for
	// tests.
	giveBack func()
}

// freelistSettings are bbolt's two freelist knobs.
type freelistSettings struct {
	noSync bool // bbolt's NoFreelistSync
	kind   bolt.FreelistType
}

// productionFreelist is etcd's choice (mvcc/backend): a hashmap freelist,
// not written to the file. Once large mail is deleted the freelist holds
// every freed page, and bbolt's default (an array, synced) rewrites and
// fsyncs all of it on each commit and scans it on each allocation;
// BenchmarkAppendAfterChurn measured 4 KiB deliveries at 0.2 ms on a fresh
// store, 2.1 ms after 512 MiB of 1 MiB messages came and went, and 0.23 ms
// with this setting. The price is paid at Open, which rebuilds the freelist
// by walking the pages in use (22 ms for that 533 MiB file).
func productionFreelist() freelistSettings {
	return freelistSettings{kind: bolt.FreelistMapType, noSync: true}
}

// Store is an open database. It is safe for concurrent use.
type Store struct {
	// db is swapped by an online compaction (compact_online.go), which
	// holds swapMu exclusively; every other use holds it shared
	// (lockShared), except the committer's own, which cannot overlap a
	// compaction.
	db *bolt.DB
	// pageSize is db's page size. bbolt's Info reads it through the map,
	// which moves when a commit grows the file: only the committer and
	// read transactions may call it, so it is kept here for the others.
	pageSize int
	swapMu   sync.RWMutex
	swapGate atomic.Pointer[chan struct{}] // set while a swap waits for swapMu
	path     string
	freelist freelistSettings
	opts     Options

	retiring        sync.WaitGroup // old files an online compaction is closing
	lastCompactLook time.Time      // the committer's
	lastLookFree    int            // the committer's: freePages at the last look
	lookDue         *time.Timer    // the committer's: a look at the file put off, nil when none
	copying         *copyJob       // the committer's: an online compaction's copy being made, nil when none
	trace           tracePending   // the committer's: trace events not written yet (trace_pending.go)
	// tracePendingN is len(trace.events), for readers (flushTrace).
	tracePendingN atomic.Int64

	// closeMu orders writers against Close: a writer holds it shared while
	// handing its request to the committer, Close holds it exclusively while
	// marking the store closed, so no request is queued after the committer
	// has drained and left (it would wait forever).
	closeMu sync.RWMutex
	closed  bool
	writes  chan *writeReq
	stop    chan struct{}
	done    chan struct{}

	// epoch is this open's part of every UIDL it hands out (see the
	// package doc); never 0, which marks schema 1 messages.
	epoch uint64

	commits atomic.Int64 // committed write transactions, for benchmarks
	// committed is signalled after each commit, for the pace of an old
	// file's release (releasePace).
	committed chan struct{}
	// releasePending is set while a release of the map's resident pages
	// is scheduled (see mapped.go).
	releasePending atomic.Bool
	releaseMu      sync.Mutex // held by a running release
	// expected counts writes announced by Expect and not yet done;
	// expectEnded wakes a waiting committer when one is done.
	expected    atomic.Int64
	expectEnded chan struct{}
	// commitErr is the error of the last commit that failed on its way to
	// disk (not a request's own refusal), nil once one succeeds again:
	// Writable reports it.
	commitErr atomic.Pointer[error]
	// failedCommits counts the commits the disk failed.
	failedCommits atomic.Int64

	dummyOnce sync.Once
	dummy     []byte // see dummyHash

	hashSlots chan struct{} // see withHashSlot
	auths     *authCache    // passwords verified recently
}

type writeReq struct {
	fn  func(*bolt.Tx) error
	res chan error
	// size is about what fn writes: a message's octets, 0 for small
	// records. It bounds the bytes of a group (maxGroupBytes).
	size int
	// flushTrace makes the commit write the trace events waiting.
	flushTrace bool
}

// defaultHashSlots is half the cores, rounded up: logins can take half the
// machine, deliveries keep the rest.
func defaultHashSlots(procs int) int { return max(1, (procs+1)/2) }

// Open opens (creating if needed) DIR/minimail.db. A file that is not a
// bbolt database, is corrupt, or carries an unknown schema version gives an
// error and is left untouched.
func Open(dir string, opts Options) (*Store, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("data_dir %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("data_dir %s: not a directory", dir)
	}
	path := filepath.Join(dir, FileName)
	// An empty file is what an interrupted first Open leaves: bbolt
	// initialises it like a missing one.
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		// Look before touching: opening read-write lets bbolt write to the
		// file (it rewrites the freelist of files written without one), so
		// a file that may not be ours is first checked read-only.
		if err := checkExisting(path, opts.LockTimeout); err != nil {
			return nil, err
		}
	}
	freelist := productionFreelist()
	if opts.freelist != nil {
		freelist = *opts.freelist
	}
	db, err := openBolt(path, boltOpen{lockTimeout: opts.LockTimeout, freelist: freelist})
	if err != nil {
		return nil, err
	}
	// Only a Compact killed before its rename leaves this file, and only
	// the holder of the lock writes it. A file that cannot be removed
	// harms nothing but disk space; the next Compact reports it.
	removeCompactLeftover(path)
	if err := errCorrupt(func() error { return initSchema(db) }); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	epoch, err := newEpoch()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	hashes := opts.MaxConcurrentHashes
	if hashes <= 0 {
		hashes = defaultHashSlots(runtime.GOMAXPROCS(0))
	}
	s := &Store{
		db:          db,
		pageSize:    db.Info().PageSize,
		path:        path,
		freelist:    freelist,
		opts:        opts,
		epoch:       epoch,
		writes:      make(chan *writeReq, 256),
		expectEnded: make(chan struct{}, 1),
		committed:   make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		hashSlots:   make(chan struct{}, hashes),
		auths:       newAuthCache(opts.now),
	}
	go s.committer()
	// bbolt read every page in use to rebuild its freelist (etcd's
	// settings keep it off the disk): the whole file is resident now.
	s.touchedMap()
	return s, nil
}

// boltOpen says how openBolt opens a file.
type boltOpen struct {
	lockTimeout time.Duration
	readOnly    bool // a shared lock, no writes
	freelist    freelistSettings
	noSync      bool // no fsync per commit: for Compact's new file, synced once at the end
	// mapSize is the size bbolt maps the file at first: for Compact's
	// new file, the size of what it copies (see writeCompacted).
	mapSize int

	// opened, when set, is called with each file opened, before its lock
	// is taken (tests use it to order an open against a Compact).
	opened func(*os.File)
}

// maxReplacedOpens bounds how often openBolt retries a file that was
// replaced while it waited for the lock: each retry needs a whole Compact
// to have run in between.
const maxReplacedOpens = 10

// openBolt opens path and turns bbolt's errors into ones an operator can act
// on.
//
// The lock is taken on the file that was opened, and Compact renames a new
// file over path while it holds the lock on the old one: an opener that
// waited for that lock would get a file no longer at path, and mail stored
// in it would vanish when it closes. So after the lock is taken, the file
// must still be the one at path, or it is closed and path opened again.
func openBolt(path string, o boltOpen) (*bolt.DB, error) {
	for range maxReplacedOpens {
		db, file, err := openBoltOnce(path, o)
		if err != nil {
			return nil, err
		}
		held, herr := file.Stat()
		current, cerr := os.Stat(path)
		if herr == nil && cerr == nil && os.SameFile(held, current) {
			return db, nil
		}
		db.Close()
		if cerr != nil && !errors.Is(cerr, os.ErrNotExist) {
			return nil, fmt.Errorf("open %s: %w", path, cerr)
		}
		if herr != nil {
			return nil, fmt.Errorf("open %s: %w", path, herr)
		}
	}
	return nil, fmt.Errorf("open %s: replaced %d times while waiting for its lock", path, maxReplacedOpens)
}

func openBoltOnce(path string, o boltOpen) (db *bolt.DB, file *os.File, err error) {
	defer func() {
		// bbolt panics, rather than failing, on some corrupt pages (a bad
		// freelist is read while opening). Closing the file releases its
		// lock; the half-opened DB is abandoned.
		if r := recover(); r != nil {
			if file != nil {
				file.Close()
			}
			db, err = nil, fmt.Errorf("open %s: not a minimail database or corrupt: %v", path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         o.lockTimeout,
		ReadOnly:        o.readOnly,
		NoSync:          o.noSync,
		NoFreelistSync:  o.freelist.noSync,
		InitialMmapSize: o.mapSize,
		FreelistType:    o.freelist.kind,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			if err == nil && o.opened != nil {
				o.opened(f)
			}
			file = f
			return f, err
		},
	})
	if err == nil {
		return db, file, nil
	}
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, nil, fmt.Errorf("open %s: not a minimail database or corrupt: %w", path, err)
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return nil, nil, err // already names the file
	}
	return nil, nil, fmt.Errorf("open %s: %w", path, err)
}

// errCorrupt reports a bbolt panic on a damaged page as an error.
func errCorrupt(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("not a minimail database or corrupt: %v", r)
		}
	}()
	return fn()
}

// checkExisting opens an existing file read-only and refuses it unless it
// carries our schema version. A bbolt file without our meta bucket belongs to
// some other program.
func checkExisting(path string, lockTimeout time.Duration) error {
	db, err := openBolt(path, boltOpen{lockTimeout: lockTimeout, readOnly: true, freelist: productionFreelist()})
	if err != nil {
		return err
	}
	defer db.Close()
	var version []byte
	empty := true
	err = errCorrupt(func() error {
		return db.View(func(tx *bolt.Tx) error {
			if m := tx.Bucket(bucketMeta); m != nil {
				version = append([]byte(nil), m.Get(keySchema)...)
			}
			return tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		})
	})
	switch {
	case err != nil:
		return fmt.Errorf("open %s: %w", path, err)
	case version == nil && !empty:
		return fmt.Errorf("open %s: not a minimail database (no schema version)", path)
	case version != nil && !slices.Contains([]string{schemaV1, schemaV2, schemaV3, schemaV4, schemaV5, schemaV6, SchemaVersion}, string(version)):
		return fmt.Errorf("open %s: unknown schema version %q (this minimail reads %q to %q)", path, version, schemaV1, SchemaVersion)
	}
	return nil
}

// initSchema creates the buckets a new file needs (and the SRS secret), which is all a schema 1
// file (already checked by checkExisting) needs to become schema 2, and a
// schema 2 file to become schema 3 (whose index entries are schema 2's,
// with a trace id or without), a schema 3 file schema 4 (whose
// reference counts are all in bodyrefs, where schema 4 looks first), and a
// schema 4 file schema 5 (whose heads are all in the head buckets, where
// schema 5 looks when a body's bucket has none), and a schema 5 file
// schema 6 (whose mailboxes are summed from their index until a change
// writes their total, see usage), and a schema 6 file schema 7 (whose
// flat trace index is read as the run before the first, see
// trace_runs.go); on a
// current file it changes nothing but the version key, which it rewrites
// with the same value. The aliases bucket, added after schema 2, is created
// here when missing like the others: it needs no migration and no new
// version (aliases.go); so are the certs bucket (certcache.go) and the
// greylist bucket (greylist.go), and the trace buckets (trace.go).
func initSchema(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketUsers, bucketMailboxes, bucketBodies, bucketBodyRefs, bucketQueue, bucketQueueBody, bucketAliases, bucketCerts, bucketGreylist} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := initTrace(tx); err != nil {
			return err
		}
		if err := ensureSRSSecret(tx.Bucket(bucketMeta)); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(SchemaVersion))
	})
}

// newEpoch draws a random non-zero epoch (0 marks schema 1 messages).
func newEpoch() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("epoch: %w", err)
		}
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e, nil
		}
	}
}

// Close waits for pending writes and closes the file.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	s.closeMu.Unlock()
	<-s.done
	s.retiring.Wait()
	return s.db.Close()
}

// Writable reports whether the store takes writes, without making one: it
// is open, read-write, and its last commit did not fail on the way to disk
// (a full or failing disk). Every write reports its own result, so the
// last one is fresh evidence at no cost; a probe that wrote would add an
// fsync per health check.
func (s *Store) Writable() error {
	s.closeMu.RLock()
	closed := s.closed
	s.closeMu.RUnlock()
	switch {
	case closed:
		return errClosed
	case s.readOnly():
		return errors.New("store is open read-only")
	}
	if err := s.commitErr.Load(); err != nil {
		return fmt.Errorf("last commit failed: %w", *err)
	}
	return nil
}

// Commits reports how many write transactions (each one fsync'd commit) the
// store has made; benchmarks divide it by the messages written.
func (s *Store) Commits() int64 { return s.commits.Load() }

// PagesWritten reports how many pages the store's commits have written,
// for benchmarks: the size of what each fsync has to flush.
func (s *Store) PagesWritten() int64 {
	defer s.lockShared()()
	st := s.db.Stats()
	return st.TxStats.GetWrite()
}

func (s *Store) readOnly() bool {
	defer s.lockShared()()
	return s.db.IsReadOnly()
}

// errClosed is returned for writes attempted after Close.
var errClosed = errors.New("store is closed")

// update runs fn in a write transaction that may be shared with other
// concurrent callers, and returns once that transaction is committed to disk.
// fn may run more than once (if a sibling in the group fails, each is retried
// alone), so it must not have side effects outside tx.
func (s *Store) update(fn func(*bolt.Tx) error) error { return s.updateSized(0, fn) }

// updateSized is update for a write of about size octets (a message).
func (s *Store) updateSized(size int, fn func(*bolt.Tx) error) error {
	return s.submit(&writeReq{fn: fn, size: size})
}

// submit hands req to the committer and waits for its commit.
func (s *Store) submit(req *writeReq) error {
	req.res = make(chan error, 1)
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return errClosed
	}
	// The committer runs until stop is closed, which cannot happen while we
	// hold closeMu, so this send always completes.
	s.writes <- req
	s.closeMu.RUnlock()
	return <-req.res
}

// maxGroup bounds a group commit so one transaction stays short.
const maxGroup = 128

// maxGroupBytes bounds the message octets of a group commit. bbolt copies
// every page a transaction writes into memory of its own until the commit
// is done: with 32 sessions of 1 MiB mail, groups of twenty messages made
// that copy a fifth of the process. Eight megabytes keep the groups of
// eight sessions of such mail whole, and are many times what the fsync
// costs.
const maxGroupBytes = 8 << 20

// groupFull reports whether the group takes no more writes.
func groupFull(group []*writeReq) bool {
	return len(group) >= maxGroup || groupBytes(group) >= maxGroupBytes
}

// groupBytes is the message octets of the group's writes.
func groupBytes(group []*writeReq) int {
	n := 0
	for _, req := range group {
		n += req.size
	}
	return n
}

// committer is the single writer. It takes whatever requests are waiting,
// runs them in one transaction and commits once: with one caller there is no
// added delay, with many the fsync cost is shared (group commit).
func (s *Store) committer() {
	defer close(s.done)
	group := make([]*writeReq, 0, maxGroup)
	for {
		group = group[:0]
		select {
		case req := <-s.writes:
			group = append(group, req)
		case <-s.lookDueC():
			s.lookDue = nil
			s.maybeCompact()
			continue
		case <-s.copyingDone():
			s.finishCopying()
			continue
		case <-s.traceAloneC():
			s.writeTraceAlone()
			continue
		case <-s.stop:
			if s.lookDue != nil {
				s.lookDue.Stop()
			}
			s.stopCopying()
			s.drain()
			if len(s.trace.events) > 0 {
				s.commitGroup(nil)
			}
			return
		}
		s.fill(&group)
		s.awaitExpected(&group)
		s.commitGroup(group)
		if s.copying != nil {
			s.copying.written += groupBytes(group)
		}
		// The array is reused: without this its old entries would keep
		// the last group's writes, and the messages they captured, alive
		// until as many writes came again (megabytes for each big
		// message of a burst).
		clear(group)
		s.maybeCompact()
	}
}

// groupLinger bounds how long the committer waits for writes on their way
// before an fsync. A write that takes longer (a big message still arriving,
// a slow client) is left for the next commit. groupStraggle bounds the wait
// for the last third of them, once two thirds are there (see Expect).
const (
	groupLinger   = 2 * time.Millisecond
	groupStraggle = 500 * time.Microsecond
)

// Expect announces a write on its way: a mail transaction is open and its
// message will be stored in a moment. done ends the announcement, once the
// message is stored or the transaction is over; calling it again does
// nothing.
//
// With writes expected the committer waits for them, up to groupLinger,
// before it commits, so that they share its two fsyncs (the idea of
// PostgreSQL's commit_delay and commit_siblings). It waits for two thirds
// of them, and then for the rest only groupStraggle more: a transaction
// that is open but slow (a client sending its message at a trickle, or
// taking its time between RCPTs) would otherwise hold up every commit for
// the whole linger. Sessions that are quick come in waves: while a commit
// is on its way to the disk the others finish their messages, and the
// last of a wave comes a fraction of a millisecond after the first two
// thirds. Taken in the same commit, they do not make a small one of their
// own just after it. At eight sessions of 4 KiB mail, against two thirds
// alone (minimail alone, `run-bench.sh --only ss,sl --sizes 4096 --conc
// "8 32" -r 1`, twice each, in turn): 0.26 to 0.30 device flushes a
// message instead of 0.45 to 0.47, 0.26 to 0.29 ms of CPU instead of 0.32
// to 0.37, and 3136 to 3683 messages a second instead of 2699 to 3059.
// Waiting for all of them, up to the whole linger, measured the same on
// that benchmark, where no client is slow. A lone writer never waits.
func (s *Store) Expect() (done func()) {
	s.expected.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.expected.Add(-1)
			// A committer waiting for this write recounts.
			select {
			case s.expectEnded <- struct{}{}:
			default:
			}
		})
	}
}

// groupTarget is how many writes a group waits for: two thirds of those
// expected, rounded up.
func (s *Store) groupTarget() int {
	return min(int(2*s.expected.Load()+2)/3, maxGroup)
}

// allExpected is every write expected, up to maxGroup.
func (s *Store) allExpected() int {
	return min(int(s.expected.Load()), maxGroup)
}

// awaitExpected adds to the group, up to groupLinger in all, until it holds
// two thirds of the expected writes (rounded up), and then, up to
// groupStraggle more, until it holds all of them. The writes in the group
// are expected too, until their callers are answered.
func (s *Store) awaitExpected(group *[]*writeReq) {
	if len(*group) >= s.allExpected() || groupFull(*group) {
		return
	}
	linger := time.NewTimer(cmp.Or(s.opts.linger, groupLinger))
	defer linger.Stop()
	if !s.gather(group, s.groupTarget, linger.C, nil) {
		return
	}
	straggle := time.NewTimer(cmp.Or(s.opts.straggle, groupStraggle))
	defer straggle.Stop()
	s.gather(group, s.allExpected, linger.C, straggle.C)
}

// gather adds writes to the group until it holds target() of them or is
// full, and reports whether it got there before either timer fired.
func (s *Store) gather(group *[]*writeReq, target func() int, linger, straggle <-chan time.Time) bool {
	for len(*group) < target() && !groupFull(*group) {
		select {
		case req := <-s.writes:
			*group = append(*group, req)
		case <-s.expectEnded:
			// One on its way was abandoned, or was answered: fewer to wait for.
		case <-linger:
			return false
		case <-straggle:
			return false
		}
	}
	return true
}

// fill adds every write already waiting, up to maxGroup.
func (s *Store) fill(group *[]*writeReq) {
	for !groupFull(*group) {
		select {
		case req := <-s.writes:
			*group = append(*group, req)
		default:
			return
		}
	}
}

// drain serves the writes queued before Close so no caller blocks forever.
func (s *Store) drain() {
	for {
		select {
		case req := <-s.writes:
			s.commitGroup([]*writeReq{req})
		default:
			return
		}
	}
}

// commitGroup runs group's writes in one transaction and commits it, with
// the trace events waiting when they are due (trace_pending.go); a group
// of none writes them alone. It reports whether that commit succeeded (not
// when a refused write made it commit the others one by one instead).
func (s *Store) commitGroup(group []*writeReq) bool {
	refused := false // a request's own error, not the disk's
	traced := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, req := range group {
			if err := req.fn(tx); err != nil {
				refused = true
				return err
			}
		}
		if traced = s.traceDue(group); traced {
			return s.writeTrace(tx)
		}
		return nil
	})
	// A write reads the tree's pages on its way to the leaves it changes.
	s.touchedMap()
	switch {
	case err == nil:
		s.commitErr.Store(nil)
	case !refused:
		s.commitErr.Store(&err)
	}
	if err == nil {
		// Before the callers hear of their commit: a caller that reads
		// the trace next finds its events waiting (flushTrace).
		s.traceCommitted(traced)
		s.commits.Add(1)
		for _, req := range group {
			req.res <- nil
		}
		select {
		case s.committed <- struct{}{}:
		default:
		}
		return true
	}
	s.trace.dropTx()
	if !refused {
		// The disk failed the commit (full, or failing). Each of the group
		// gets its error, and none is tried again alone: a commit that
		// fails on its way to the disk makes bbolt rebuild its freelist by
		// reading every page in use (the price of NoFreelistSync), and one
		// more for each write of the group would hold up the store that
		// many times on a full disk, to take perhaps the smallest of them.
		// Their senders are told to try again (4xx) and do.
		s.failedCommits.Add(1)
		for _, req := range group {
			req.res <- err
		}
		return false
	}
	if len(group) == 1 {
		group[0].res <- err
		return false
	}
	// One request failed and rolled back the whole group: retry each alone so
	// only the failing one sees its error.
	for _, req := range group {
		s.commitGroup([]*writeReq{req})
	}
	return false
}

// Backup writes a consistent copy of the whole database to path, while the
// store stays in use, with the trace events waiting (trace_pending.go).
// The copy is fsync'd before Backup returns.
func (s *Store) Backup(path string) error {
	s.flushTrace()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	err = s.view(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(f)
		return err
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("backup %s: %w", path, err)
	}
	return nil
}

func idKey(id uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, id)
	return k
}

func keyID(k []byte) uint64 { return binary.BigEndian.Uint64(k) }
