package store

import (
	"testing"

	bolt "go.etcd.io/bbolt"
)

// wantCurrentSchema fails unless s's file says it is of SchemaVersion.
func wantCurrentSchema(t *testing.T, s *Store) {
	t.Helper()
	var version string
	s.db.View(func(tx *bolt.Tx) error { version = string(tx.Bucket(bucketMeta).Get(keySchema)); return nil })
	if version != SchemaVersion {
		t.Errorf("schema %q after Open, want %q", version, SchemaVersion)
	}
}

// asSchema makes s's file what schema version wrote (rewrite changes the
// records, the version key is set), closes s and opens the file again with
// opts, as this code first meets such a file; the store is closed when
// the test ends.
func asSchema(t *testing.T, s *Store, dir string, opts Options, version string, rewrite func(*bolt.Tx) error) *Store {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := rewrite(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(version))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatalf("open a schema %s file: %v", version, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// bodyRefs reads how the file counts body id's references: its bodyrefs
// entry (nil when none) and its bucket's sequence.
func bodyRefs(t *testing.T, s *Store, id uint64) (entry []byte, seq uint64, stored bool) {
	t.Helper()
	s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketBodyRefs).Get(idKey(id)); v != nil {
			entry = append([]byte(nil), v...)
		}
		if b := tx.Bucket(bucketBodies).Bucket(idKey(id)); b != nil {
			seq, stored = b.Sequence(), true
		}
		return nil
	})
	return entry, seq, stored
}

// A body stored for one copy keeps its count in its bucket's sequence, not
// in bodyrefs (no pages of that tree in the delivery's commit); one shared
// by two copies has its count in bodyrefs; each goes with its last copy.
func TestRefCount_OneCopyInTheBodysSequence(t *testing.T) {
	s := openWithUsers(t, "a@example.test", "b@example.test")
	msg := []byte("Subject: x\r\n\r\nbody\r\n")
	one, err := s.AppendMany([]Delivery{{Address: "a@example.test", Message: msg}})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := s.AppendMany([]Delivery{{Address: "a@example.test", Message: msg}, {Address: "b@example.test", Message: msg}})
	if err != nil {
		t.Fatal(err)
	}
	// Body ids are handed out in order: 1 for the lone copy, 2 shared.
	if entry, seq, _ := bodyRefs(t, s, 1); entry != nil || seq != 1 {
		t.Errorf("body of one copy: bodyrefs %x, sequence %d; want none and 1", entry, seq)
	}
	if entry, seq, _ := bodyRefs(t, s, 2); string(entry) != string(encodeCount(2)) || seq != 0 {
		t.Errorf("body of two copies: bodyrefs %x, sequence %d; want 2 and 0", entry, seq)
	}
	if err := s.Delete("a@example.test", []uint64{one[0], shared[0]}); err != nil {
		t.Fatal(err)
	}
	if _, _, stored := bodyRefs(t, s, 1); stored {
		t.Error("body of one copy left after its copy was deleted")
	}
	if entry, _, stored := bodyRefs(t, s, 2); !stored || string(entry) != string(encodeCount(1)) {
		t.Errorf("shared body after one of two copies went: stored %v, bodyrefs %x", stored, entry)
	}
	if err := s.Delete("b@example.test", []uint64{shared[1]}); err != nil {
		t.Fatal(err)
	}
	if entry, _, stored := bodyRefs(t, s, 2); stored || entry != nil {
		t.Errorf("shared body after its last copy went: stored %v, bodyrefs %x", stored, entry)
	}
	checkBolt(t, s)
}

// A schema 3 file counts every body in bodyrefs, one copy or more: opened
// by this code it is schema 4 without a rewrite, and its copies delete as
// before.
func TestRefCount_Schema3FileOpens(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{BcryptCost: 4, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser("a@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	ids, err := s.AppendMany([]Delivery{{Address: "a@example.test", Message: []byte("Subject: x\r\n\r\nold\r\n")}})
	if err != nil {
		t.Fatal(err)
	}
	// Make it what schema 3 wrote: the count in bodyrefs, the sequence 0.
	s = asSchema(t, s, dir, Options{BcryptCost: 4, NoOnlineCompaction: true}, schemaV3, func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketBodyRefs).Put(idKey(1), encodeCount(1)); err != nil {
			return err
		}
		return tx.Bucket(bucketBodies).Bucket(idKey(1)).SetSequence(0)
	})
	wantCurrentSchema(t, s)
	if err := s.Delete("a@example.test", ids); err != nil {
		t.Fatalf("delete a schema 3 copy: %v", err)
	}
	if entry, _, stored := bodyRefs(t, s, 1); stored || entry != nil {
		t.Errorf("schema 3 body after its copy went: stored %v, bodyrefs %x", stored, entry)
	}
}
