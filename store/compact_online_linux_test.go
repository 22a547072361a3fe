package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// deletedDescriptors lists this process's open descriptors of files named
// name that were unlinked or renamed over.
func deletedDescriptors(t *testing.T, name string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var open []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.Contains(target, name) && strings.HasSuffix(target, " (deleted)") {
			open = append(open, target)
		}
	}
	return open
}

// The store keeps a descriptor of the old file after an online compaction,
// so that the freelist's memory is given back before the kernel frees the
// old blocks. It must let go of it: an open descriptor keeps the whole old
// file on the disk. (One dropped unclosed is closed by its finalizer at the
// collection that follows; this catches one that is kept.)
func TestCompactOnline_LetsGoOfTheOldFile(t *testing.T) {
	var c compactions
	s := openInternal(t, Options{Compacted: c.record, compactEvery: time.Nanosecond})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	bigMailComesAndGoes(t, s, "alice@example.test", 80)
	if got, errs := c.wait(); len(got) != 1 || len(errs) > 0 || !got[0].Compacted {
		t.Fatalf("compactions %+v, errors %v; want one", got, errs)
	}
	s.retiring.Wait()
	if open := deletedDescriptors(t, s.path); len(open) > 0 {
		t.Errorf("old file still open after the compaction: %v", open)
	}
}

