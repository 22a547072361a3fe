package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// diskFullChild names the directory of the store a child process of
// TestDiskFailure_GroupFailsOnce works on.
const diskFullChild = "MINIMAIL_TEST_DISKFULL_DIR"

// A group commit that the disk fails (here the file cannot grow: a file
// size limit gives EFBIG on the same path as a full disk's ENOSPC) answers
// each of its writes with the error after that one failed commit. Trying
// each again alone cost a failed commit apiece, and each failed commit
// makes bbolt rebuild its freelist by reading every page in use. Once the
// disk takes writes again the store does too, and holds what it
// acknowledged and nothing of what it did not.
//
// The limit is the whole process's, so the store runs in a child process.
func TestDiskFailure_GroupFailsOnce(t *testing.T) {
	inChild(t, diskFullChild, diskFullGroup)
}

// inChild runs t's body, given the directory of its store, in a child
// process of the test binary (a file size limit is the whole process's),
// and fails t unless the child passes. env names the variable that tells
// the child which directory it works on.
func inChild(t *testing.T, env string, body func(t *testing.T, dir string)) {
	if dir := os.Getenv(env); dir != "" {
		body(t, dir)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), env+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func diskFullGroup(t *testing.T, dir string) {
	const writers = 8
	open := func() *Store {
		s, err := Open(dir, Options{BcryptCost: bcrypt.MinCost, NoOnlineCompaction: true,
			linger: testLinger, straggle: testLinger})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	defer func() { s.Close() }()
	for i := range writers {
		if err := s.AddUser(fmt.Sprintf("u%d@example.test", i), "password-12345"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append("u0@example.test", []byte("Subject: kept\r\n\r\nbefore\r\n")); err != nil {
		t.Fatal(err)
	}
	size, room := fileMayNotGrow(t, filepath.Join(dir, FileName))

	// Eight announced writes, each bigger than the file: they make one
	// group (the linger is long), which cannot fit.
	body := bytes.Repeat([]byte("x"), int(size))
	dones := make([]func(), writers)
	for i := range writers {
		dones[i] = s.Expect()
	}
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer dones[i]()
			_, errs[i] = s.Append(fmt.Sprintf("u%d@example.test", i), body)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Errorf("write %d was acknowledged past the file size limit", i)
		}
	}
	if n := s.failedCommits.Load(); n != 1 {
		t.Errorf("a group of %d writes took %d failed commits, want 1", writers, n)
	}
	if s.Writable() == nil {
		t.Error("store reports writable after a failed commit")
	}

	// Room again: the store takes writes, and a reopened one holds the
	// acknowledged messages only.
	room()
	if _, err := s.Append("u1@example.test", body); err != nil {
		t.Fatalf("write once the file may grow: %v", err)
	}
	if err := s.Writable(); err != nil {
		t.Errorf("after a good commit: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	checkBolt(t, s)
	for i := range writers {
		msgs, err := s.List(fmt.Sprintf("u%d@example.test", i))
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if i <= 1 {
			want = 1
		}
		if len(msgs) != want {
			t.Errorf("u%d holds %d messages after the reopen, want %d", i, len(msgs), want)
		}
	}
}

// diskFullTraceChild names the directory of the store a child process of
// TestDiskFailure_TraceReadsWhatTheFileHolds works on.
const diskFullTraceChild = "MINIMAIL_TEST_DISKFULL_TRACE_DIR"

// A reader of the trace whose flush of the events waiting the disk fails
// is not failed with it: it reads what the file holds, and the events go
// on waiting, to be written once the disk has room.
func TestDiskFailure_TraceReadsWhatTheFileHolds(t *testing.T) {
	inChild(t, diskFullTraceChild, diskFullTrace)
}

func diskFullTrace(t *testing.T, dir string) {
	s, err := Open(dir, Options{BcryptCost: bcrypt.MinCost, NoOnlineCompaction: true,
		traceDelay: time.Hour, traceAlone: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AddUser("a@example.org", "password1"); err != nil {
		t.Fatal(err)
	}
	// Events of a few megabytes wait (each fact is cut at 1 KiB): their
	// write must grow the file, which the limit below forbids.
	big := strings.Repeat("f", maxEventString)
	var facts []Fact
	for range 16 {
		facts = append(facts, Fact{Key: "k", Value: big})
	}
	for i := range 200 {
		d := traced(fmt.Sprint("m", i))
		d.Events[0].Facts = facts
		if _, err := s.AppendMany([]Delivery{d}); err != nil {
			t.Fatal(err)
		}
	}
	_, room := fileMayNotGrow(t, filepath.Join(dir, FileName))
	failed := s.failedCommits.Load()
	if evs, err := s.Trace("m0"); !errors.Is(err, ErrNoTrace) {
		t.Fatalf("Trace(m0) on a full disk = %v, %v; want what the file holds: no events (ErrNoTrace)", evs, err)
	}
	if s.failedCommits.Load() == failed {
		t.Fatal("the flush of the events waiting did not fail: the test proves nothing")
	}
	room()
	if evs, err := s.Trace("m0"); err != nil || len(evs) != 2 {
		t.Fatalf("Trace(m0) once the disk has room = %v, %v; want its 2 events, which waited", evs, err)
	}
}

// fileMayNotGrow sets the process's file size limit to the size of the file
// at path, which it returns, and the function that lifts the limit again.
func fileMayNotGrow(t *testing.T, path string) (size int64, room func()) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}
	full := limit
	full.Cur = uint64(fi.Size())
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &full); err != nil {
		t.Fatal(err)
	}
	return fi.Size(), func() {
		t.Helper()
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
			t.Fatal(err)
		}
	}
}
