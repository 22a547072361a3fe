package store

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// mappedResident returns the resident kilobytes of this process's maps of
// file, from /proc/self/smaps.
func mappedResident(t *testing.T, file string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kb, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-"):
			in = fields[len(fields)-1] == file
		case in && fields[0] == "Rss:":
			n, _ := strconv.Atoi(fields[1])
			kb += n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kb
}

// Retrieving mail reads it through bbolt's map of the file; those pages
// stop counting as the process's memory shortly after, instead of piling
// up until the file is remapped.
func TestReadPagesAreReleased(t *testing.T) {
	s := openInternal(t, Options{})
	addr := "alice@example.test"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 256<<10/16)
	var ids []uint64
	for range 64 { // 16 MiB
		id, err := s.Append(addr, body)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	file, err := filepath.EvalSymlinks(s.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	// Let the release the appends scheduled run first, then fault every
	// body in behind the store's back, so nothing schedules another.
	waitFor(t, "the appends' release", func() bool { return !s.releasePending.Load() })
	s.releaseMu.Lock() // and is over
	s.releaseMu.Unlock()
	err = s.db.View(func(tx *bolt.Tx) error {
		mb, err := mailbox(tx, addr)
		if err != nil {
			return err
		}
		sum := 0
		for _, id := range ids {
			_, b, err := messageParts(tx, mb, id, mustEntry(t, mb, id))
			if err != nil {
				return err
			}
			for i := 0; i < len(b); i += 4096 {
				sum += int(b[i])
			}
		}
		if sum != len(ids)*len(body)/4096*'0' {
			t.Errorf("read back %d, want %d", sum, len(ids)*len(body)/4096*'0')
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if kb := mappedResident(t, file); kb < 12<<10 {
		t.Fatalf("after reading 16 MiB through the map only %d KiB are resident: the test measures nothing", kb)
	}
	if _, err := s.Read(addr, ids[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the read pages to be released", func() bool { return mappedResident(t, file) < 2<<10 })
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustEntry(t *testing.T, mb *bolt.Bucket, id uint64) indexEntry {
	t.Helper()
	k := idKey(id)
	e, err := decodeIndexEntry(k, mb.Bucket(bucketIndex).Get(k))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Opening a store reads every page in use (bbolt rebuilds its freelist
// from them), and so does opening the copy an online compaction swaps in:
// neither leaves the file resident.
func TestOpenedPagesAreReleased(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{BcryptCost: 4, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	recordTrace(t, s, 20_000) // about 6 MB of small records
	s.Close()

	var c compactions
	s, err = Open(dir, Options{BcryptCost: 4, Compacted: c.record, compactEvery: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	file, err := filepath.EvalSymlinks(s.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the opened pages to be released", func() bool { return mappedResident(t, file) < 1<<10 })

	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	bigMailComesAndGoes(t, s, "alice@example.test", 80)
	if done, errs := c.wait(); len(done) != 1 || len(errs) > 0 {
		t.Fatalf("compactions %+v, errors %v; want one", done, errs)
	}
	waitFor(t, "the copy's pages to be released", func() bool { return mappedResident(t, file) < 1<<10 })
}

// Freeing a body reads its first page through the map, and a mailbox's
// bodies lie apart, so one transaction that frees many (a QUIT, a user's
// removal) would map a window for each until its commit is over: the
// transaction releases the map as it goes (freeing).
func TestFreedBodiesAreReleasedWithinTheTransaction(t *testing.T) {
	s := openInternal(t, Options{})
	addr := "alice@example.test"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	// 1024 bodies of 16 KiB: freeing them reads 4 MiB (a page each) even
	// where the kernel maps no page around the one read.
	body := bytes.Repeat([]byte("0123456789abcdef"), 16<<10/16)
	var ids []uint64
	for range 8 {
		ds := make([]Delivery, 128)
		for i := range ds {
			// a body of its own (one shared by a batch is stored once)
			ds[i] = Delivery{Address: addr, Message: append(append([]byte(nil), body...), byte(i))}
		}
		got, err := s.AppendMany(ds)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	file, err := filepath.EvalSymlinks(s.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the appends' release", func() bool { return !s.releasePending.Load() })
	s.releaseMu.Lock()
	s.releaseMu.Unlock()

	errRollBack := errors.New("roll back")
	// residentAfter frees every body in a transaction it rolls back, and
	// measures the map at the end of it, before any commit's release.
	residentAfter := func(free func(tx *bolt.Tx, mb *bolt.Bucket) error) int {
		t.Helper()
		kb := 0
		err := s.db.Update(func(tx *bolt.Tx) error {
			if err := releaseMapped(tx.DB().Info().Data, tx.Size()); err != nil {
				return err
			}
			mb, err := mailbox(tx, addr)
			if err != nil {
				return err
			}
			if err := free(tx, mb); err != nil {
				return err
			}
			kb = mappedResident(t, file)
			return errRollBack
		})
		if !errors.Is(err, errRollBack) {
			t.Fatal(err)
		}
		return kb
	}

	unreleased := residentAfter(func(tx *bolt.Tx, mb *bolt.Bucket) error {
		for _, id := range ids {
			if err := deleteMessage(tx, mb, id, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if unreleased < 4<<10 {
		t.Fatalf("freeing %d bodies without releasing left only %d KiB resident: the test measures nothing", len(ids), unreleased)
	}
	for _, tc := range []struct {
		name string
		free func(tx *bolt.Tx, mb *bolt.Bucket) error
	}{
		{"deleteMessages (DELE, QUIT)", func(tx *bolt.Tx, mb *bolt.Bucket) error { return deleteMessages(tx, mb, ids) }},
		{"releaseMailbox (user del)", releaseMailbox},
	} {
		kb := residentAfter(tc.free)
		t.Logf("%s: %d KiB (unreleased %d)", tc.name, kb, unreleased)
		if kb > 1<<10 {
			t.Errorf("%s: %d KiB of the map resident after freeing %d bodies (%d KiB unreleased); want at most 1024", tc.name, kb, len(ids), unreleased)
		}
	}
	// The deletions were rolled back: every message is still there.
	if list, err := s.List(addr); err != nil || len(list) != len(ids) {
		t.Fatalf("List: %d messages, %v; want %d", len(list), err, len(ids))
	}
}
