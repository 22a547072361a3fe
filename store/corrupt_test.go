package store_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"minimail/store"
)

// corruptDB writes a database with alice (message 1, a shared body 1), bob
// (no mail) and queue entry 1, then applies damage to it with bbolt.
func corruptDB(t *testing.T, damage func(tx *bolt.Tx) error) string {
	t.Helper()
	dir := t.TempDir()
	s, err := store.Open(dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{alice, bob} {
		if err := s.AddUser(a, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(alice, []byte("Subject: hi\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := s.EnqueueMessage(store.QueueEntry{From: alice, Rcpts: []store.QueueRcpt{{Addr: "x@remote.test", State: store.RcptPending}}, Created: now, NextAttempt: now}, []byte("q\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	boltFile(t, filepath.Join(dir, store.FileName), nil, damage)
	return dir
}

func put(path []string, k, v []byte) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(path[0]))
		for _, p := range path[1:] {
			b = b.Bucket([]byte(p))
		}
		return b.Put(k, v)
	}
}

func del(path []string, k []byte) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(path[0]))
		for _, p := range path[1:] {
			b = b.Bucket([]byte(p))
		}
		return b.Delete(k)
	}
}

func setSequence(path []string, n uint64) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(path[0]))
		for _, p := range path[1:] {
			b = b.Bucket([]byte(p))
		}
		return b.SetSequence(n)
	}
}

func id8(n uint64) []byte {
	return []byte{byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// TestCorruptRecords_GiveErrorsNamingTheRecord: a damaged value or key in
// the file gives an error that says which record, never a panic.
func TestCorruptRecords_GiveErrorsNamingTheRecord(t *testing.T) {
	aliceIndex := []string{"mailboxes", alice, "index"}
	tests := []struct {
		name   string
		damage func(tx *bolt.Tx) error
		call   func(s *store.Store) error
		want   string // in the error
	}{
		{"index entry too short", put(aliceIndex, id8(1), []byte{1, 2, 3}),
			func(s *store.Store) error { _, err := s.List(alice); return err }, "message index entry 1: 3 bytes"},
		{"index entry read", put(aliceIndex, id8(1), []byte{1, 2, 3}),
			func(s *store.Store) error { _, err := s.Read(alice, 1); return err }, "message index entry 1"},
		{"index entry deleted", put(aliceIndex, id8(1), []byte{1, 2, 3}),
			func(s *store.Store) error { return s.Delete(alice, []uint64{1}) }, "message index entry 1"},
		{"index key too short", put(aliceIndex, []byte("abc"), make([]byte, 32)),
			func(s *store.Store) error { _, err := s.List(alice); return err }, "message index entry 616263"},
		{"index size beyond belief", put(aliceIndex, id8(1), append(id8(1<<62), make([]byte, 24)...)),
			func(s *store.Store) error { _, err := s.List(alice); return err }, "message index entry 1: size"},
		{"shared body missing", del([]string{"bodies", string(id8(1))}, []byte("m")),
			func(s *store.Store) error { _, err := s.Read(alice, 1); return err }, "message 1: stored"},
		{"reference count missing", setSequence([]string{"bodies", string(id8(1))}, 0),
			func(s *store.Store) error { return s.Delete(alice, []uint64{1}) }, "body 1: no reference count"},
		{"reference count garbled", put([]string{"bodyrefs"}, id8(1), []byte("x")),
			func(s *store.Store) error { return s.DeleteUser(alice) }, "body 1: reference count"},
		{"user record not JSON", put([]string{"users"}, []byte(bob), []byte("{not json")),
			func(s *store.Store) error { _, err := s.Users(); return err }, `user record "bob@example.org"`},
		{"user record under another key", put([]string{"users"}, []byte(bob), []byte(`{"address":"eve@example.org","hash":"eA=="}`)),
			func(s *store.Store) error { _, err := s.Authenticate("", bob, "pw"); return err }, `user record "bob@example.org"`},
		{"queue entry not JSON", put([]string{"queue"}, id8(1), []byte("[")),
			func(s *store.Store) error { _, err := s.QueueEntries(); return err }, "queue entry 1"},
		{"queue key too short", put([]string{"queue"}, []byte("q"), []byte("[")),
			func(s *store.Store) error { _, err := s.QueueEntries(); return err }, "queue entry 71"},
		{"queue entry holding another id", put([]string{"queue"}, id8(1), []byte(`{"id":2}`)),
			func(s *store.Store) error { _, err := s.QueueEntry(1); return err }, "queue entry 1: holds id 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, corruptDB(t, tt.damage))
			err := func() (err error) {
				defer func() {
					if r := recover(); r != nil {
						err = fmt.Errorf("panic: %v", r)
					}
				}()
				return tt.call(s)
			}()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
