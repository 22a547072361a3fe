package store

import (
	"os"
	"path/filepath"
	"strings"
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
