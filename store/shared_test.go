package store_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"minimail/store"
)

const carol = "carol@example.org"

// bucketLen counts the keys of a top-level bucket of dir's database, which
// must be closed.
func bucketLen(t *testing.T, dir, name string) int {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, store.FileName), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(name))
		if b == nil {
			return errors.New("no bucket " + name)
		}
		return b.ForEach(func(k, v []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// sharedStore holds alice, bob and carol, each with a copy of body under a
// header of their own, delivered in one AppendMany call.
func sharedStore(t *testing.T, dir string, body []byte) (*store.Store, map[string]uint64) {
	t.Helper()
	s := openStore(t, dir)
	var ds []store.Delivery
	for _, a := range []string{alice, bob, carol} {
		if err := s.AddUser(a, "pw"); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, store.Delivery{Address: a, Header: []byte("Delivered-To: " + a + "\r\n"), Message: body})
	}
	ids, err := s.AppendMany(ds)
	if err != nil {
		t.Fatal(err)
	}
	return s, map[string]uint64{alice: ids[0], bob: ids[1], carol: ids[2]}
}

func wantCopy(t *testing.T, s *store.Store, addr string, id uint64, body []byte) {
	t.Helper()
	want := append([]byte("Delivered-To: "+addr+"\r\n"), body...)
	got, err := s.Read(addr, id)
	if err != nil {
		t.Fatalf("Read(%s, %d): %v", addr, id, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Read(%s, %d) = %d octets, want header + body, %d", addr, id, len(got), len(want))
	}
	infos, err := s.List(addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.ID == id && in.Size != int64(len(want)) {
			t.Errorf("List(%s) size %d, want the whole copy, %d", addr, in.Size, len(want))
		}
	}
}

// TestAppendMany_OneBodyForEveryMailbox: one message for three mailboxes is
// stored once; each mailbox reads (and LIST counts) its header and the body.
func TestAppendMany_OneBodyForEveryMailbox(t *testing.T) {
	dir := t.TempDir()
	body := bytes.Repeat([]byte("0123456789abcde\n"), 1<<12)
	s, ids := sharedStore(t, dir, body)
	for addr, id := range ids {
		wantCopy(t, s, addr, id, body)
	}
	s.Close()
	if n := bucketLen(t, dir, "bodies"); n != 1 {
		t.Errorf("%d bodies stored for one message to three mailboxes, want 1", n)
	}
}

// TestDelete_SharedBodyGoesWithTheLastCopy: deleting one mailbox's copy (by
// POP3 or by deleting the user) leaves the others whole; the body and its
// reference count go with the last copy.
func TestDelete_SharedBodyGoesWithTheLastCopy(t *testing.T) {
	body := []byte("Subject: shared\r\n\r\nfor three\r\n")
	for _, removeCarol := range []string{"Delete", "DeleteUser"} {
		t.Run("carol last by "+removeCarol, func(t *testing.T) {
			dir := t.TempDir()
			s, ids := sharedStore(t, dir, body)
			if err := s.Delete(alice, []uint64{ids[alice]}); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteUser(bob); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Read(alice, ids[alice]); !errors.Is(err, store.ErrNoMessage) {
				t.Errorf("Read of alice's deleted copy = %v", err)
			}
			wantCopy(t, s, carol, ids[carol], body)
			s.Close()
			if n := bucketLen(t, dir, "bodies"); n != 1 {
				t.Fatalf("%d bodies with carol's copy left, want 1", n)
			}

			s = openStore(t, dir)
			wantCopy(t, s, carol, ids[carol], body)
			var err error
			if removeCarol == "Delete" {
				err = s.Delete(carol, []uint64{ids[carol]})
			} else {
				err = s.DeleteUser(carol)
			}
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			for _, b := range []string{"bodies", "bodyrefs"} {
				if n := bucketLen(t, dir, b); n != 0 {
					t.Errorf("%d records left in %s after the last copy went", n, b)
				}
			}
		})
	}
}

// TestAppendMany_SharesOnlyTheSameSlice: equal starts are not enough: a
// shorter slice of the same bytes, or the same mailbox twice, each read back
// exactly what was given.
func TestAppendMany_SharesOnlyTheSameSlice(t *testing.T) {
	s := storeWithUsers(t, alice, bob)
	msg := []byte("Subject: x\r\n\r\nlong body\r\n")
	ds := []store.Delivery{
		{Address: alice, Message: msg},
		{Address: bob, Message: msg[:12]},
		{Address: alice, Message: msg},
		{Address: bob, Message: msg[:0]},
	}
	ids, err := s.AppendMany(ds)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if got, err := s.Read(d.Address, ids[i]); err != nil || !bytes.Equal(got, d.Message) {
			t.Errorf("copy %d: %q, %v; want %q", i, got, err, d.Message)
		}
	}
	// Two copies in alice's mailbox share one body: the second survives the
	// first's deletion.
	if err := s.Delete(alice, ids[:1]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(alice, ids[2]); err != nil || !bytes.Equal(got, msg) {
		t.Errorf("alice's second copy after deleting the first: %q, %v", got, err)
	}
}

// TestAppendMany_FailureStoresNoBody: all or nothing covers the shared body.
func TestAppendMany_FailureStoresNoBody(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.AddUser(alice, "pw"); err != nil {
		t.Fatal(err)
	}
	msg := []byte("m\r\n")
	_, err := s.AppendMany([]store.Delivery{{Address: alice, Message: msg}, {Address: "nobody@example.org", Message: msg}})
	if !errors.Is(err, store.ErrNoUser) {
		t.Fatalf("AppendMany with an unknown user = %v", err)
	}
	s.Close()
	if n := bucketLen(t, dir, "bodies"); n != 0 {
		t.Errorf("%d bodies stored by a failed AppendMany", n)
	}
}
