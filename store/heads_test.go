package store

import (
	"bytes"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// openWithUsers opens a store of its own for the test, with these users.
func openWithUsers(t *testing.T, addrs ...string) *Store {
	t.Helper()
	s := openInternal(t, Options{NoOnlineCompaction: true})
	for _, a := range addrs {
		if err := s.AddUser(a, "password-12345"); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// headsOf reads where the file keeps the head of copy id in addr's mailbox,
// whose body is bodyID: in the body's bucket (under either key), in the
// mailbox's head bucket (nil when absent).
func headsOf(t *testing.T, s *Store, addr string, id, bodyID uint64) (inBody, inMailbox []byte) {
	t.Helper()
	s.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketBodies).Bucket(idKey(bodyID)); b != nil {
			if v := b.Get(bodyHeadKey); v != nil {
				inBody = append([]byte(nil), v...)
			}
			if v := b.Get(copyHeadKey(id)); v != nil {
				inBody = append(inBody, v...)
			}
		}
		mb := tx.Bucket(bucketMailboxes).Bucket([]byte(Key(addr)))
		if heads := mb.Bucket(bucketHead); heads != nil {
			if v := heads.Get(idKey(id)); v != nil {
				inMailbox = append([]byte(nil), v...)
			}
		}
		return nil
	})
	return inBody, inMailbox
}

