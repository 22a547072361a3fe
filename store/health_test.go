package store

import (
	"errors"
	"testing"
	"time"
)

func TestQueueLenCountsEntries(t *testing.T) {
	s := openQueueStore(t, t.TempDir())
	defer s.Close()
	for want := 0; want < 3; want++ {
		n, err := s.QueueLen()
		if err != nil || n != want {
			t.Fatalf("QueueLen = %d, %v; want %d", n, err, want)
		}
		e := QueueEntry{From: "a@b.test", Rcpts: []QueueRcpt{{Addr: "c@d.test", State: RcptPending}}, Created: time.Now()}
		if _, err := s.EnqueueMessage(e, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWritable_RefusedRequestIsNoDiskFailure(t *testing.T) {
	s := openQueueStore(t, t.TempDir())
	if err := s.Writable(); err != nil {
		t.Fatalf("fresh store: %v", err)
	}
	// A request the store refuses for what it asks rolls back its commit,
	// but says nothing about the disk.
	if err := s.DeleteQueueEntry(12345); !errors.Is(err, ErrNoQueueEntry) {
		t.Fatalf("DeleteQueueEntry = %v", err)
	}
	if err := s.Writable(); err != nil {
		t.Fatalf("after a refused request: %v", err)
	}
	// A failed commit (as a full disk gives) is reported until one succeeds.
	failed := errors.New("write /data/minimail.db: no space left on device")
	s.commitErr.Store(&failed)
	if err := s.Writable(); !errors.Is(err, failed) {
		t.Fatalf("after a failed commit: %v", err)
	}
	if _, err := s.EnqueueMessage(QueueEntry{Rcpts: []QueueRcpt{{Addr: "c@d.test"}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Writable(); err != nil {
		t.Fatalf("after a good commit: %v", err)
	}
	s.Close()
	if err := s.Writable(); err == nil {
		t.Fatal("closed store reported writable")
	}
}
