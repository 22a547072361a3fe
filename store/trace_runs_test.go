package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// traceMessage is the events of one message received for rcpt and
// delivered to its mailbox as copy n.
func traceMessage(at time.Time, id, rcpt string, n int) []Event {
	return []Event{
		{Time: at, Kind: EventReceived, ID: id, Facts: []Fact{{FactRcpt, rcpt}, {FactMessageID, "<" + id + "@x.test>"}}},
		{Time: at, Kind: EventDelivered, ID: id, Facts: []Fact{{FactMailbox, rcpt}, {FactMsg, fmt.Sprint(n)}}},
	}
}

// runsOf lists the runs of s's trace index: each one's first event and
// the keys put in it.
func runsOf(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	s.view(func(tx *bolt.Tx) error {
		runs := tx.Bucket(bucketTrace).Bucket(bucketTraceRuns)
		return runs.ForEach(func(k, _ []byte) error {
			out = append(out, fmt.Sprintf("%d:%d", keyID(k), runs.Bucket(k).Sequence()))
			return nil
		})
	})
	return out
}

// indexKeyCount counts the keys of s's trace index, flat and in runs.
func indexKeyCount(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	s.view(func(tx *bolt.Tx) error {
		for _, run := range indexRuns(tx.Bucket(bucketTrace)) {
			n += run.Stats().KeyN
		}
		return nil
	})
	return n
}

func recordAll(t *testing.T, s *Store, events []Event) {
	t.Helper()
	for len(events) > 0 {
		n := min(len(events), 1000)
		if err := s.RecordEvents(events[:n]); err != nil {
			t.Fatal(err)
		}
		events = events[n:]
	}
}

func traceKinds(t *testing.T, s *Store, query string) string {
	t.Helper()
	evs, err := s.Trace(query)
	if err != nil {
		return err.Error()
	}
	var k []string
	for _, e := range evs {
		k = append(k, e.Kind+":"+e.ID)
	}
	return strings.Join(k, " ")
}

// Three passes of 3,000 messages (15,000 keys each: id, Message-ID and
// recipient of the received event, id and mailbox copy of the delivered):
// the first two share a run, the third has no room there and starts one.
// Lookups find a message whose events the passes split, and a recipient's
// last messages across both runs and the events not indexed yet, in
// order, also in the copy an online compaction swapped in; pruning takes
// exactly the keys of what it prunes and drops the run it empties.
func TestTraceRuns_APassStartsARunWhenTheNewestIsFull(t *testing.T) {
	s := openInternal(t, Options{NoOnlineCompaction: true})
	old, now := time.Now().Add(-48*time.Hour), time.Now()
	const perPass = 3000
	var events []Event
	for i := range 3 * perPass {
		at, rcpt := old, fmt.Sprintf("r%d@x.test", i%50)
		if i >= 2*perPass {
			at = now
		}
		if i%perPass == perPass-1 {
			rcpt = "last@x.test"
		}
		events = append(events, traceMessage(at, fmt.Sprintf("m%d", i), rcpt, i)...)
	}
	recordAll(t, s, events)
	// The second pass ends between the two events of m5999. An online
	// compaction copies the runs the first two made; the third's comes
	// with its catch-up.
	var job *copyJob
	for i, limit := range []int{2 * perPass, 2*perPass - 1, 2*perPass + 1} {
		if i == 2 {
			var err error
			if job, _, err = s.startCopy(); err != nil {
				t.Fatal(err)
			}
			<-job.done
		}
		if n, err := s.IndexTrace(limit); err != nil || n != limit {
			t.Fatalf("IndexTrace(%d) = %d, %v", limit, n, err)
		}
	}
	if res, err := s.finishCopy(job); err != nil || !res.Compacted {
		t.Fatalf("compaction %+v: %v", res, err)
	}
	if got, want := runsOf(t, s), []string{"1:29998", "12000:15002"}; !slices.Equal(got, want) {
		t.Fatalf("runs = %v, want %v", got, want)
	}
	if got := traceKinds(t, s, "m5999"); got != "received:m5999 delivered:m5999" {
		t.Errorf("the message the passes split: %s", got)
	}
	// Not indexed yet: the lookups read the events past the index.
	recordAll(t, s, traceMessage(now, "tail", "last@x.test", 1<<20))
	if got, want := traceKinds(t, s, "last@x.test"), "received:m2999 delivered:m2999 received:m5999 delivered:m5999 received:m8999 delivered:m8999 received:tail delivered:tail"; got != want {
		t.Errorf("Trace(recipient) = %s\nwant %s", got, want)
	}
	if got := traceKinds(t, s, "<M4321@x.test>"); got != "received:m4321 delivered:m4321" {
		t.Errorf("Trace(Message-ID) = %s", got)
	}
	s.view(func(tx *bolt.Tx) error {
		if ids := mailboxTraceIDs(tx, "r21@x.test", []uint64{21, 8971}); ids[21] != "m21" || ids[8971] != "m8971" {
			t.Errorf("mailbox copies' ids = %v", ids)
		}
		return nil
	})

	keys := indexKeyCount(t, s)
	for pruned := 0; ; {
		n, err := s.PruneTrace(now.Add(-time.Hour), 1000)
		if err != nil {
			t.Fatal(err)
		}
		if pruned += n; n == 0 {
			if pruned != 2*2*perPass {
				t.Fatalf("pruned %d events, want %d", pruned, 2*2*perPass)
			}
			break
		}
	}
	if got, want := indexKeyCount(t, s), keys-2*perPass*5; got != want {
		t.Errorf("%d index keys after pruning, want %d", got, want)
	}
	if got, want := runsOf(t, s), []string{"12000:15002"}; !slices.Equal(got, want) {
		t.Errorf("runs after pruning = %v, want %v (the emptied run dropped)", got, want)
	}
	if _, err := s.Trace("m17"); !errors.Is(err, ErrNoTrace) {
		t.Errorf("a pruned message is still found: %v", err)
	}
	if got := traceKinds(t, s, "m8000"); got != "received:m8000 delivered:m8000" {
		t.Errorf("a message kept: %s", got)
	}
}