// A body stored for one copy keeps that copy's head in its own bucket (no
// pages of the mailbox's head tree in the delivery's commit), and so do
// copies sharing a small body; copies sharing a big one keep theirs in
// their mailboxes' head buckets. Every copy reads back as its own head and
// the body, before and after the others are deleted, and nothing is left
// once all are.
func TestHeads_OneCopyKeepsItsHeadWithItsBody(t *testing.T) {
	const a, b = "a@example.test", "b@example.test"
	s := openWithUsers(t, a, b)
	body := []byte("Subject: x\r\n\r\nbody\r\n")
	lone, err := s.AppendMany([]Delivery{{Address: a, Header: []byte("Delivered-To: a (lone)\r\n"), Message: body}})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := s.AppendMany([]Delivery{
		{Address: a, Header: []byte("Delivered-To: a\r\n"), Message: body},
		{Address: b, Header: []byte("Delivered-To: b\r\n"), Message: body},
	})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := s.AppendMany([]Delivery{{Address: b, Message: body}})
	if err != nil {
		t.Fatal(err)
	}
	big := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("x"), maxHeadsWithBody)...)
	bigShared, err := s.AppendMany([]Delivery{
		{Address: a, Header: []byte("Delivered-To: a (big)\r\n"), Message: big},
		{Address: b, Header: []byte("Delivered-To: b (big)\r\n"), Message: big},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Body ids are handed out in order: 1 lone, 2 shared, 3 bare, 4 big.
	if inBody, inMailbox := headsOf(t, s, a, lone[0], 1); string(inBody) != "Delivered-To: a (lone)\r\n" || inMailbox != nil {
		t.Errorf("lone copy's head: in its body's bucket %q, in the mailbox %q; want it with the body only", inBody, inMailbox)
	}
	for i, u := range []string{a, b} {
		want := "Delivered-To: " + u[:1] + "\r\n"
		if inBody, inMailbox := headsOf(t, s, u, shared[i], 2); string(inBody) != want || inMailbox != nil {
			t.Errorf("shared copy in %s: head in the body's bucket %q, in the mailbox %q; want %q with the body only", u, inBody, inMailbox, want)
		}
		want = "Delivered-To: " + u[:1] + " (big)\r\n"
		if inBody, inMailbox := headsOf(t, s, u, bigShared[i], 4); inBody != nil || string(inMailbox) != want {
			t.Errorf("big shared copy in %s: head in the body's bucket %q, in the mailbox %q; want %q in the mailbox only", u, inBody, inMailbox, want)
		}
	}
	if inBody, inMailbox := headsOf(t, s, b, bare[0], 3); inBody != nil || inMailbox != nil {
		t.Errorf("copy without a head: %q in the body's bucket, %q in the mailbox", inBody, inMailbox)
	}

	read := func(addr string, id uint64, want string) {
		t.Helper()
		got, err := s.Read(addr, id)
		if err != nil || string(got) != want {
			t.Errorf("Read(%s, %d) = %q, %v; want %q", addr, id, got, err, want)
		}
	}
	read(a, lone[0], "Delivered-To: a (lone)\r\n"+string(body))
	read(a, shared[0], "Delivered-To: a\r\n"+string(body))
	read(b, shared[1], "Delivered-To: b\r\n"+string(body))
	read(b, bare[0], string(body))
	read(a, bigShared[0], "Delivered-To: a (big)\r\n"+string(big))
	read(b, bigShared[1], "Delivered-To: b (big)\r\n"+string(big))
	infos, err := s.List(a)
	if err != nil || len(infos) != 3 || infos[0].Size != int64(len("Delivered-To: a (lone)\r\n")+len(body)) {
		t.Errorf("List(a) = %+v, %v", infos, err)
	}

	if err := s.Delete(a, []uint64{lone[0], shared[0], bigShared[0]}); err != nil {
		t.Fatal(err)
	}
	if _, _, stored := bodyRefs(t, s, 1); stored {
		t.Error("lone copy's body (and head) left after the copy was deleted")
	}
	if inBody, inMailbox := headsOf(t, s, a, shared[0], 2); inBody != nil || inMailbox != nil {
		t.Errorf("deleted shared copy's head left: %q with the body, %q in its mailbox", inBody, inMailbox)
	}
	if _, inMailbox := headsOf(t, s, a, bigShared[0], 4); inMailbox != nil {
		t.Errorf("deleted big shared copy's head left in its mailbox: %q", inMailbox)
	}
	read(b, shared[1], "Delivered-To: b\r\n"+string(body))
	read(b, bigShared[1], "Delivered-To: b (big)\r\n"+string(big))
	if err := s.Delete(b, []uint64{shared[1], bare[0], bigShared[1]}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{2, 3, 4} {
		if _, _, stored := bodyRefs(t, s, id); stored {
			t.Errorf("body %d left after its last copy went", id)
		}
	}
	if _, inMailbox := headsOf(t, s, b, bigShared[1], 4); inMailbox != nil {
		t.Errorf("last big shared copy's head left in its mailbox: %q", inMailbox)
	}
	checkBolt(t, s)
}

// A schema 4 file keeps every head in the mailboxes' head buckets: opened
// by this code it is schema 5 without a rewrite, its copies read with
// their heads and delete as before, and new mail beside them takes the
// new layout.
func TestHeads_Schema4FileOpens(t *testing.T) {
	dir := t.TempDir()
	opts := Options{BcryptCost: 4, NoOnlineCompaction: true}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	const a = "a@example.test"
	if err := s.AddUser(a, "password-12345"); err != nil {
		t.Fatal(err)
	}
	head, body := []byte("Delivered-To: a\r\n"), []byte("Subject: x\r\n\r\nold\r\n")
	old, err := s.AppendMany([]Delivery{{Address: a, Header: head, Message: body}})
	if err != nil {
		t.Fatal(err)
	}
	// Make it what schema 4 wrote: the head in the mailbox's head bucket.
	s = asSchema(t, s, dir, opts, schemaV4, func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketBodies).Bucket(idKey(1)).Delete(bodyHeadKey); err != nil {
			return err
		}
		return tx.Bucket(bucketMailboxes).Bucket([]byte(a)).Bucket(bucketHead).Put(idKey(old[0]), head)
	})
	wantCurrentSchema(t, s)
	if got, err := s.Read(a, old[0]); err != nil || string(got) != string(head)+string(body) {
		t.Errorf("Read of a schema 4 copy = %q, %v", got, err)
	}
	fresh, err := s.AppendMany([]Delivery{{Address: a, Header: []byte("Delivered-To: new\r\n"), Message: body}})
	if err != nil {
		t.Fatal(err)
	}
	if inBody, _ := headsOf(t, s, a, fresh[0], 2); string(inBody) != "Delivered-To: new\r\n" {
		t.Errorf("new copy's head in its body's bucket = %q", inBody)
	}
	if err := s.Delete(a, old); err != nil {
		t.Fatalf("delete a schema 4 copy: %v", err)
	}
	if inBody, inMailbox := headsOf(t, s, a, old[0], 1); inBody != nil || inMailbox != nil {
		t.Errorf("schema 4 copy's head after its deletion: %q, %q", inBody, inMailbox)
	}
	if got, err := s.Read(a, fresh[0]); err != nil || string(got) != "Delivered-To: new\r\n"+string(body) {
		t.Errorf("Read of the new copy = %q, %v", got, err)
	}
	checkBolt(t, s)
}

