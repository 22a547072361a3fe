package store

import (
	"bytes"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestGreylist_UpdateAndPrune(t *testing.T) {
	s := openQueueStore(t, t.TempDir())
	defer s.Close()
	keys := []string{"a", "b"}
	err := s.UpdateGreylist(keys, func(vals [][]byte) [][]byte {
		if vals[0] != nil || vals[1] != nil {
			t.Errorf("new keys have values %q", vals)
		}
		return [][]byte{[]byte("old"), []byte("keep")}
	})
	if err != nil {
		t.Fatal(err)
	}
	var seen [][]byte
	if err := s.UpdateGreylist(keys, func(vals [][]byte) [][]byte { seen = vals; return vals }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(seen[0], []byte("old")) || !bytes.Equal(seen[1], []byte("keep")) {
		t.Fatalf("stored values read back as %q", seen)
	}
	n, err := s.PruneGreylist(func(v []byte) bool { return string(v) == "old" })
	if err != nil || n != 1 {
		t.Fatalf("PruneGreylist = %d, %v; want 1", n, err)
	}
	s.UpdateGreylist(keys, func(vals [][]byte) [][]byte { seen = vals; return [][]byte{nil, vals[1]} })
	if seen[0] != nil || string(seen[1]) != "keep" {
		t.Fatalf("after prune: %q", seen)
	}
	if err := s.UpdateGreylist(keys, func([][]byte) [][]byte { return nil }); err == nil {
		t.Fatal("an update returning the wrong number of values was stored")
	}
}

// A file from before the greylist bucket gets it at the next Open, with
// the schema version unchanged.
func TestGreylist_BucketAddedToAnOlderFile(t *testing.T) {
	dir := t.TempDir()
	openQueueStore(t, dir).Close()
	db, err := bolt.Open(dir+"/minimail.db", 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketGreylist) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(dir, Options{BcryptCost: 4})
	if err != nil {
		t.Fatalf("open a file without the greylist bucket: %v", err)
	}
	defer s.Close()
	if err := s.UpdateGreylist([]string{"k"}, func(v [][]byte) [][]byte { return [][]byte{[]byte("v")} }); err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySchema); string(v) != SchemaVersion {
			t.Errorf("schema version %q, want %q", v, SchemaVersion)
		}
		return nil
	})
}
