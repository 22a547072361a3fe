package store

import (
	"bytes"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// FreeSpace counts the file system's free space and the free pages inside
// the database: deleting mail gives room back at once, though the file
// does not shrink.
func TestFreeSpace_CountsFreePagesInTheFile(t *testing.T) {
	s, err := Open(t.TempDir(), Options{BcryptCost: bcrypt.MinCost, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