// Deleting a user takes its copies' heads out of the bodies it shared with
// other mailboxes, which keep theirs.
func TestHeads_DeleteUserTakesItsHeadsFromSharedBodies(t *testing.T) {
	const a, b = "a@example.test", "b@example.test"
	s := openWithUsers(t, a, b)
	body := []byte("Subject: x\r\n\r\nbody\r\n")
	ids, err := s.AppendMany([]Delivery{
		{Address: a, Header: []byte("Delivered-To: a\r\n"), Message: body},
		{Address: b, Header: []byte("Delivered-To: b\r\n"), Message: body},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(a); err != nil {
		t.Fatal(err)
	}
	s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketBodies).Bucket(idKey(1)).Get(copyHeadKey(ids[0])); v != nil {
			t.Errorf("deleted user's head left in the shared body: %q", v)
		}
		return nil
	})
	if got, err := s.Read(b, ids[1]); err != nil || string(got) != "Delivered-To: b\r\n"+string(body) {
		t.Errorf("Read(b) = %q, %v", got, err)
	}
	checkBolt(t, s)
}

// Deleting one copy of a big shared body, whose heads are in the mailboxes,
// leaves the body's pages alone: its bucket keeps the root page it had, so
// the commit did not copy the body anew.
func TestHeads_DeletingACopyOfABigSharedBodyKeepsTheBodyUnwritten(t *testing.T) {
	const a, b = "a@example.test", "b@example.test"
	s := openWithUsers(t, a, b)
	big := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("x"), maxHeadsWithBody)...)
	ids, err := s.AppendMany([]Delivery{
		{Address: a, Header: []byte("Delivered-To: a\r\n"), Message: big},
		{Address: b, Header: []byte("Delivered-To: b\r\n"), Message: big},
	})
	if err != nil {
		t.Fatal(err)
	}
	root := func() (pgid uint64) {
		s.view(func(tx *bolt.Tx) error {
			pgid = uint64(tx.Bucket(bucketBodies).Bucket(idKey(1)).Root())
			return nil
		})
		return pgid
	}
	before := root()
	if err := s.Delete(a, ids[:1]); err != nil {
		t.Fatal(err)
	}
	if after := root(); after != before {
		t.Errorf("deleting one copy moved the body's bucket from page %d to %d: the body was written again", before, after)
	}
	if got, err := s.Read(b, ids[1]); err != nil || string(got) != "Delivered-To: b\r\n"+string(big) {
		t.Errorf("Read(b) after a's copy went: %d octets, %v", len(got), err)
	}
}

// Copies sharing a small body write their heads into its bucket in one go,
// and nothing is added there later (deleting copies only takes heads out):
// its leaves are filled whole, not split in half as bbolt does for keys
// that may keep coming, so a delivery to many mailboxes writes fewer
// pages.
func TestHeads_SharedBodyBucketIsWrittenInFullPages(t *testing.T) {
	const copies = 64
	addrs := make([]string, copies)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("user%02d@example.test", i)
	}
	s := openWithUsers(t, addrs...)
	body := []byte("Subject: to all\r\n\r\nhello\r\n")
	ds := make([]Delivery, copies)
	for i, a := range addrs {
		head := fmt.Sprintf("Delivered-To: %s\r\nReceived: from mx.example.test by mx.example.test with ESMTP id %02d\r\n", a, i)
		ds[i] = Delivery{Address: a, Header: []byte(head), Message: body}
	}
	ids, err := s.AppendMany(ds)
	if err != nil {
		t.Fatal(err)
	}
	var st bolt.BucketStats
	s.view(func(tx *bolt.Tx) error {
		st = tx.Bucket(bucketBodies).Bucket(idKey(1)).Stats()
		return nil
	})
	full := (st.LeafInuse + s.pageSize - 1) / s.pageSize
	if st.LeafPageN > full || full < 2 {
		t.Errorf("the shared body's bucket takes %d leaf pages for %d octets in use (%d pages full): written half full",
			st.LeafPageN, st.LeafInuse, full)
	}
	if got, err := s.Read(addrs[copies-1], ids[copies-1]); err != nil || !bytes.HasSuffix(got, body) {
		t.Errorf("Read = %q, %v", got, err)
	}
}
