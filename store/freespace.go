package store

import "fmt"

// FreeSpace is how much more the store can take before a write fails for
// want of disk: the free space of its file system (what an unprivileged
// writer may use), and the free pages inside its file, which writes reuse
// before the file grows. A file system whose free space is unknown (see
// fsAvail) reports an error.
func (s *Store) FreeSpace() (int64, error) {
	avail, err := fsAvail(s.path)
	if err != nil {
		return 0, fmt.Errorf("free space of %s: %w", s.path, err)
	}
	return avail + s.freeInFile(), nil
}

// freeInFile is the size of the free pages inside the open file, as of the
// last commit.
func (s *Store) freeInFile() int64 {
	defer s.lockShared()()
	return int64(s.freePages()) * int64(s.pageSize)
}
