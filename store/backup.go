package store

import (
	"io"

	bolt "go.etcd.io/bbolt"
)

// WriteBackup streams a consistent copy of the whole database to w from one
// read transaction, so mail keeps arriving meanwhile. begin, if not nil, is
// called first with the copy's exact length, for a caller that frames the
// stream. It returns the bytes written.
func (s *Store) WriteBackup(w io.Writer, begin func(size int64) error) (int64, error) {
	var n int64
	err := s.view(func(tx *bolt.Tx) error {
		if begin != nil {
			if err := begin(tx.Size()); err != nil {
				return err
			}
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}
