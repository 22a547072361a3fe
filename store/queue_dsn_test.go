package store

import (
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestQueueEntry_OldRecordWithoutDSNFieldsDecodes: an entry written before
// the RFC 3461 fields existed reads with them empty (NOTIFY absent).
func TestQueueEntry_OldRecordWithoutDSNFieldsDecodes(t *testing.T) {
	s := openQueueStore(t, t.TempDir())
	defer s.Close()
	old := `{"id":7,"msg_id":"abc","from":"bob@a.test","rcpts":[{"addr":"x@b.test","state":"pending"}],"created":"2024-05-01T12:00:00Z","next_attempt":"2024-05-01T12:00:00Z"}`
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueue).Put(idKey(7), []byte(old))
	}); err != nil {
		t.Fatal(err)
	}
	e, err := s.QueueEntry(7)
	if err != nil {
		t.Fatal(err)
	}
	r := e.Rcpts[0]
	if r.Notify != nil || r.ORcpt != "" || r.ORcptType != "" || r.SuccessAction != "" || e.Ret != "" || e.EnvID != "" || e.Notice {
		t.Fatalf("old entry decoded with DSN fields set: %+v", e)
	}
}

// TestEnqueueNotice_OneTransaction: the notice and the update of the
// entry it reports on land together, and neither lands when the entry is
// gone.
func TestEnqueueNotice_OneTransaction(t *testing.T) {
	s := openQueueStore(t, t.TempDir())
	defer s.Close()
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	e := QueueEntry{From: "bob@a.test", Rcpts: []QueueRcpt{{Addr: "x@b.test", State: RcptSent, Notify: []string{"SUCCESS"}, SuccessAction: "relayed"}}, Created: now, NextAttempt: now, EnvID: "QQ314"}
	id, err := s.EnqueueMessage(e, []byte("Subject: x\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.ID = id
	e.Rcpts[0].Notified = true
	n := QueueEntry{From: "", Rcpts: []QueueRcpt{{Addr: "bob@a.test", State: RcptPending}}, Created: now, NextAttempt: now, Notice: true}
	nid, err := s.EnqueueNotice(e, n, []byte("Subject: dsn\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.QueueEntry(id)
	if err != nil || !got.Rcpts[0].Notified || got.EnvID != "QQ314" {
		t.Fatalf("reported entry after EnqueueNotice: %+v, %v", got, err)
	}
	notice, err := s.QueueEntry(nid)
	if err != nil || !notice.Notice || notice.Rcpts[0].Addr != "bob@a.test" {
		t.Fatalf("notice entry: %+v, %v", notice, err)
	}
	if b, err := s.QueueBody(nid); err != nil || string(b) != "Subject: dsn\r\n\r\nx\r\n" {
		t.Fatalf("notice body %q, %v", b, err)
	}

	if err := s.DeleteQueueEntry(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EnqueueNotice(e, n, []byte("x")); !errors.Is(err, ErrNoQueueEntry) {
		t.Fatalf("EnqueueNotice for a dropped entry = %v, want ErrNoQueueEntry", err)
	}
	if all, _ := s.QueueEntries(); len(all) != 1 {
		t.Fatalf("queue holds %d entries, want only the first notice", len(all))
	}
}