// A schema 6 file's index is flat: its events are found, pruned from it,
// and new ones go into runs after it.
func TestTraceRuns_SchemaSixFlatIndexIsReadAndPruned(t *testing.T) {
	dir := t.TempDir()
	opts := Options{NoOnlineCompaction: true}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	old, now := time.Now().Add(-48*time.Hour), time.Now()
	recordAll(t, s, append(traceMessage(old, "a1", "alice@x.test", 1), traceMessage(old, "a2", "alice@x.test", 2)...))
	if _, err := s.IndexTrace(100); err != nil {
		t.Fatal(err)
	}
	s = asSchema(t, s, dir, opts, schemaV6, func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketTrace)
		flat, runs := root.Bucket(bucketTraceIndex), root.Bucket(bucketTraceRuns)
		err := runs.ForEach(func(name, _ []byte) error {
			return runs.Bucket(name).ForEach(func(k, v []byte) error { return flat.Put(k, v) })
		})
		if err != nil {
			return err
		}
		return root.DeleteBucket(bucketTraceRuns)
	})
	recordAll(t, s, traceMessage(now, "a3", "alice@x.test", 3))
	if _, err := s.IndexTrace(100); err != nil {
		t.Fatal(err)
	}
	if got, want := runsOf(t, s), []string{"5:5"}; !slices.Equal(got, want) {
		t.Fatalf("runs = %v, want %v", got, want)
	}
	if got, want := traceKinds(t, s, "alice@x.test"), "received:a1 delivered:a1 received:a2 delivered:a2 received:a3 delivered:a3"; got != want {
		t.Errorf("Trace(recipient) = %s\nwant %s", got, want)
	}
	if n, err := s.PruneTrace(now.Add(-time.Hour), 100); err != nil || n != 4 {
		t.Fatalf("PruneTrace = %d, %v", n, err)
	}
	s.view(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketTrace).Bucket(bucketTraceIndex).Cursor().First(); k != nil {
			t.Errorf("the flat index still holds %q", k)
		}
		return nil
	})
	if got := traceKinds(t, s, "alice@x.test"); got != "received:a3 delivered:a3" {
		t.Errorf("after pruning: %s", got)
	}
}

// A pass of indexGiveBackEvents events or more gives its garbage back to
// the system at once; a small domain's passes of a few events do not.
func TestIndexTrace_ABigPassGivesItsGarbageBack(t *testing.T) {
	gave := 0
	s := openInternal(t, Options{NoOnlineCompaction: true, giveBack: func() { gave++ }})
	recordAll(t, s, traceMessage(time.Now(), "small", "a@x.test", 1))
	if n, err := s.IndexTrace(indexGiveBackEvents); err != nil || n != 2 || gave != 0 {
		t.Fatalf("a pass of %d events (%v): gave back %d times, want 0", n, err, gave)
	}
	var events []Event
	for i := range indexGiveBackEvents / 2 {
		events = append(events, traceMessage(time.Now(), fmt.Sprintf("m%d", i), "a@x.test", 2+i)...)
	}
	recordAll(t, s, events)
	if n, err := s.IndexTrace(indexGiveBackEvents); err != nil || n != indexGiveBackEvents || gave != 1 {
		t.Fatalf("a pass of %d events (%v): gave back %d times, want 1", n, err, gave)
	}
}
