package store

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"
)

func openQueueStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestQueueEntrySurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := openQueueStore(t, dir)
	created := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	e := QueueEntry{
		From:        "bob@a.test",
		Rcpts:       []QueueRcpt{{Addr: "x@b.test", State: RcptPending}, {Addr: "y@c.test", State: RcptPending}},
		Created:     created,
		NextAttempt: created,
	}
	body := []byte("Subject: hi\r\n\r\nbody\r\n")
	id, err := s.EnqueueMessage(e, body)
	if err != nil {
		t.Fatal(err)
	}
	if id == 0 {
		t.Fatal("id 0 handed out")
	}
	got, err := s.QueueEntry(id)
	if err != nil {
		t.Fatal(err)
	}
	got.Rcpts[0].State = RcptSent
	got.Rcpts[1].LastError = "451 try later"
	got.Attempts = 1
	if err := s.UpdateQueueEntry(got); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openQueueStore(t, dir)
	defer s.Close()
	all, err := s.QueueEntries()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].ID != id || all[0].Rcpts[0].State != RcptSent ||
		all[0].Rcpts[1].LastError != "451 try later" || all[0].Attempts != 1 || !all[0].Created.Equal(created) {
		t.Fatalf("after reopen: %+v", all)
	}
	b, err := s.QueueBody(id)
	if err != nil || !bytes.Equal(b, body) {
		t.Fatalf("body = %q, %v", b, err)
	}
	if err := s.DeleteQueueEntry(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.QueueBody(id); !errors.Is(err, ErrNoQueueEntry) {
		t.Fatalf("body after delete: %v", err)
	}
	if all, _ := s.QueueEntries(); len(all) != 0 {
		t.Fatalf("entries after delete: %+v", all)
	}
}

func TestQueueMissingEntry(t *testing.T) {
	s := openQueueStore(t, t.TempDir())
	defer s.Close()
	tests := []struct {
		name string
		op   func() error
	}{
		{"update does not recreate", func() error { return s.UpdateQueueEntry(QueueEntry{ID: 42}) }},
		{"delete", func() error { return s.DeleteQueueEntry(42) }},
		{"body", func() error { _, err := s.QueueBody(42); return err }},
		{"entry", func() error { _, err := s.QueueEntry(42); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, ErrNoQueueEntry) {
				t.Fatalf("err = %v, want ErrNoQueueEntry", err)
			}
		})
	}
	if all, _ := s.QueueEntries(); len(all) != 0 {
		t.Fatalf("update of a missing entry created %+v", all)
	}
}

func TestQueueConcurrentEnqueueGetsDistinctIDs(t *testing.T) {
	s := openQueueStore(t, t.TempDir())
	defer s.Close()
	const n = 64
	ids := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := s.EnqueueMessage(QueueEntry{From: "a@b.test", Rcpts: []QueueRcpt{{Addr: "c@d.test", State: RcptPending}}}, []byte{byte(i)})
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for i, id := range ids {
		if seen[id] {
			t.Fatalf("id %d handed out twice", id)
		}
		seen[id] = true
		b, err := s.QueueBody(id)
		if err != nil || len(b) != 1 || b[0] != byte(i) {
			t.Fatalf("body of %d = %v, %v", id, b, err)
		}
	}
}
