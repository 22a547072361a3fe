package store_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"minimail/store"
)

func kinds(evs []store.Event) string {
	var k []string
	for _, e := range evs {
		k = append(k, e.Kind+":"+e.ID)
	}
	return strings.Join(k, " ")
}

func TestTraceFindsByIDMessageIDAndRecipient(t *testing.T) {
	const alice = "alice@example.org"
	s := storeWithUsers(t, alice)
	now := time.Now().UTC()
	received := store.Event{Time: now, Kind: store.EventReceived, ID: "m1", Facts: []store.Fact{
		{Key: store.FactRcpt, Value: "Alice@Example.org"}, {Key: store.FactRcpt, Value: "bob@remote.test"},
		{Key: store.FactMessageID, Value: "<Hello@Example.org>"}}}
	if _, err := s.AppendMany([]store.Delivery{{Address: alice, Message: []byte("x\r\n"), Events: []store.Event{received}, TraceID: "m1"}}); err != nil {
		t.Fatal(err)
	}
	qid, err := s.EnqueueMessage(store.QueueEntry{MsgID: "m1", Events: []store.Event{{Time: now, Kind: store.EventQueued, ID: "m1"}}}, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := s.QueueEntry(qid)
	e.Events = []store.Event{{Time: now, Kind: store.EventSent, ID: "m1"}}
	if err := s.UpdateQueueEntry(e); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteQueueEntry(qid, store.Event{Time: now, Kind: store.EventBounced, ID: "m1"}); err != nil {
		t.Fatal(err)
	}
	want := "received:m1 delivered:m1 queued:m1 sent:m1 bounced:m1"
	// Before IndexTrace the events are found past the index, after it in
	// the index; after a later event, in both.
	for _, stage := range []string{"unindexed", "indexed", "both"} {
		switch stage {
		case "indexed":
			if n, err := s.IndexTrace(3); err != nil || n != 3 {
				t.Fatalf("IndexTrace(3) = %d, %v; want 3", n, err)
			}
		case "both":
			if n, err := s.IndexTrace(2); err != nil || n != 2 {
				t.Fatalf("IndexTrace(2) = %d, %v; want 2", n, err)
			}
			if err := s.RecordEvents([]store.Event{{Time: now, Kind: store.EventRetrieved, ID: "m1"}}); err != nil {
				t.Fatal(err)
			}
			want += " retrieved:m1"
		}
		for _, q := range []string{"m1", "<hello@example.org>", "Hello@Example.org", " ALICE@example.org ", "bob@remote.test"} {
			evs, err := s.Trace(q)
			if err != nil {
				t.Fatalf("%s: Trace(%q): %v", stage, q, err)
			}
			if got := kinds(evs); got != want {
				t.Errorf("%s: Trace(%q) = %s, want %s", stage, q, got, want)
			}
		}
	}
	if n, _ := s.IndexTrace(100); n != 1 {
		t.Errorf("IndexTrace after all but one: %d, want 1", n)
	}
	if n, _ := s.IndexTrace(100); n != 0 {
		t.Errorf("IndexTrace with nothing new: %d, want 0", n)
	}
	if _, err := s.Trace("nobody@example.org"); !errors.Is(err, store.ErrNoTrace) {
		t.Errorf("Trace(unknown) err = %v, want ErrNoTrace", err)
	}
	if _, err := s.Trace("m"); !errors.Is(err, store.ErrNoTrace) {
		t.Errorf("Trace(prefix of an id) err = %v, want ErrNoTrace", err)
	}
}

func TestTraceByRecipientShowsItsLastMessages(t *testing.T) {
	s := storeWithUsers(t)
	now := time.Now().UTC()
	for i := range store.TraceRecipientMessages + 5 {
		ev := store.Event{Time: now, Kind: store.EventQueued, ID: fmt.Sprintf("id%02d", i), Facts: []store.Fact{{Key: store.FactRcpt, Value: "r@x.test"}}}
		if err := s.RecordEvents([]store.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.Trace("r@x.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != store.TraceRecipientMessages || evs[0].ID != "id05" || evs[len(evs)-1].ID != "id24" {
		t.Fatalf("got %s, want id05..id24", kinds(evs))
	}
}

func TestUpdateMaildropRecordsRetrievedAndDeletedInOneCommit(t *testing.T) {
	const alice = "alice@example.org"
	s := storeWithUsers(t, alice)
	ids, err := s.AppendMany([]store.Delivery{
		{Address: alice, Message: []byte("a\r\n"), TraceID: "one"},
		{Address: alice, Message: []byte("b\r\n"), TraceID: "two"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The first copy's delivered event is indexed, the second's not yet:
	// both are found.
	if _, err := s.IndexTrace(1); err != nil {
		t.Fatal(err)
	}
	before := s.Commits()
	err = s.UpdateMaildrop(alice, store.MaildropUpdate{Retrieved: ids, Deleted: ids[:1], Facts: []store.Fact{{Key: "client", Value: "127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Commits() - before; n != 1 {
		t.Errorf("UpdateMaildrop made %d commits, want 1", n)
	}
	one, _ := s.Trace("one")
	two, _ := s.Trace("two")
	if got := kinds(one) + " | " + kinds(two); got != "delivered:one retrieved:one deleted:one | delivered:two retrieved:two" {
		t.Errorf("got %s", got)
	}
	if one[2].Get("client") != "127.0.0.1" || one[2].Get(store.FactMailbox) != alice {
		t.Errorf("deleted event facts %v", one[2].Facts)
	}
	if list, _ := s.List(alice); len(list) != 1 {
		t.Errorf("mailbox holds %d, want 1", len(list))
	}
}

func TestPruneTraceIsBoundedAndRemovesIndexes(t *testing.T) {
	s := storeWithUsers(t)
	old := time.Now().Add(-48 * time.Hour)
	var evs []store.Event
	for i := range 5 {
		evs = append(evs, store.Event{Time: old, Kind: store.EventQueued, ID: fmt.Sprintf("old%d", i),
			Facts: []store.Fact{{Key: store.FactRcpt, Value: "r@x.test"}, {Key: store.FactMessageID, Value: fmt.Sprintf("<%d@x>", i)}}})
	}
	evs = append(evs, store.Event{Time: time.Now(), Kind: store.EventQueued, ID: "new", Facts: []store.Fact{{Key: store.FactRcpt, Value: "r@x.test"}}})
	if err := s.RecordEvents(evs); err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now().Add(-time.Hour)
	if n, _ := s.PruneTrace(cutoff, 3); n != 0 {
		t.Fatalf("pruned %d events not indexed yet, want 0", n)
	}
	if _, err := s.IndexTrace(100); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneTrace(cutoff, 3); err != nil || n != 3 {
		t.Fatalf("first pass pruned %d (%v), want 3", n, err)
	}
	if n, err := s.PruneTrace(cutoff, 3); err != nil || n != 2 {
		t.Fatalf("second pass pruned %d (%v), want 2", n, err)
	}
	if n, _ := s.PruneTrace(cutoff, 3); n != 0 {
		t.Fatalf("third pass pruned %d, want 0", n)
	}
	got, err := s.Trace("r@x.test")
	if err != nil || kinds(got) != "queued:new" {
		t.Fatalf("after prune Trace(rcpt) = %s (%v), want queued:new", kinds(got), err)
	}
	if _, err := s.Trace("<0@x>"); !errors.Is(err, store.ErrNoTrace) {
		t.Errorf("pruned Message-ID still found: %v", err)
	}
}
