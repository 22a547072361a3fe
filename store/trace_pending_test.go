package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// eventsInFile counts the trace events the file holds (not those waiting).
func eventsInFile(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	if err := s.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketTrace).Bucket(bucketTraceEvents).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// traceStore is a store with user a@example.org whose trace events wait
// for the delays given.
func traceStore(t *testing.T, delay, alone time.Duration) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{BcryptCost: 4, traceDelay: delay, traceAlone: alone, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.AddUser("a@example.org", "password1"); err != nil {
		t.Fatal(err)
	}
	return s
}

func traced(id string) Delivery {
	return Delivery{Address: "a@example.org", Message: []byte("Subject: x\r\n\r\nx\r\n"), TraceID: id,
		Events: []Event{{Time: time.Now(), Kind: EventReceived, ID: id}}}
}

// A delivery's events wait in memory: its commit does not write them, and
// a reader of the trace still finds them (it has them written first).
func TestTracePending_EventsWaitAndReadersStillFindThem(t *testing.T) {
	s := traceStore(t, time.Hour, time.Hour)
	if _, err := s.AppendMany([]Delivery{traced("m1")}); err != nil {
		t.Fatal(err)
	}
	if n := eventsInFile(t, s); n != 0 {
		t.Fatalf("the delivery's commit wrote %d events; want them waiting", n)
	}
	commits := s.Commits()
	evs, err := s.Trace("m1")
	if err != nil || len(evs) != 2 || evs[0].Kind != EventReceived || evs[1].Kind != EventDelivered {
		t.Fatalf("Trace(m1) = %v, %v; want received, delivered", evs, err)
	}
	if n := eventsInFile(t, s); n != 2 {
		t.Fatalf("after Trace the file holds %d events; want 2", n)
	}
	// Nothing waiting: the next reader costs no commit.
	if _, err := s.TraceCount(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := s.Commits() - commits; got != 1 {
		t.Errorf("Trace and TraceCount made %d commits; want 1 (Trace's)", got)
	}
}

// Once the oldest waited traceDelay, the next commit writes them all with
// its own, in order.
func TestTracePending_TheFirstCommitAfterTheDelayWritesThem(t *testing.T) {
	s := traceStore(t, 20*time.Millisecond, time.Hour)
	if _, err := s.AppendMany([]Delivery{traced("m1")}); err != nil {
		t.Fatal(err)
	}
	if n := eventsInFile(t, s); n != 0 {
		t.Fatalf("the first commit wrote %d events; want them waiting", n)
	}
	time.Sleep(30 * time.Millisecond)
	if _, err := s.AppendMany([]Delivery{traced("m2")}); err != nil {
		t.Fatal(err)
	}
	if n := eventsInFile(t, s); n != 4 {
		t.Fatalf("the commit after the delay left the file with %d events; want 4", n)
	}
	var kinds []string
	if err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTrace).Bucket(bucketTraceEvents).ForEach(func(_, v []byte) error {
			e, err := decodeEvent(v)
			kinds = append(kinds, e.Kind+":"+e.ID)
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"received:m1", "delivered:m1", "received:m2", "delivered:m2"}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("events in the file: %v; want %v", kinds, want)
		}
	}
}

// With no write to carry them, a timer writes them on their own.
func TestTracePending_WrittenAloneWhenNoWriteComes(t *testing.T) {
	s := traceStore(t, time.Hour, 10*time.Millisecond)
	// Counted from before the delivery: the timer may fire before
	// AppendMany's caller runs again.
	commits := s.Commits()
	if _, err := s.AppendMany([]Delivery{traced("m1")}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); eventsInFile(t, s) != 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the events waited 10 s with no write to carry them; want them written on their own")
		}
	}
	if got := s.Commits() - commits; got != 2 {
		t.Errorf("the delivery and writing its events took %d commits; want 2 (its own and one for them)", got)
	}
}

// Close writes them: the next open finds them in the file.
func TestTracePending_CloseWritesThem(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{BcryptCost: 4, traceDelay: time.Hour, traceAlone: time.Hour, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser("a@example.org", "password1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendMany([]Delivery{traced("m1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{BcryptCost: 4, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := eventsInFile(t, s); n != 2 {
		t.Fatalf("after Close and Open the file holds %d events; want 2", n)
	}
}

// Events recorded by a write that is refused describe nothing: they go
// with its rolled-back transaction, while those of the writes before it
// stay.
func TestTracePending_ARefusedWritesEventsGo(t *testing.T) {
	s := traceStore(t, time.Hour, time.Hour)
	if _, err := s.AppendMany([]Delivery{traced("kept")}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuota("a@example.org", 40); err != nil {
		t.Fatal(err)
	}
	// The first copy fits and records its events, the second does not.
	_, err := s.AppendMany([]Delivery{traced("gone"), traced("gone")})
	if !errors.Is(err, ErrOverQuota) {
		t.Fatalf("AppendMany over quota: %v; want ErrOverQuota", err)
	}
	if evs, err := s.Trace("gone"); !errors.Is(err, ErrNoTrace) {
		t.Errorf("Trace(gone) = %v, %v; want ErrNoTrace", evs, err)
	}
	if evs, err := s.Trace("kept"); err != nil || len(evs) != 2 {
		t.Errorf("Trace(kept) = %v, %v; want its 2 events", evs, err)
	}
}

// Many events waiting are written by the next commit, whatever the delay.
func TestTracePending_ManyAreWrittenAtOnce(t *testing.T) {
	s := traceStore(t, time.Hour, time.Hour)
	ds := make([]Delivery, maxPendingEvents/2)
	for i := range ds {
		ds[i] = traced("m")
	}
	if _, err := s.AppendMany(ds); err != nil {
		t.Fatal(err)
	}
	if n := eventsInFile(t, s); n != maxPendingEvents {
		t.Fatalf("a commit of %d events left %d in the file; want all of them", maxPendingEvents, n)
	}
}

// A backup holds the events waiting when it was taken.
func TestTracePending_BackupHoldsThem(t *testing.T) {
	s := traceStore(t, time.Hour, time.Hour)
	if _, err := s.AppendMany([]Delivery{traced("m1")}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := s.Backup(filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir, Options{BcryptCost: 4, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if n := eventsInFile(t, b); n != 2 {
		t.Fatalf("the backup holds %d events; want 2", n)
	}
}
