package store

import (
	"bytes"
	"sync"
	"testing"
)

// FreeSpace counts the file system's free space and the free pages inside
// the database: deleting mail gives room back at once, though the file
// does not shrink.
func TestFreeSpace_CountsFreePagesInTheFile(t *testing.T) {
	s := openInternal(t, Options{NoOnlineCompaction: true})
	const addr = "alice@example.test"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	id, err := s.Append(addr, bytes.Repeat([]byte("x"), 4<<20))
	if err != nil {
		t.Fatal(err)
	}
	before := s.freeInFile()
	if err := s.Delete(addr, []uint64{id}); err != nil {
		t.Fatal(err)
	}
	// The pages are free once no reader can see them: one more commit.
	if err := s.AddUser("bob@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	inFile := s.freeInFile()
	if inFile-before < 4<<20 {
		t.Fatalf("free pages in the file went from %d to %d octets after 4 MiB were deleted", before, inFile)
	}
	free, err := s.FreeSpace()
	if err != nil {
		t.Fatal(err)
	}
	avail, err := fsAvail(s.path)
	if err != nil {
		t.Fatal(err)
	}
	// Other tests write to the same file system meanwhile: within 64 MiB.
	if d := free - inFile - avail; d > 64<<20 || d < -64<<20 {
		t.Errorf("FreeSpace = %d, want the file system's %d + the file's %d", free, avail, inFile)
	}
}

// FreeSpace is called by every SMTP session while the committer writes:
// it must not read through bbolt's map, which a commit that grows the
// file moves (bbolt's Info did: a SIGSEGV under load).
func TestFreeSpace_WhileTheFileGrows(t *testing.T) {
	s := openInternal(t, Options{NoOnlineCompaction: true})
	const addr = "alice@example.test"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hammer(t, &wg, stop, 4, func() error { _, err := s.FreeSpace(); return err })
	// bbolt doubles its map up to 1 GiB: 64 MiB of mail remaps it a dozen
	// times.
	msg := bytes.Repeat([]byte("x"), 256<<10)
	for range 256 {
		if _, err := s.Append(addr, msg); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// BenchmarkFreeSpace is the price of the free space check every mail
// transaction pays at MAIL (mta.Options.FreeSpace): a statfs and bbolt's
// stats.
func BenchmarkFreeSpace(b *testing.B) {
	s := openInternal(b, Options{NoOnlineCompaction: true})
	for b.Loop() {
		if _, err := s.FreeSpace(); err != nil {
			b.Fatal(err)
		}
	}
}
