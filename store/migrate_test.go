package store_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"minimail/store"
)

// testdata/schema1.db was written by the schema 1 code (before shared bodies
// and epochs): users alice@example.org and bob@example.org (passwords
// "pw-" + address); alice holds ids 1 and 4 (2 was deleted), bob id 3; one
// queue entry (id 1, from alice to x@remote.test).
func schema1Dir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	raw, err := os.ReadFile("testdata/schema1.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, store.FileName), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func schemaOf(t *testing.T, dir string) string {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, store.FileName), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket([]byte("meta")).Get([]byte("schema")))
		return nil
	})
	return v
}

// TestOpen_MigratesSchema1KeepingEveryUIDL: an upgrade must not make
// clients that leave mail on the server download everything again, and all
// else stored must still be there.
func TestOpen_MigratesSchema1KeepingEveryUIDL(t *testing.T) {
	dir := schema1Dir(t)
	s := openStore(t, dir)
	if secret, err := s.SRSSecret(); err != nil || len(secret) == 0 {
		t.Errorf("no SRS secret after migration: %v", err)
	}

	mail := map[string][]string{ // UIDL and body per message, as schema 1 served them
		alice: {"1", "Subject: one\r\n\r\nfirst\r\n", "4", "Subject: three\r\n\r\nthird\r\n"},
		bob:   {"3", "Subject: bob\r\n\r\nfor bob\r\n"},
	}
	for addr, want := range mail {
		if _, err := s.Authenticate("", addr, "pw-"+addr); err != nil {
			t.Errorf("Authenticate(%s) after migration: %v", addr, err)
		}
		infos, err := s.List(addr)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, in := range infos {
			body, err := s.Read(addr, in.ID)
			if err != nil {
				t.Fatal(err)
			}
			if in.Size != int64(len(body)) {
				t.Errorf("%s %d: size %d, body %d octets", addr, in.ID, in.Size, len(body))
			}
			got = append(got, in.UIDL(), string(body))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s after migration: %q, want %q", addr, got, want)
		}
	}
	q, err := s.QueueEntries()
	if err != nil || len(q) != 1 || q[0].From != alice || q[0].Rcpts[0].Addr != "x@remote.test" {
		t.Errorf("queue after migration: %+v, %v", q, err)
	}
	if body, err := s.QueueBody(1); err != nil || string(body) != "Subject: out\r\n\r\nqueued\r\n" {
		t.Errorf("queue body after migration: %q, %v", body, err)
	}

	// New mail continues the id sequence in the new UIDL form.
	id, err := s.AppendMany([]store.Delivery{{Address: alice, Header: []byte("Delivered-To: alice@example.org\r\n"), Message: []byte("new\r\n")}})
	if err != nil {
		t.Fatal(err)
	}
	infos, _ := s.List(alice)
	last := infos[len(infos)-1]
	if last.ID != id[0] || last.ID != 5 || !regexp.MustCompile(`^[0-9a-f]{16}-5$`).MatchString(last.UIDL()) {
		t.Errorf("new message after migration: id %d, UIDL %q; want id 5 in the epoch form", last.ID, last.UIDL())
	}
	// Old and new messages delete alike.
	if err := s.Delete(alice, []uint64{1, 5}); err != nil {
		t.Fatal(err)
	}
	if ids := listIDs(t, s, alice); !slices.Equal(ids, []uint64{4}) {
		t.Errorf("alice after delete: %v, want [4]", ids)
	}
	if err := s.DeleteUser(bob); err != nil {
		t.Fatal(err)
	}
	s.Close()

	if v := schemaOf(t, dir); v != store.SchemaVersion {
		t.Errorf("schema after migration = %q, want %q", v, store.SchemaVersion)
	}
	s = openStore(t, dir)
	if infos, err := s.List(alice); err != nil || len(infos) != 1 || infos[0].UIDL() != "4" {
		t.Errorf("reopened after migration: %+v, %v", infos, err)
	}
	s.Close()
	if n := bucketLen(t, dir, "bodies"); n != 0 {
		t.Errorf("%d shared bodies left after deleting every new message", n)
	}
}

// TestOpen_RefusesANewerSchemaNamingBoth: the error says which versions
// this minimail reads.
func TestOpen_RefusesANewerSchemaNamingBoth(t *testing.T) {
	dir := t.TempDir()
	boltFile(t, filepath.Join(dir, store.FileName), nil, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("schema"), []byte("8"))
	})
	_, err := store.Open(dir, testOptions)
	if err == nil || !strings.Contains(err.Error(), `unknown schema version "8"`) || !strings.Contains(err.Error(), `reads "1" to "7"`) {
		t.Errorf("Open of schema 8 = %v", err)
	}
}