// The old file's blocks are freed a step at a time, from its end, each
// step synced, and none of it touches the file now in use.
func TestCompactOnline_ReleasesTheOldFileInSteps(t *testing.T) {
	var c compactions
	var mu sync.Mutex
	var sizes []int64
	s := openInternal(t, Options{Compacted: c.record, compactEvery: time.Nanosecond,
		releaseStep: 1 << 20,
		released: func(size int64) {
			mu.Lock()
			sizes = append(sizes, size)
			mu.Unlock()
		}})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	kept, err := s.Append("alice@example.test", []byte("Subject: kept\r\n\r\nkept\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	bigMailComesAndGoes(t, s, "alice@example.test", 80)
	got, errs := c.wait()
	if len(got) != 1 || len(errs) > 0 || !got[0].Compacted {
		t.Fatalf("compactions %+v, errors %v; want one", got, errs)
	}
	s.retiring.Wait()
	mu.Lock()
	defer mu.Unlock()
	if want := int((got[0].Before + 1<<20 - 1) >> 20); len(sizes) != want {
		t.Fatalf("released in %d steps (%v), want %d for %d octets in steps of 1 MiB", len(sizes), sizes, want, got[0].Before)
	}
	for i, size := range sizes {
		if want := max(0, got[0].Before-int64(i+1)<<20); size != want {
			t.Fatalf("step %d left %d octets, want %d (steps %v)", i, size, want, sizes)
		}
	}
	fi, err := os.Stat(s.path)
	if err != nil || fi.Size() != got[0].After {
		t.Fatalf("store file after the release: %v, %v; want %d octets", fi, err, got[0].After)
	}
	msgs, err := s.List("alice@example.test")
	if err != nil || len(msgs) != 1 || msgs[0].ID != kept {
		t.Fatalf("mailbox after the release: %+v, %v; want only message %d", msgs, err, kept)
	}
}

// releaseFile truncates only a file without a name: were it ever handed the
// store's own file, it must leave it whole.
func TestReleaseFile_LeavesANamedFileWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "named")
	if err := os.WriteFile(path, make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	steps := 0
	releaseFile(f, 1<<20, nil, func(int64) { steps++ })
	if fi, err := os.Stat(path); err != nil || fi.Size() != 3<<20 || steps != 0 {
		t.Fatalf("named file after releaseFile: %v, %v, %d steps; want 3 MiB untouched", fi, err, steps)
	}
	if _, err := f.Stat(); err == nil {
		t.Error("releaseFile left the descriptor open")
	}

	// Without its name the same file is freed: 3 MiB in three steps.
	if f, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	releaseFile(f, 1<<20, nil, func(size int64) { sizes = append(sizes, size) })
	if fmt.Sprint(sizes) != "[2097152 1048576 0]" {
		t.Errorf("unnamed file released in steps %v, want [2097152 1048576 0]", sizes)
	}
}

// An online compaction reads the live data twice, the original and the
// copy, through bbolt's maps of the two files, and gives the pages back as
// it goes. Opening the copy must not read all of it again at once (bbolt
// does, to rebuild a freelist that was not written to the file): the whole
// live set then came into the process's resident set, 48 MB for a copy of
// 37 MB, in the middle of serving.
func TestCompactOnline_CopyIsNotReadWhole(t *testing.T) {
	s := openInternal(t, Options{NoOnlineCompaction: true})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	recordTrace(t, s, 60_000)
	bigMailComesAndGoes(t, s, "alice@example.test", 8)
	live, _ := s.worthCompacting()

	peak := watchPeak(func() int64 {
		return int64(mappedResident(t, s.path) + mappedResident(t, s.path+compactSuffix))
	})
	if _, err := s.compactOnline(); err != nil {
		t.Fatal(err)
	}
	most := peak()
	if limit := live / 4 >> 10; most > limit {
		t.Errorf("%d KiB of the files mapped at once while compacting %d KiB of live data; want at most %d", most, live>>10, limit)
	}
	t.Logf("peak %d KiB mapped, live %d KiB", most, live>>10)
}

// A step of an old file's release goes at once while no mail is on its
// way; with mail on its way, it waits for a commit, or for releaseWait.
func TestReleasePace_WaitsForACommitWhileMailIsOnItsWay(t *testing.T) {
	s := &Store{writes: make(chan *writeReq), committed: make(chan struct{}, 1)}
	returned := func(f func()) chan struct{} {
		done := make(chan struct{})
		go func() { f(); close(done) }()
		return done
	}
	select {
	case <-returned(func() { s.releasePace(time.Time{}) }):
	case <-time.After(10 * time.Second):
		t.Fatal("a quiet store's release waited")
	}

	s.expected.Store(1)
	s.committed <- struct{}{} // stale: signalled before the step asked
	start := time.Now()
	<-returned(func() { s.releasePace(time.Time{}) })
	if d := time.Since(start); d < releaseWait {
		t.Errorf("with mail on its way and no commit, the step went after %v, before releaseWait", d)
	}

	defer commitsFlow(s)()
	select {
	case <-returned(func() { s.releasePace(time.Time{}) }):
	case <-time.After(10 * time.Second):
		t.Fatal("the step did not go after a commit")
	}
}

// commitsFlow signals commits on s, one after another, until the returned
// func is called.
func commitsFlow(s *Store) (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s.committed <- struct{}{}:
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// With mail on its way, a step goes no sooner than releaseGap after the
// one before, however many commits end meanwhile; a quiet store's goes at
// once.
func TestReleasePace_StepsAtLeastAGapApartWhileMailIsOnItsWay(t *testing.T) {
	s := &Store{writes: make(chan *writeReq), committed: make(chan struct{}, 1), stop: make(chan struct{}),
		opts: Options{releaseGap: time.Hour}}
	defer commitsFlow(s)()
	done := make(chan struct{})
	go func() { s.releasePace(time.Now()); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a quiet store's step waited for the gap")
	}

	s.opts.releaseGap = 0 // releaseGap itself
	s.expected.Store(1)
	last := time.Now()
	s.releasePace(last)
	if d := time.Since(last); d < releaseGap {
		t.Errorf("with mail on its way and commits ending, the step went %v after the one before, before releaseGap", d)
	}
}

// Closing the store ends a step's wait, for the gap after the step before
// or for a commit: Close waits for the release, and no commit comes once
// the committer has stopped.
func TestReleasePace_StopsWaitingWhenTheStoreCloses(t *testing.T) {
	for _, tt := range []struct {
		name string
		last time.Time
	}{
		{"for the gap", time.Now()},
		{"for a commit", time.Time{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Store{writes: make(chan *writeReq), committed: make(chan struct{}, 1), stop: make(chan struct{}),
				opts: Options{releaseWait: time.Hour, releaseGap: time.Hour}}
			s.expected.Store(1) // mail on its way, and no commit to come
			done := make(chan struct{})
			go func() { s.releasePace(tt.last); close(done) }()
			select {
			case <-done:
				t.Fatal("the step went with mail on its way, before a commit or the close")
			case <-time.After(50 * time.Millisecond):
			}
			close(s.stop)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the step still waits after the store closed")
			}
		})
	}
}
