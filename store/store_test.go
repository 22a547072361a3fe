package store_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"

	"minimail/store"
)

// testOptions keep suites fast: the cheapest bcrypt cost and a short lock
// wait, so a lock test fails quickly instead of hanging.
var testOptions = store.Options{BcryptCost: bcrypt.MinCost, LockTimeout: 200 * time.Millisecond}

// openStore opens a store in dir and closes it when the test ends.
func openStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	s, err := store.Open(dir, testOptions)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// storeWithUsers opens a fresh store holding the given users, each with the
// password "pw-" + address.
func storeWithUsers(t testing.TB, addrs ...string) *store.Store {
	t.Helper()
	s := openStore(t, t.TempDir())
	for _, a := range addrs {
		if err := s.AddUser(a, "pw-"+a); err != nil {
			t.Fatalf("AddUser(%s): %v", a, err)
		}
	}
	return s
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// minimailDB writes a real minimail database with one user and one message
// into dir and returns its path, closed.
func minimailDB(t *testing.T, dir string) string {
	t.Helper()
	s, err := store.Open(dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser("alice@example.org", "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append("alice@example.org", []byte("Subject: hi\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, store.FileName)
}

// boltFile writes a bbolt file at path with fill applied, as another program
// using bbolt would.
func boltFile(t *testing.T, path string, opts *bolt.Options, fill func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fill); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpen_CreatesAndReopens(t *testing.T) {
	dir := t.TempDir()
	path := minimailDB(t, dir)
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("database mode = %v, want 0600 (it holds password hashes)", fi.Mode().Perm())
	}
	s := openStore(t, dir)
	msgs, err := s.List("alice@example.org")
	if err != nil || len(msgs) != 1 {
		t.Fatalf("after reopen List = %v, %v; want one message", msgs, err)
	}
}

// TestOpen_BadDataDir: a data_dir that cannot hold the database is named in
// a clear error, and nothing is created.
func TestOpen_BadDataDir(t *testing.T) {
	base := t.TempDir()
	aFile := filepath.Join(base, "plainfile")
	if err := os.WriteFile(aFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dir     string
		wantIs  error
		wantSub string
	}{
		{"missing", filepath.Join(base, "nope"), fs.ErrNotExist, "data_dir"},
		{"is a file", aFile, nil, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := store.Open(tt.dir, testOptions)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantSub) || !strings.Contains(err.Error(), tt.dir) {
				t.Errorf("err = %q, want it to name %q and say %q", err, tt.dir, tt.wantSub)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(base, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing data_dir was created: %v", err)
	}
	if got := readFile(t, aFile); string(got) != "x" {
		t.Errorf("file given as data_dir changed: %q", got)
	}
}

func TestOpen_UnwritableDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	// root ignores directory permissions: probe before trusting the chmod.
	probe := filepath.Join(dir, "probe")
	if f, err := os.Create(probe); err == nil {
		f.Close()
		os.Remove(probe)
		t.Skip("directory permissions are not enforced for this user (root?)")
	}
	s, err := store.Open(dir, testOptions)
	if err == nil {
		s.Close()
		t.Fatal("Open in a read-only data_dir succeeded")
	}
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), dir) {
		t.Errorf("err = %v, want a permission error naming %s", err, dir)
	}
}

// TestOpen_RefusesForeignFiles: whatever is already at DATA_DIR/minimail.db
// and is not ours is refused with a clear error and left byte-for-byte as it
// was.
func TestOpen_RefusesForeignFiles(t *testing.T) {
	random := func(n int) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			b := make([]byte, n)
			rand.Read(b)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	otherBucket := func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("etcd"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	}
	tests := []struct {
		name    string
		make    func(t *testing.T, path string)
		wantSub string
	}{
		{"random bytes 64KiB", random(64 << 10), "not a minimail database or corrupt"},
		{"random bytes 100B", random(100), "not a minimail database or corrupt"},
		{"text file", func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strings.Repeat("hello world\n", 1000)), 0o600)
		}, "not a minimail database or corrupt"},
		{"bbolt without meta bucket", func(t *testing.T, path string) {
			boltFile(t, path, nil, otherBucket)
		}, "not a minimail database"},
		{"bbolt without meta bucket, no freelist sync", func(t *testing.T, path string) {
			// etcd writes its files like this; bbolt rewrites the
			// freelist of such a file when opening it read-write.
			boltFile(t, path, &bolt.Options{NoFreelistSync: true}, otherBucket)
		}, "not a minimail database"},
		{"bbolt with meta bucket but no schema", func(t *testing.T, path string) {
			boltFile(t, path, nil, func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("meta"))
				return err
			})
		}, "not a minimail database"},
		{"unknown schema version", func(t *testing.T, path string) {
			minimailDB(t, filepath.Dir(path))
			boltFile(t, path, nil, func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte("99"))
			})
		}, `unknown schema version "99"`},
		{"meta pages overwritten", func(t *testing.T, path string) {
			minimailDB(t, filepath.Dir(path))
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := make([]byte, 2*os.Getpagesize())
			rand.Read(junk)
			if _, err := f.WriteAt(junk, 0); err != nil {
				t.Fatal(err)
			}
		}, "not a minimail database or corrupt"},
		{"data pages overwritten", func(t *testing.T, path string) {
			minimailDB(t, filepath.Dir(path))
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Meta pages stay valid; everything they point to is junk.
			junk := make([]byte, fi.Size()-int64(2*os.Getpagesize()))
			rand.Read(junk)
			if _, err := f.WriteAt(junk, int64(2*os.Getpagesize())); err != nil {
				t.Fatal(err)
			}
		}, "corrupt"},
		{"freelist overwritten", func(t *testing.T, path string) {
			// Only the read-write open reads the freelist. minimail
			// writes none; files from earlier versions have one, which
			// bbolt writes when a file is opened with freelist sync.
			minimailDB(t, filepath.Dir(path))
			boltFile(t, path, nil, func(*bolt.Tx) error { return nil })
			b := readFile(t, path)
			ps := os.Getpagesize()
			for _, meta := range []int{0, ps} {
				// page header (16 bytes), then magic, version, page size,
				// flags (4 each), root bucket (16), freelist page id.
				fl := int(binary.LittleEndian.Uint64(b[meta+48:]))
				for i := fl * ps; i < (fl+1)*ps && i < len(b); i++ {
					b[i] = 0xA5
				}
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "corrupt"},
		{"truncated", func(t *testing.T, path string) {
			minimailDB(t, filepath.Dir(path))
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
		}, "not a minimail database or corrupt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, store.FileName)
			tt.make(t, path)
			before := readFile(t, path)
			s, err := store.Open(dir, testOptions)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantSub) || !strings.Contains(err.Error(), path) {
				t.Errorf("err = %q, want it to name %s and say %q", err, path, tt.wantSub)
			}
			if after := readFile(t, path); !bytes.Equal(before, after) {
				t.Errorf("refused file was modified (%d bytes before, %d after)", len(before), len(after))
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("data_dir holds %d entries after refusal, want only %s", len(entries), store.FileName)
			}
		})
	}
}

