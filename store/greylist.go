package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The greylist bucket holds the MX's greylisting records (mta/antispam
// encodes them): key -> a small value. Like the aliases bucket it came
// after schema 2 and needs no migration: initSchema creates it when
// missing, an older file simply has no records yet. The records are
// pruned as they expire, so the bucket stays small.
var bucketGreylist = []byte("greylist")

// UpdateGreylist passes the values stored under keys (nil for none, each a
// copy) to update and stores what it returns in their place (nil deletes),
// in one committed write transaction. update may run more than once.
func (s *Store) UpdateGreylist(keys []string, update func(vals [][]byte) [][]byte) error {
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGreylist)
		vals := make([][]byte, len(keys))
		for i, k := range keys {
			if v := b.Get([]byte(k)); v != nil {
				vals[i] = append([]byte(nil), v...)
			}
		}
		out := update(vals)
		if len(out) != len(keys) {
			return fmt.Errorf("greylist update returned %d values for %d keys", len(out), len(keys))
		}
		for i, k := range keys {
			var err error
			if out[i] == nil {
				err = b.Delete([]byte(k))
			} else {
				err = b.Put([]byte(k), out[i])
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: greylist: %w", err)
	}
	return nil
}

// PruneGreylist deletes every greylist record that expired reports true
// for, and reports how many went.
func (s *Store) PruneGreylist(expired func(val []byte) bool) (int, error) {
	var n int
	err := s.update(func(tx *bolt.Tx) error {
		n = 0
		b := tx.Bucket(bucketGreylist)
		var doomed [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if expired(v) {
				doomed = append(doomed, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: greylist prune: %w", err)
	}
	return n, nil
}
