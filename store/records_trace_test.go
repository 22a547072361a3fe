package store

import (
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A schema 3 index entry carries the copy's trace id after schema 2's
// fields; schema 2 and schema 1 entries still decode, without one; an id
// too long for the entry is left out (the trace's own index still has it).
func TestIndexEntry_TraceID(t *testing.T) {
	k := idKey(5)
	base := indexEntry{size: 120, arrived: time.Unix(1700000000, 0).UTC(), epoch: 7, body: 3}
	for _, tc := range []struct {
		name    string
		traceID string
		wantLen int
		want    string
	}{
		{"none", "", indexEntryLen, ""},
		{"an id", "e162ccfa9d458f63", indexEntryLen + 16, "e162ccfa9d458f63"},
		{"longest", strings.Repeat("a", maxEntryTraceID), indexEntryLen + maxEntryTraceID, strings.Repeat("a", maxEntryTraceID)},
		{"too long", strings.Repeat("a", maxEntryTraceID+1), indexEntryLen, ""},
	} {
		e := base
		e.traceID = tc.traceID
		v := e.encode()
		if len(v) != tc.wantLen {
			t.Errorf("%s: %d bytes, want %d", tc.name, len(v), tc.wantLen)
		}
		got, err := decodeIndexEntry(k, v)
		if err != nil || got.traceID != tc.want || got.size != base.size || got.body != base.body || got.epoch != base.epoch {
			t.Errorf("%s: decoded %+v, %v", tc.name, got, err)
		}
	}
	if _, err := decodeIndexEntry(k, make([]byte, indexEntryLen+maxEntryTraceID+1)); err == nil {
		t.Error("an entry longer than any schema 3 entry decodes")
	}
}

// A schema 2 file opens as schema 3, and a POP3 session's retrieval of a
// copy stored before (no trace id in its entry) still finds the copy's
// message through the trace.
func TestOpen_Schema2BecomesSchema3(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser("a@example.org", "password1"); err != nil {
		t.Fatal(err)
	}
	ids, err := s.AppendMany([]Delivery{{Address: "a@example.org", Message: []byte("Subject: x\r\n\r\nx\r\n"), TraceID: "old1"}})
	if err != nil {
		t.Fatal(err)
	}
	// Make the file what schema 2 wrote: version 2, entries of 32 bytes.
	s = asSchema(t, s, dir, Options{BcryptCost: 4}, schemaV2, func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketMailboxes).Bucket([]byte(Key("a@example.org"))).Bucket(bucketIndex)
		v := idx.Get(idKey(ids[0]))
		return idx.Put(idKey(ids[0]), append([]byte(nil), v[:indexEntryLen]...))
	})
	wantCurrentSchema(t, s)
	if err := s.UpdateMaildrop("a@example.org", MaildropUpdate{Retrieved: ids}); err != nil {
		t.Fatal(err)
	}
	events, err := s.Trace("old1")
	if err != nil {
		t.Fatal(err)
	}
	if last := events[len(events)-1]; last.Kind != EventRetrieved {
		t.Errorf("the old copy's retrieval is not in its trace: %+v", events)
	}
}

// A schema 3 copy names its message itself: its retrieval is traced even
// when no delivered event is there to say which message it is.
func TestUpdateMaildrop_FindsTheMessageInTheCopysEntry(t *testing.T) {
	s, err := Open(t.TempDir(), Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AddUser("a@example.org", "password1"); err != nil {
		t.Fatal(err)
	}
	ids, err := s.AppendMany([]Delivery{{Address: "a@example.org", Message: []byte("Subject: x\r\n\r\nx\r\n"), TraceID: "new1"}})
	if err != nil {
		t.Fatal(err)
	}
	// The delivered event goes from memory to the file, and then from it.
	s.flushTrace()
	err = s.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketTrace)
		if err := root.DeleteBucket(bucketTraceEvents); err != nil {
			return err
		}
		_, err := root.CreateBucket(bucketTraceEvents)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateMaildrop("a@example.org", MaildropUpdate{Retrieved: ids}); err != nil {
		t.Fatal(err)
	}
	events, err := s.Trace("new1")
	if err != nil || len(events) != 1 || events[0].Kind != EventRetrieved {
		t.Fatalf("trace of new1: %+v, %v; want its retrieved event", events, err)
	}
}