// TestOpen_SecondOpenerGetsErrLocked: bbolt allows one opener; a second Open
// fails with ErrLocked within LockTimeout instead of hanging.
func TestOpen_SecondOpenerGetsErrLocked(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir)
	before := readFile(t, filepath.Join(dir, store.FileName))

	type result struct {
		s   *store.Store
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		s, err := store.Open(dir, testOptions)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		if r.err == nil {
			r.s.Close()
			t.Fatal("second Open succeeded while the first is open")
		}
		if !errors.Is(r.err, store.ErrLocked) {
			t.Errorf("err = %v, want ErrLocked", r.err)
		}
		if el := time.Since(start); el < testOptions.LockTimeout/2 {
			t.Errorf("gave up after %v, before LockTimeout %v", el, testOptions.LockTimeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second Open hangs on the lock")
	}
	if after := readFile(t, filepath.Join(dir, store.FileName)); !bytes.Equal(before, after) {
		t.Error("locked-out Open modified the file")
	}
}

func TestClose_Twice(t *testing.T) {
	s, err := store.Open(t.TempDir(), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestWriteAfterClose_ReturnsError: a write that comes after (or races with)
// Close gets an error; it never blocks forever.
func TestWriteAfterClose_ReturnsError(t *testing.T) {
	for i := 0; i < 20; i++ {
		s, err := store.Open(t.TempDir(), testOptions)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.AddUser("a@example.org", "pw"); err != nil {
			t.Fatal(err)
		}
		results := make(chan error, 8)
		for g := 0; g < cap(results); g++ {
			go func() {
				_, err := s.Append("a@example.org", []byte("x\r\n"))
				results <- err
			}()
		}
		s.Close()
		for g := 0; g < cap(results); g++ {
			select {
			case <-results:
			case <-time.After(10 * time.Second):
				t.Fatal("Append racing with Close never returned")
			}
		}
		go func() {
			_, err := s.Append("a@example.org", []byte("x\r\n"))
			results <- err
		}()
		select {
		case err := <-results:
			if err == nil {
				t.Fatal("Append after Close succeeded")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Append after Close never returned")
		}
	}
}

// TestBackup_OpensWithAllMessages: a backup taken while writers are busy is
// a complete minimail database on its own.
func TestBackup_OpensWithAllMessages(t *testing.T) {
	s := storeWithUsers(t, "alice@example.org", "bob@example.org")
	want := map[uint64][]byte{}
	for i := 0; i < 50; i++ {
		addr := []string{"alice@example.org", "bob@example.org"}[i%2]
		msg := []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i))
		id, err := s.Append(addr, msg)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = msg
	}
	// Keep appending during the backup: the copy must still be consistent.
	stop := make(chan struct{})
	busy := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				busy <- nil
				return
			default:
			}
			if _, err := s.Append("alice@example.org", []byte("late\r\n")); err != nil {
				busy <- err
				return
			}
		}
	}()
	bdir := t.TempDir()
	err := s.Backup(filepath.Join(bdir, store.FileName))
	close(stop)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-busy; err != nil {
		t.Fatal(err)
	}

	b := openStore(t, bdir)
	got := map[uint64][]byte{}
	for _, addr := range []string{"alice@example.org", "bob@example.org"} {
		if _, err := b.Authenticate("", addr, "pw-"+addr); err != nil {
			t.Errorf("backup: Authenticate(%s): %v", addr, err)
		}
		infos, err := b.List(addr)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range infos {
			body, err := b.Read(addr, in.ID)
			if err != nil {
				t.Fatalf("backup: Read(%d): %v", in.ID, err)
			}
			if int64(len(body)) != in.Size {
				t.Errorf("backup: message %d size %d, body %d bytes", in.ID, in.Size, len(body))
			}
			got[in.ID] = body
		}
	}
	for id, msg := range want {
		if !bytes.Equal(got[id], msg) {
			t.Errorf("backup: message %d = %q, want %q", id, got[id], msg)
		}
	}
}

func TestBackup_RefusesExistingFile(t *testing.T) {
	s := storeWithUsers(t, "alice@example.org")
	path := filepath.Join(t.TempDir(), "existing")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Backup(path); err == nil {
		t.Fatal("Backup over an existing file succeeded")
	}
	if got := readFile(t, path); string(got) != "keep me" {
		t.Errorf("existing file overwritten: %q", got)
	}
}
