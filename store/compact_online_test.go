package store

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

// compactions records what an online compaction reported.
type compactions struct {
	mu   sync.Mutex
	done []CompactResult
	errs []error
}

func (c *compactions) record(r CompactResult, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	c.done = append(c.done, r)
}

// wait returns once a compaction was reported (it runs in the committer
// after the commit that called for it has been answered), or after ten
// seconds.
func (c *compactions) wait() ([]CompactResult, []error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		done, errs := c.get()
		if len(done)+len(errs) > 0 || time.Now().After(deadline) {
			return done, errs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *compactions) get() ([]CompactResult, []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.done), slices.Clone(c.errs)
}

// bigMailComesAndGoes stores n MiB of mail for addr and deletes it, which
// leaves the file over autoCompactMinBytes and mostly free.
func bigMailComesAndGoes(t testing.TB, s *Store, addr string, n int) {
	t.Helper()
	big := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16)
	var ids []uint64
	for range n {
		id, err := s.Append(addr, big)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := s.Delete(addr, ids); err != nil {
		t.Fatal(err)
	}
}

func TestCompactOnline_GivesBackTheSpaceOfDeletedMail(t *testing.T) {
	var c compactions
	s := openInternal(t, Options{Compacted: c.record, compactEvery: time.Nanosecond})
	for _, u := range []string{"alice@example.test", "bob@example.test"} {
		if err := s.AddUser(u, "password-12345"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if _, err := s.Append("bob@example.test", []byte(fmt.Sprintf("Subject: %d\r\n\r\nkept\r\n", i))); err != nil {
			t.Fatal(err)
		}
	}
	wantUIDLs := uidls(t, s, []string{"alice@example.test", "bob@example.test"})
	bigMailComesAndGoes(t, s, "alice@example.test", 80)

	done, errs := c.wait()
	if len(errs) > 0 || len(done) != 1 {
		t.Fatalf("compactions %+v, errors %v; want one", done, errs)
	}
	if r := done[0]; !r.Compacted || r.Before < autoCompactMinBytes || r.After > r.Before/4 {
		t.Errorf("compaction %+v: the deleted mail's space is not given back", r)
	}
	if fi, err := os.Stat(filepath.Join(filepath.Dir(s.path), FileName)); err != nil || fi.Size() != done[0].After {
		t.Errorf("file now %v (%v), compaction said %d", fi.Size(), err, done[0].After)
	}
	// The store goes on with the new file: same mail, same UIDLs, new
	// writes land in it and outlive a reopen.
	if got := uidls(t, s, []string{"alice@example.test", "bob@example.test"}); !maps.EqualFunc(got, wantUIDLs, slices.Equal) {
		t.Errorf("UIDLs %v, want %v", got, wantUIDLs)
	}
	if _, err := s.LookupUser("alice@example.test"); err != nil {
		t.Error(err)
	}
	id, err := s.Append("alice@example.test", []byte("Subject: after\r\n\r\nnew\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := s.Read("alice@example.test", id); err != nil || !bytes.Contains(msg, []byte("new")) {
		t.Fatalf("read back %q %v", msg, err)
	}
	dir := filepath.Dir(s.path)
	s.Close()
	s2, err := Open(dir, Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if msg, err := s2.Read("alice@example.test", id); err != nil || !bytes.Contains(msg, []byte("new")) {
		t.Fatalf("after reopening: %q %v", msg, err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+compactSuffix)); !os.IsNotExist(err) {
		t.Errorf("left a %s behind: %v", compactSuffix, err)
	}
}

// Mail deleted while a transaction is open is not compacted then, when the
// copy would take more than a moment (writes wait for its catch-up),
// but once the transaction is over, though no commit follows: the
// committer looks again on its own.
func TestCompactOnline_LooksAgainWhenTheTransactionsAreOver(t *testing.T) {
	var c compactions
	s := openInternal(t, Options{Compacted: c.record, compactEvery: 50 * time.Millisecond})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	// More than a pause's worth of live mail stays.
	kept := bytes.Repeat([]byte("k"), 1<<20)
	for range 6 {
		if _, err := s.Append("alice@example.test", kept); err != nil {
			t.Fatal(err)
		}
	}
	done := s.Expect() // an SMTP transaction, open
	bigMailComesAndGoes(t, s, "alice@example.test", 80)
	time.Sleep(200 * time.Millisecond)
	if got, errs := c.get(); len(got)+len(errs) > 0 {
		t.Fatalf("compacted with a transaction open: %+v %v", got, errs)
	}
	done()
	if got, errs := c.wait(); len(got) != 1 || len(errs) > 0 {
		t.Fatalf("compactions %+v, errors %v after the transaction ended; want one", got, errs)
	}
}

// A quiet store compacts right after the deletion, however recent its last
// look: mail that follows within the second (the next session's) would
// otherwise keep a big copy waiting, and the freelist's memory held, for as
// long as transactions stay open.
func TestCompactOnline_QuietStoreLooksAtOnce(t *testing.T) {
	var c compactions
	s := openInternal(t, Options{Compacted: c.record, compactEvery: time.Hour})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err) // the first look, an hour before the next is due
	}
	bigMailComesAndGoes(t, s, "alice@example.test", 80)
	if got, errs := c.wait(); len(got) != 1 || len(errs) > 0 || !got[0].Compacted {
		t.Fatalf("compactions %+v, errors %v; want one at once", got, errs)
	}
	// While mail is on its way, looks stay an hour apart.
	defer s.Expect()()
	bigMailComesAndGoes(t, s, "alice@example.test", 80)
	time.Sleep(200 * time.Millisecond)
	if got, errs := c.get(); len(got) != 1 || len(errs) > 0 {
		t.Fatalf("compactions %+v, errors %v; want no second one with a transaction open", got, errs)
	}
}

// A tiny copy is made at once, with transactions open.
func TestCompactOnline_TinyCopyDoesNotWaitForQuiet(t *testing.T) {
	var c compactions
	s := openInternal(t, Options{Compacted: c.record, compactEvery: time.Nanosecond})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	defer s.Expect()()
	bigMailComesAndGoes(t, s, "alice@example.test", 80)
	if got, errs := c.wait(); len(got) != 1 || len(errs) > 0 {
		t.Fatalf("compactions %+v, errors %v; want one", got, errs)
	}
}

// A read that stays open (a backup streaming to a slow disk) puts the
// compaction off rather than stalling every other read behind it: reads
// started meanwhile wait at most swapWait. Once it is over, the committer
// compacts on its own.
func TestCompactOnline_LongReadPutsItOff(t *testing.T) {
	var c compactions
	var copies atomic.Int64 // copies begun
	s := openInternal(t, Options{Compacted: c.record, compactEvery: 50 * time.Millisecond,
		compactStep: func(at compactStep, entries int) {
			if at == stepCopied && entries == 1 {
				copies.Add(1)
			}
		}})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16)
	var ids []uint64
	for range 80 {
		id, err := s.Append("alice@example.test", big)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// The read starts before the deletion. (bbolt cannot grow its map
	// while a read is open, so the mail is stored first: the deletion
	// needs only a few pages, inside the map.)
	reading, release := make(chan struct{}), make(chan struct{})
	readDone := make(chan error, 1)
	go func() {
		readDone <- s.view(func(*bolt.Tx) error {
			close(reading)
			<-release
			return nil
		})
	}()
	<-reading
	if err := s.Delete("alice@example.test", ids); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); {
		listed := make(chan error, 1)
		go func() { _, err := s.List("alice@example.test"); listed <- err }()
		// swapWait, and more for a slow machine; a read held behind the
		// long one would wait for ever.
		select {
		case err := <-listed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(swapWait + 2*time.Second):
			close(release)
			t.Fatal("a read waits behind the long one")
		}
		// Commits go on too; a copy made in vain is not made again at
		// each of them.
		if _, err := s.Append("alice@example.test", []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, errs := c.get(); len(got)+len(errs) > 0 {
		t.Fatalf("compacted with a read open: %+v %v", got, errs)
	}
	if n := copies.Load(); n != 1 {
		t.Errorf("%d copies made while the read was open, want 1", n)
	}
	close(release)
	if err := <-readDone; err != nil {
		t.Fatal(err)
	}
	if got, errs := c.wait(); len(got) != 1 || len(errs) > 0 {
		t.Fatalf("compactions %+v, errors %v after the read ended; want one", got, errs)
	}
}

// While the copy is made, reads and writes go on, on the old file; what
// the writes changed meanwhile (mail added, mail deleted) is in the new
// one.
func TestCompactOnline_ReadsAndWritesGoOnWhileItCopies(t *testing.T) {
	var c compactions
	hold := holdFirstCopy()
	copying, release := hold.copying, hold.release
	s := openInternal(t, Options{Compacted: c.record, compactEvery: time.Nanosecond, compactStep: hold.step})
	const addr = "alice@example.test"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, body := range []string{"kept", "deleted meanwhile"} {
		id, err := s.Append(addr, []byte("Subject: "+body+"\r\n\r\n"+body+"\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	bigMailComesAndGoes(t, s, addr, 80)
	select {
	case <-copying:
	case <-time.After(10 * time.Second):
		t.Fatal("no compaction started")
	}
	read := make(chan error, 1)
	go func() { _, err := s.Read(addr, ids[0]); read <- err }()
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("a read waits for the copy")
	}
	wrote := make(chan error, 1)
	var added uint64
	go func() {
		var err error
		if added, err = s.Append(addr, []byte("Subject: new\r\n\r\nnew\r\n")); err == nil {
			err = s.Delete(addr, ids[1:])
		}
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("a write waits for the copy")
	}
	if got, errs := c.get(); len(got)+len(errs) > 0 {
		t.Fatalf("compactions %+v, errors %v before the copy was made", got, errs)
	}
	close(release)
	if got, errs := c.wait(); len(got) != 1 || len(errs) > 0 || !got[0].Compacted {
		t.Fatalf("compactions %+v, errors %v; want one", got, errs)
	}
	list, err := s.List(addr)
	if err != nil {
		t.Fatal(err)
	}
	var have []uint64
	for _, m := range list {
		have = append(have, m.ID)
	}
	if want := []uint64{ids[0], added}; !slices.Equal(have, want) {
		t.Fatalf("after the compaction: messages %v, want the kept one and the new one %v", have, want)
	}
	checkBolt(t, s)
}

func TestCompactOnline_UnderLoad(t *testing.T) {
	var c compactions
	s := openInternal(t, Options{Compacted: c.record, compactEvery: time.Nanosecond})
	users := []string{"alice@example.test", "bob@example.test", "carol@example.test"}
	for _, u := range users {
		if err := s.AddUser(u, "password-12345"); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	written := map[uint64]bool{}
	var n atomic.Int64
	hammer(t, &wg, stop, 2, func() error { // writers
		id, err := s.Append("bob@example.test", []byte(fmt.Sprintf("Subject: %d\r\n\r\nx\r\n", n.Add(1))))
		if err == nil {
			mu.Lock()
			written[id] = true
			mu.Unlock()
		}
		return err
	})
	hammer(t, &wg, stop, 3, func() error { // readers
		list, err := s.List("bob@example.test")
		if err != nil || len(list) == 0 {
			return err
		}
		_, err = s.Read("bob@example.test", list[len(list)-1].ID)
		return err
	})
	bigMailComesAndGoes(t, s, "alice@example.test", 80)
	c.wait()
	close(stop)
	wg.Wait()
	done, errs := c.get()
	if len(done) == 0 || len(errs) > 0 {
		t.Fatalf("compactions %+v, errors %v", done, errs)
	}
	list, err := s.List("bob@example.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list {
		delete(written, m.ID)
	}
	if len(written) > 0 {
		t.Fatalf("%d acknowledged writes missing after the compaction", len(written))
	}
}

// A compaction that cannot be made leaves the store on its old file.
func TestCompactOnline_FailureKeepsTheOldFile(t *testing.T) {
	var c compactions
	s := openInternal(t, Options{Compacted: c.record, compactEvery: time.Nanosecond})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	// Something that is not ours where the new file goes.
	blocker := s.path + compactSuffix
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	bigMailComesAndGoes(t, s, "alice@example.test", 80)
	if _, errs := c.wait(); len(errs) == 0 {
		t.Fatal("no failure reported")
	}
	// Not tried again at every commit.
	for range 3 {
		if _, err := s.Append("alice@example.test", []byte("Subject: y\r\n\r\nmore\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if _, errs := c.get(); len(errs) != 1 {
		t.Errorf("%d failures reported, want 1: a failed compaction is retried at every commit", len(errs))
	}
	if id, err := s.Append("alice@example.test", []byte("Subject: x\r\n\r\nstill\r\n")); err != nil {
		t.Fatal(err)
	} else if _, err := s.Read("alice@example.test", id); err != nil {
		t.Fatal(err)
	}
}

// Environment of TestCompactOnlineHelperProcess.
const onlineHelperDirEnv = "MINIMAIL_ONLINE_COMPACT_HELPER_DIR"

// TestCompactOnlineHelperProcess serves a store in the data_dir it is
// given until big mail that came and went makes it compact; it says so on
// stdout at the step it is told and waits there to be killed.
func TestCompactOnlineHelperProcess(t *testing.T) {
	dir := os.Getenv(onlineHelperDirEnv)
	if dir == "" {
		t.Skip("run by TestCompactOnline_KilledAtAnyStepLosesNothing")
	}
	want := os.Getenv(helperStepEnv)
	s, err := Open(dir, Options{BcryptCost: 4, compactEvery: time.Nanosecond, compactStep: func(st compactStep, entries int) {
		name := map[compactStep]string{stepCopied: "copying", stepSynced: "synced", stepRenamed: "renamed"}[st]
		if name == want && (st != stepCopied || entries == 20) {
			fmt.Println("stopped at", name)
			time.Sleep(time.Hour)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	bigMailComesAndGoes(t, s, "alice@example.org", 80)
	time.Sleep(10 * time.Second) // the committer compacts after answering
	t.Fatalf("no compaction reached %q", want)
}

func TestCompactOnline_KilledAtAnyStepLosesNothing(t *testing.T) {
	for _, step := range []string{"copying", "synced", "renamed"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			wantUIDLs := fillForCompaction(t, dir)
			killHelperAt(t, "TestCompactOnlineHelperProcess", onlineHelperDirEnv, dir, step)
			s, err := Open(dir, Options{BcryptCost: 4, NoOnlineCompaction: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			users := slices.Sorted(maps.Keys(wantUIDLs))
			if got := uidls(t, s, users); !maps.EqualFunc(got, wantUIDLs, slices.Equal) {
				t.Errorf("UIDLs %v, want %v", got, wantUIDLs)
			}
			if _, err := os.Stat(filepath.Join(dir, FileName+compactSuffix)); !os.IsNotExist(err) {
				t.Errorf("leftover new file after the next open: %v", err)
			}
		})
	}
}

// checkBolt runs bbolt's consistency check on the open file: every page in
// use reachable once, and none of them on the freelist.
func checkBolt(t *testing.T, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
}

// The copy is written with its freelist and the store runs without one on
// file: the store's next commits, and its next open, must agree with the
// copy about which pages are free.
func TestCompactOnline_CopyFreelistCarriesOver(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{BcryptCost: bcrypt.MinCost, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	const addr = "alice@example.test"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	recordTrace(t, s, 2000)
	bigMailComesAndGoes(t, s, addr, 20)
	if res, err := s.compactOnline(); err != nil || !res.Compacted {
		t.Fatalf("compaction %+v: %v", res, err)
	}
	checkBolt(t, s)
	// Writes that allocate and free pages: bodies come and go again.
	kept, err := s.Append(addr, bytes.Repeat([]byte("kept message\r\n"), 5000))
	if err != nil {
		t.Fatal(err)
	}
	bigMailComesAndGoes(t, s, addr, 5)
	checkBolt(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{BcryptCost: bcrypt.MinCost, NoOnlineCompaction: true}); err != nil {
		t.Fatal(err)
	}
	checkBolt(t, s)
	bigMailComesAndGoes(t, s, addr, 5)
	checkBolt(t, s)
	msgs, err := s.List(addr)
	if err != nil || len(msgs) != 1 || msgs[0].ID != kept {
		t.Fatalf("after reopening: %+v, %v; want the kept message %d alone", msgs, err, kept)
	}
}

// The snapshot an online compaction copies ends with the copy: while it
// is open, a commit that has to grow bbolt's map waits for it, and the
// commits that finish the compaction come after.
func TestCompactOnline_SnapshotEndsWithTheCopy(t *testing.T) {
	s := openInternal(t, Options{NoOnlineCompaction: true})
	const addr = "alice@example.test"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	bigMailComesAndGoes(t, s, addr, 20)
	job, _, err := s.startCopy()
	if err != nil {
		t.Fatal(err)
	}
	<-job.done
	if n := s.db.Stats().OpenTxN; n != 0 {
		t.Errorf("%d read transactions open once the copy is made, want none", n)
	}
	if res, err := s.finishCopy(job); err != nil || !res.Compacted {
		t.Fatalf("compaction %+v: %v", res, err)
	}
}

// copyHold holds the first copy a store makes at its first entry, until
// release is closed; copying is closed once it is held. copies counts the
// copies begun.
type copyHold struct {
	copying, release chan struct{}
	copies           atomic.Int64
	once             sync.Once
}

func holdFirstCopy() *copyHold {
	return &copyHold{copying: make(chan struct{}), release: make(chan struct{})}
}

// step is the hold as Options.compactStep.
func (h *copyHold) step(at compactStep, entries int) {
	if at == stepCopied && entries == 1 {
		h.copies.Add(1)
		h.once.Do(func() { close(h.copying); <-h.release })
	}
}

// Closing the store while a copy is being made ends the copy and removes
// its file; the store is whole.
func TestCompactOnline_CloseDuringTheCopy(t *testing.T) {
	dir := t.TempDir()
	hold := holdFirstCopy()
	copying, release := hold.copying, hold.release
	s, err := Open(dir, Options{BcryptCost: bcrypt.MinCost, compactEvery: time.Nanosecond, compactStep: hold.step})
	if err != nil {
		t.Fatal(err)
	}
	const addr = "alice@example.test"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	want := uidls(t, s, []string{addr})
	bigMailComesAndGoes(t, s, addr, 80)
	select {
	case <-copying:
	case <-time.After(10 * time.Second):
		t.Fatal("no compaction started")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	time.Sleep(20 * time.Millisecond) // Close waits for the copy's next entry
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for ever with a copy being made")
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+compactSuffix)); !os.IsNotExist(err) {
		t.Errorf("the copy's file is left: %v", err)
	}
	s, err = Open(dir, Options{BcryptCost: bcrypt.MinCost, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := uidls(t, s, []string{addr}); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("UIDLs %v, want %v", got, want)
	}
}

// A copy during which more mail came in than its catch-up may take (one
// transaction, held in memory until it commits) is thrown away, and made
// again later.
func TestCompactOnline_TooMuchMailMeanwhileMakesTheCopyAgain(t *testing.T) {
	var c compactions
	hold := holdFirstCopy()
	copying, release, copies := hold.copying, hold.release, &hold.copies
	s := openInternal(t, Options{Compacted: c.record, compactEvery: 10 * time.Millisecond, compactStep: hold.step})
	const addr = "alice@example.test"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	bigMailComesAndGoes(t, s, addr, 80)
	select {
	case <-copying:
	case <-time.After(10 * time.Second):
		t.Fatal("no compaction started")
	}
	big := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16) // 1 MiB
	var ids []uint64
	for range maxCatchUpBytes/len(big) + 1 {
		id, err := s.Append(addr, big)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	close(release) // the committer throws the copy away once it stops
	done, errs := c.wait()
	if len(done) != 1 || len(errs) > 0 || !done[0].Compacted {
		t.Fatalf("compactions %+v, errors %v; want one", done, errs)
	}
	if n := copies.Load(); n != 2 {
		t.Errorf("%d copies made, want 2: the one thrown away, and the one swapped in", n)
	}
	if _, err := os.Stat(s.path + compactSuffix); !os.IsNotExist(err) {
		t.Errorf("a copy's file is left: %v", err)
	}
	list, err := s.List(addr)
	if err != nil || len(list) != len(ids) {
		t.Fatalf("after the compaction %d messages (%v), want %d", len(list), err, len(ids))
	}
	checkBolt(t, s)
}
