package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func remoteDomain(addr string) bool { return !strings.HasSuffix(addr, "@d.test") }

func TestAliases_RemoteTargets(t *testing.T) {
	s := aliasStore(t, "alice@d.test", "bob@d.test")
	if _, err := s.AddAliasRemote("fwd@d.test", []string{"x@remote.test"}, remoteDomain); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddAliasRemote("team@d.test", []string{"alice@d.test", "Y@Remote.test", "fwd@d.test", "bob@d.test"}, remoteDomain); err != nil {
		t.Fatal(err)
	}
	// Another alias reaching x@remote.test and a remote-only alias: each
	// address once.
	if _, err := s.AddAliasRemote("all@d.test", []string{"team@d.test", "x@remote.test"}, remoteDomain); err != nil {
		t.Fatal(err)
	}
	x, err := s.Expand("all@d.test")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(x.Mailboxes, []string{"alice@d.test", "bob@d.test"}) || !reflect.DeepEqual(x.Remote, []string{"Y@remote.test", "x@remote.test"}) {
		t.Fatalf("Expand = %+v", x)
	}
	if boxes, _ := s.ExpandAlias("fwd@d.test"); len(boxes) != 0 {
		t.Fatalf("ExpandAlias of a remote-only alias = %v, want no mailboxes", boxes)
	}
	// Without remote, a remote-looking target must exist.
	if _, err := s.AddAlias("nope@d.test", []string{"z@remote.test"}); !errors.Is(err, ErrNoTarget) {
		t.Fatalf("AddAlias remote target without remote: %v", err)
	}
	// A loop through a local target is still refused.
	if err := s.DeleteAlias("all@d.test"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAlias("team@d.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddAliasRemote("a@d.test", []string{"fwd@d.test", "q@remote.test"}, remoteDomain); err != nil {
		t.Fatal(err)
	}
	list, _ := s.Aliases()
	for _, a := range list {
		if a.Address == "a@d.test" && !reflect.DeepEqual(a.Remote, []string{"q@remote.test"}) {
			t.Fatalf("Aliases: %+v", a)
		}
	}
}

func TestSRSSecret_DrawnOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.SRSSecret()
	if err != nil || len(first) != srsSecretBytes {
		t.Fatalf("SRSSecret = %x, %v", first, err)
	}
	backup := filepath.Join(t.TempDir(), "b.db")
	if err := s.Backup(backup); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := s.SRSSecret()
	s.Close()
	if !bytes.Equal(first, again) {
		t.Fatal("the secret changed on reopen")
	}
	restored := filepath.Dir(backup)
	if err := os.Rename(backup, filepath.Join(restored, FileName)); err != nil {
		t.Fatal(err)
	}
	r, err := Open(restored, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, _ := r.SRSSecret(); !bytes.Equal(got, first) {
		t.Fatal("a restored backup has another secret")
	}
}

func TestAppendAndEnqueue_AllOrNothing(t *testing.T) {
	s := aliasStore(t, "alice@d.test")
	body := []byte("Subject: x\r\n\r\nhi\r\n")
	entry := QueueEntry{MsgID: "m1", From: "SRS0=x", Rcpts: []QueueRcpt{{Addr: "x@remote.test", State: RcptPending}}}
	ids, entries, err := s.AppendAndEnqueue([]Delivery{{Address: "alice@d.test", Message: body}}, []Outgoing{{Entry: entry, Body: body}})
	if err != nil || len(ids) != 1 || len(entries) != 1 || entries[0].ID == 0 {
		t.Fatalf("AppendAndEnqueue = %v, %+v, %v", ids, entries, err)
	}
	if got, _ := s.QueueBody(entries[0].ID); !bytes.Equal(got, body) {
		t.Fatalf("queued body = %q", got)
	}
	// A copy that fails (no such user) takes the queue entry with it.
	_, _, err = s.AppendAndEnqueue([]Delivery{{Address: "gone@d.test", Message: body}}, []Outgoing{{Entry: entry, Body: body}})
	if !errors.Is(err, ErrNoUser) {
		t.Fatalf("with a missing user: %v", err)
	}
	if q, _ := s.QueueEntries(); len(q) != 1 {
		t.Fatalf("queue after a failed commit holds %d entries, want 1", len(q))
	}
}

// TestSRSSecret_AddedToAFileWithout: a database written before the SRS
// secret existed (same schema) gets one at its first read-write open.
func TestSRSSecret_AddedToAFileWithout(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keySRSSecret) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.SRSSecret(); err != nil || len(got) != srsSecretBytes {
		t.Fatalf("SRSSecret after open = %x, %v", got, err)
	}
}
