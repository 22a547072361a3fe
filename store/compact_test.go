package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fillForCompaction gives dir a store with something of every kind: users,
// bodies shared by several mailboxes and copies with their own heads, some
// of them deleted (so reference counts and sequences are ahead of what is
// left), large mail that came and went (free pages), queue entries, and an
// empty value. It returns the UIDLs of every mailbox.
func fillForCompaction(t testing.TB, dir string) map[string][]string {
	t.Helper()
	s, err := Open(dir, Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	users := []string{"alice@example.org", "bob@example.org", "carol@example.org"}
	for _, u := range users {
		if err := s.AddUser(u, "pw-"+u); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16) // 1 MiB
	for i := range 8 {
		shared := []byte(fmt.Sprintf("Subject: to all %d\r\n\r\nhello\r\n", i))
		ds := []Delivery{{Address: "alice@example.org", Message: bytes.Clone(big)}}
		for _, u := range users {
			ds = append(ds, Delivery{Address: u, Header: []byte("Delivered-To: " + u + "\r\n"), Message: shared})
		}
		if _, err := s.AppendMany(ds); err != nil {
			t.Fatal(err)
		}
	}
	// The large mail goes, and bob deletes his copies of half the shared
	// ones: their bodies stay, with fewer references.
	infos, err := s.List("alice@example.org")
	if err != nil {
		t.Fatal(err)
	}
	var bigIDs []uint64
	for _, m := range infos {
		if m.Size >= int64(len(big)) {
			bigIDs = append(bigIDs, m.ID)
		}
	}
	if err := s.Delete("alice@example.org", bigIDs); err != nil {
		t.Fatal(err)
	}
	bobs, err := s.List("bob@example.org")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range bobs[:4] {
		if err := s.Delete("bob@example.org", []uint64{m.ID}); err != nil {
			t.Fatal(err)
		}
	}
	created := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		e := QueueEntry{From: "alice@example.org", Rcpts: []QueueRcpt{{Addr: fmt.Sprintf("x%d@remote.test", i), State: RcptPending}}, Created: created, NextAttempt: created}
		if _, err := s.EnqueueMessage(e, []byte("Subject: out\r\n\r\nbye\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte("empty"), []byte{}) }); err != nil {
		t.Fatal(err)
	}
	return uidls(t, s, users)
}

func uidls(t testing.TB, s *Store, users []string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, u := range users {
		infos, err := s.List(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range infos {
			out[u] = append(out[u], m.UIDL())
		}
	}
	return out
}

// dumpFile reads every bucket (with its sequence), key and value of path,
// without the store's code, so compaction is checked against plain bbolt.
func dumpFile(t testing.TB, path string) map[string]string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	var dump func(prefix string, b *bolt.Bucket)
	dump = func(prefix string, b *bolt.Bucket) {
		out[prefix+" sequence"] = fmt.Sprint(b.Sequence())
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			name := fmt.Sprintf("%s/%x", prefix, k)
			if sub := b.Bucket(k); sub != nil {
				dump(name, sub)
				continue
			}
			out[name] = string(v)
		}
	}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			dump(fmt.Sprintf("%x", name), b)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantSameContent(t testing.TB, got, want map[string]string) {
	t.Helper()
	if maps.Equal(got, want) {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: missing after compaction", k)
		} else if g != want[k] {
			t.Errorf("%s: %.60q, want %.60q", k, g, want[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: appeared after compaction", k)
		}
	}
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestCompact_KeepsEveryEntryAndGivesBackFreePages(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	wantUIDLs := fillForCompaction(t, dir)
	before := dumpFile(t, path)
	if before[fmt.Sprintf("%x/%x", bucketMeta, "empty")] != "" || len(before) < 50 {
		t.Fatalf("fixture too small: %d entries", len(before))
	}

	res, err := Compact(dir, CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantSameContent(t, dumpFile(t, path), before)
	if !res.Compacted || res.After >= res.Before/2 {
		t.Errorf("result %+v: want the 8 MiB of deleted mail given back", res)
	}
	if res.After != fileSize(t, path) {
		t.Errorf("After = %d, file has %d bytes", res.After, fileSize(t, path))
	}
	if res.Free < 8<<20 {
		t.Errorf("Free = %d, want at least the 8 MiB deleted", res.Free)
	}
	if _, err := os.Stat(path + compactSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("new file left behind: %v", err)
	}

	// The compacted file serves: same UIDLs, logins, and new mail.
	s, err := Open(dir, Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	users := slices.Sorted(maps.Keys(wantUIDLs))
	if got := uidls(t, s, users); !maps.EqualFunc(got, wantUIDLs, slices.Equal) {
		t.Errorf("UIDLs after compaction %v, want %v", got, wantUIDLs)
	}
	if _, err := s.Authenticate("", "bob@example.org", "pw-bob@example.org"); err != nil {
		t.Errorf("login after compaction: %v", err)
	}
	id, err := s.Append("carol@example.org", []byte("Subject: new\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if last := before[fmt.Sprintf("%x sequence", bucketMailboxes)]; fmt.Sprint(id) != fmt.Sprint(mustAtoi(t, last)+1) {
		t.Errorf("new message got id %d, want the one after %s, the last handed out before compaction", id, last)
	}
}

func TestCompact_RefusesAStoreInUse(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Compact(dir, CompactOptions{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Compact of an open store: %v, want ErrLocked", err)
	}
}

func TestCompact_RefusesWhatOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if _, err := Compact(dir, CompactOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Compact without a database: %v, want not exist", err)
	}
	if err := os.WriteFile(path, []byte("not a database, but someone's file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Compact(dir, CompactOptions{}); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Compact of a foreign file: %v, want an error naming it", err)
	}
	if got := string(readFileBytes(t, path)); got != "not a database, but someone's file" {
		t.Errorf("foreign file changed to %q", got)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func readFileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An opener that waited for the lock while Compact renamed its new file
// into place must end up on that file, not on the old one, which is gone
// from the directory: mail written there would be lost.
func TestOpen_AfterWaitingForACompactUsesTheNewFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	fillForCompaction(t, dir)

	synced, release := make(chan struct{}), make(chan struct{})
	compacted := make(chan error, 1)
	go func() {
		_, err := Compact(dir, CompactOptions{step: func(s compactStep, _ int) {
			if s == stepSynced {
				close(synced)
				<-release
			}
		}})
		compacted <- err
	}()
	<-synced
	openedOld := make(chan struct{})
	type opened struct {
		db  *bolt.DB
		err error
	}
	result := make(chan opened, 1)
	go func() {
		first := true
		db, err := openBolt(path, boltOpen{lockTimeout: 30 * time.Second, freelist: productionFreelist(), opened: func(*os.File) {
			if first {
				first = false
				close(openedOld) // the old file, whose lock Compact holds
			}
		}})
		result <- opened{db, err}
	}()
	<-openedOld
	close(release)
	if err := <-compacted; err != nil {
		t.Fatal(err)
	}
	r := <-result
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := r.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte("probe"), []byte("here")) }); err != nil {
		t.Fatal(err)
	}
	r.db.Close()
	if got := dumpFile(t, path)[fmt.Sprintf("%x/%x", bucketMeta, "probe")]; got != "here" {
		t.Fatal("a write after waiting for the lock went to the replaced file")
	}
}

// killHelperAt runs the helper test named helper on dir (given in the
// environment variable dirEnv) until it says it stopped at step, then
// kills it with SIGKILL, so that no deferred cleanup runs.
func killHelperAt(t *testing.T, helper, dirEnv, dir, step string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$")
	cmd.Env = append(os.Environ(), dirEnv+"="+dir, helperStepEnv+"="+step)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	cmd.Process.Kill()
	cmd.Wait()
	if line != "stopped at "+step+"\n" {
		t.Fatalf("helper said %q", line)
	}
}

// Environment of TestCompactHelperProcess.
const (
	helperDirEnv  = "MINIMAIL_COMPACT_HELPER_DIR"
	helperStepEnv = "MINIMAIL_COMPACT_HELPER_STEP"
)

// TestCompactHelperProcess is the process TestCompact_KilledAtAnyStep
// kills: it compacts the data_dir it is given, says so on stdout when it
// reaches the step it is told, and waits there to be killed.
func TestCompactHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("run by TestCompact_KilledAtAnyStep")
	}
	want := os.Getenv(helperStepEnv)
	_, err := Compact(dir, CompactOptions{step: func(s compactStep, entries int) {
		name := map[compactStep]string{stepCopied: "copying", stepSynced: "synced", stepRenamed: "renamed"}[s]
		if name == want && (s != stepCopied || entries == 20) {
			fmt.Println("stopped at", name)
			time.Sleep(time.Hour)
		}
	}})
	t.Fatalf("compaction ended (err %v) without reaching %q", err, want)
}

func TestCompact_KilledAtAnyStepLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		step string
		// Whether the new file is in place after the kill.
		renamed bool
		// What runs next and must remove a leftover.
		next string
	}{
		{"copying", false, "open"},
		{"copying", false, "compact"},
		{"synced", false, "open"},
		{"synced", false, "compact"},
		{"renamed", true, "open"},
	} {
		t.Run(tc.step+"/then "+tc.next, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			wantUIDLs := fillForCompaction(t, dir)
			before := dumpFile(t, path)
			oldSize := fileSize(t, path)

			killHelperAt(t, "TestCompactHelperProcess", helperDirEnv, dir, tc.step)

			_, err := os.Stat(path + compactSuffix)
			if leftover := err == nil; leftover == tc.renamed {
				t.Fatalf("after a kill at %s: new file left over %v, want %v", tc.step, leftover, !tc.renamed)
			}
			if renamed := fileSize(t, path) < oldSize; renamed != tc.renamed {
				t.Fatalf("after a kill at %s: compacted file in place %v, want %v", tc.step, renamed, tc.renamed)
			}
			wantSameContent(t, dumpFile(t, path), before)

			switch tc.next {
			case "open":
				s, err := Open(dir, Options{BcryptCost: 4})
				if err != nil {
					t.Fatal(err)
				}
				users := slices.Sorted(maps.Keys(wantUIDLs))
				if got := uidls(t, s, users); !maps.EqualFunc(got, wantUIDLs, slices.Equal) {
					t.Errorf("UIDLs %v, want %v", got, wantUIDLs)
				}
				s.Close()
			case "compact":
				if _, err := Compact(dir, CompactOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := os.Stat(path + compactSuffix); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("leftover new file still there after %s: %v", tc.next, err)
			}
			wantSameContent(t, dumpFile(t, path), before)
		})
	}
}

func TestWasteful_OnlyLargeFilesMostlyFree(t *testing.T) {
	for _, tc := range []struct {
		size, free int64
		want       bool
	}{
		{0, 0, false},
		{autoCompactMinBytes, autoCompactMinBytes, false}, // not larger than the floor
		{autoCompactMinBytes + 1, autoCompactMinBytes, true},
		{1 << 30, 1<<29 + 4096, true},
		{1 << 30, 1 << 29, false}, // exactly half
		{1 << 30, 1 << 20, false},
	} {
		if got := wasteful(tc.size, tc.free); got != tc.want {
			t.Errorf("wasteful(size %d, free %d) = %v, want %v", tc.size, tc.free, got, tc.want)
		}
	}
}

func TestCompactIfWasteful_CompactsALargeMostlyFreeFile(t *testing.T) {
	const addr = "alice@example.org"
	big := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16) // 1 MiB
	for _, tc := range []struct {
		name      string
		stored    int // MiB
		deleted   bool
		compacted bool
	}{
		{"small and emptied", 16, true, false},
		{"large and emptied", 80, true, true},
		{"large and full", 80, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// Not compacted while open: the waste is for CompactIfWasteful.
			s, err := Open(dir, Options{BcryptCost: 4, NoOnlineCompaction: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.AddUser(addr, "pw"); err != nil {
				t.Fatal(err)
			}
			var ids []uint64
			for n := 0; n < tc.stored; n += 16 {
				batch := make([]Delivery, 16)
				for i := range batch {
					batch[i] = Delivery{Address: addr, Message: bytes.Clone(big)}
				}
				got, err := s.AppendMany(batch)
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, got...)
			}
			if tc.deleted {
				if err := s.Delete(addr, ids); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			before := dumpFile(t, filepath.Join(dir, FileName))

			res, err := CompactIfWasteful(dir, CompactOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Compacted != tc.compacted {
				t.Fatalf("compacted %v, want %v (%+v)", res.Compacted, tc.compacted, res)
			}
			if tc.compacted && res.After > 1<<20 {
				t.Errorf("after compaction %d bytes, want under 1 MiB", res.After)
			}
			wantSameContent(t, dumpFile(t, filepath.Join(dir, FileName)), before)
		})
	}
	t.Run("no file yet", func(t *testing.T) {
		dir := t.TempDir()
		if res, err := CompactIfWasteful(dir, CompactOptions{}); err != nil || res.Compacted {
			t.Fatalf("%+v, %v: want nothing done", res, err)
		}
		if _, err := os.Stat(filepath.Join(dir, FileName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a file was created: %v", err)
		}
	})
}

// The check of a copy tells apart stores that differ in one octet of a
// value, a key, a bucket's name or its sequence, and finds equal ones
// equal.
func TestDigest_FindsAnyDifference(t *testing.T) {
	build := func(t *testing.T, bucket, key, value string, seq uint64) *bolt.DB {
		db, err := bolt.Open(filepath.Join(t.TempDir(), "d.db"), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte(bucket))
			if err != nil {
				return err
			}
			if err := b.SetSequence(seq); err != nil {
				return err
			}
			inner, err := b.CreateBucket([]byte("inner"))
			if err != nil {
				return err
			}
			return inner.Put([]byte(key), []byte(value))
		})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	seed := maphash.MakeSeed()
	sum := func(db *bolt.DB) []byte {
		d, err := digest(db, newDigester(seed))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	base := sum(build(t, "mailboxes", "k1", "value", 7))
	if got := sum(build(t, "mailboxes", "k1", "value", 7)); !bytes.Equal(got, base) {
		t.Fatal("equal stores, different digests")
	}
	for _, tt := range []struct {
		name               string
		bucket, key, value string
		seq                uint64
	}{
		{"value", "mailboxes", "k1", "valuf", 7},
		{"key", "mailboxes", "k2", "value", 7},
		{"bucket", "mailboxez", "k1", "value", 7},
		{"sequence", "mailboxes", "k1", "value", 8},
		{"key and value split elsewhere", "mailboxes", "k1v", "alue", 7},
	} {
		if got := sum(build(t, tt.bucket, tt.key, tt.value, tt.seq)); bytes.Equal(got, base) {
			t.Errorf("a different %s, the same digest", tt.name)
		}
	}
}
