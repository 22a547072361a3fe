package store

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzDecodeRecord feeds every decoder of stored values arbitrary keys and
// values, as a damaged file would: the answer is a record or an error naming
// the record, never a panic. The seed corpus (testdata/fuzz/FuzzDecodeRecord)
// holds a good and a bad record of each kind.
func FuzzDecodeRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, kind byte, k, v []byte) {
		var err error
		var names string
		switch kind % 4 {
		case 0:
			names = "message index entry"
			var e indexEntry
			e, err = decodeIndexEntry(k, v)
			if err == nil {
				checkIndexEntry(t, e, k, v)
			}
		case 1:
			names = "body"
			_, err = decodeCount(k, v)
		case 2:
			names = "user record"
			var rec userRecord
			rec, err = decodeUserRecord(k, v)
			if err == nil && Key(rec.Address) != string(k) {
				t.Errorf("user record under %q holds %q", k, rec.Address)
			}
		case 3:
			names = "queue entry"
			var e QueueEntry
			e, err = decodeQueueEntry(k, v)
			if err == nil && e.ID != keyID(k) {
				t.Errorf("queue entry under %x holds id %d", k, e.ID)
			}
		}
		if err != nil && !strings.HasPrefix(err.Error(), names) {
			t.Errorf("error %q does not name the %s", err, names)
		}
	})
}

// checkIndexEntry: a decoded entry encodes back to the same bytes and gives
// a valid RFC 1939 unique-id.
func checkIndexEntry(t *testing.T, e indexEntry, k, v []byte) {
	t.Helper()
	if len(v) >= indexEntryLen && !bytes.Equal(e.encode(), v) {
		t.Errorf("entry %x decodes to %+v, which encodes to %x", v, e, e.encode())
	}
	uidl := e.info(keyID(k)).UIDL()
	if len(uidl) < 1 || len(uidl) > 70 || strings.ContainsFunc(uidl, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		t.Errorf("entry %x: UIDL %q is not an RFC 1939 unique-id", v, uidl)
	}
}
