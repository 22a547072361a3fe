package store

import (
	"encoding/json"
	"testing"
	"time"
)

func TestDecodeUserRecord_Memo(t *testing.T) {
	rec := userRecord{Address: "Alice@example.test", Hash: []byte("$2a$04$hash"), Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Quota: 5}
	v := encodeJSON(t, rec)
	k := []byte("alice@example.test")

	got, err := decodeUserRecord(k, v)
	if err != nil || got.Address != rec.Address || got.Quota != 5 {
		t.Fatalf("first decode: %+v %v", got, err)
	}
	if _, ok := userMemo.get(k, v); !ok {
		t.Fatal("a decoded record is not remembered")
	}
	if again, err := decodeUserRecord(k, v); err != nil || again.Address != rec.Address || !again.Created.Equal(rec.Created) {
		t.Fatalf("from the memo: %+v %v", again, err)
	}
	// The same bytes under another key are still a corrupt record.
	if _, err := decodeUserRecord([]byte("bob@example.test"), v); err == nil {
		t.Fatal("a record stored under another address's key was accepted")
	}
	// Changed bytes are decoded afresh.
	rec.Quota = 7
	if got, err := decodeUserRecord(k, encodeJSON(t, rec)); err != nil || got.Quota != 7 {
		t.Fatalf("changed record: %+v %v", got, err)
	}
}

func TestDecodeUserRecord_MemoIsBounded(t *testing.T) {
	for i := range maxUserMemo + 10 {
		rec := userRecord{Address: "u@example.test", Hash: []byte("h"), Quota: int64(i)}
		if _, err := decodeUserRecord([]byte("u@example.test"), encodeJSON(t, rec)); err != nil {
			t.Fatal(err)
		}
	}
	userMemo.mu.Lock()
	n := len(userMemo.m)
	userMemo.mu.Unlock()
	if n > maxUserMemo {
		t.Fatalf("memo holds %d records, bound %d", n, maxUserMemo)
	}
	if _, err := decodeUserRecord([]byte("u@example.test"), []byte("{not json")); err == nil {
		t.Fatal("bad JSON decoded")
	}
}

func encodeJSON(t *testing.T, rec userRecord) []byte {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkLookupUser is the recipient lookup every RCPT makes; with the
// memo it reads the record and decodes nothing.
func BenchmarkLookupUser(b *testing.B) {
	s := openInternal(b, Options{})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.LookupUser("alice@example.test"); err != nil {
			b.Fatal(err)
		}
	}
}
