package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// The encodings of stored values, and their decoders. A value read from the
// file may be damaged: every decoder checks lengths before it slices and
// returns an error naming the record, so a corrupt record is reported, never
// a panic.

// indexEntry is a message's record in its mailbox's index bucket.
type indexEntry struct {
	size    int64 // head and body together
	arrived time.Time
	epoch   uint64 // 0: a schema 1 message, whole in the body bucket
	body    uint64 // the shared body's id in the bodies bucket
	// traceID is the id of the message the copy is of (its delivered
	// trace event's), so that POP3's retrieved and deleted events find it
	// without a look through the trace (schema 3); "" when unknown.
	traceID string
}

// Index entry lengths: schema 1 had size and arrival time; schema 2 adds the
// epoch and the body id; schema 3 may follow them with the trace id, of
// at most maxEntryTraceID octets.
const (
	indexEntryV1Len = 16
	indexEntryLen   = 32
	maxEntryTraceID = 64
)

func (e indexEntry) schemaV1() bool { return e.epoch == 0 }

func (e indexEntry) encode() []byte {
	id := e.traceID
	if len(id) > maxEntryTraceID {
		id = "" // the trace's own index still finds it
	}
	v := make([]byte, indexEntryLen, indexEntryLen+len(id))
	binary.BigEndian.PutUint64(v, uint64(e.size))
	binary.BigEndian.PutUint64(v[8:], uint64(e.arrived.UnixNano()))
	binary.BigEndian.PutUint64(v[16:], e.epoch)
	binary.BigEndian.PutUint64(v[24:], e.body)
	return append(v, id...)
}

func (e indexEntry) info(id uint64) MessageInfo {
	return MessageInfo{ID: id, Size: e.size, Arrived: e.arrived, epoch: e.epoch}
}

// maxStoredSize bounds a believable message size: bbolt refuses values
// above 2 GiB, and a head is small.
const maxStoredSize = 1 << 32

func decodeIndexEntry(k, v []byte) (indexEntry, error) {
	if len(k) != 8 {
		return indexEntry{}, fmt.Errorf("message index entry %x: key of %d bytes: corrupt", k, len(k))
	}
	id := keyID(k)
	if len(v) != indexEntryV1Len && (len(v) < indexEntryLen || len(v) > indexEntryLen+maxEntryTraceID) {
		return indexEntry{}, fmt.Errorf("message index entry %d: %d bytes: corrupt", id, len(v))
	}
	e := indexEntry{
		size:    int64(binary.BigEndian.Uint64(v)),
		arrived: time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))).UTC(),
	}
	if e.size < 0 || e.size > maxStoredSize {
		return indexEntry{}, fmt.Errorf("message index entry %d: size %d: corrupt", id, e.size)
	}
	if len(v) >= indexEntryLen {
		e.epoch = binary.BigEndian.Uint64(v[16:])
		e.body = binary.BigEndian.Uint64(v[24:])
		e.traceID = string(v[indexEntryLen:])
		if e.epoch == 0 {
			return indexEntry{}, fmt.Errorf("message index entry %d: epoch 0: corrupt", id)
		}
	}
	return e, nil
}

func encodeCount(n uint64) []byte { return idKey(n) }

// decodeCount reads a shared body's reference count; k is the body's key.
func decodeCount(k, v []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("body reference count %x: key of %d bytes: corrupt", k, len(k))
	}
	if v == nil {
		return 0, fmt.Errorf("body %d: no reference count: corrupt", keyID(k))
	}
	if len(v) != 8 || binary.BigEndian.Uint64(v) == 0 {
		return 0, fmt.Errorf("body %d: reference count %x: corrupt", keyID(k), v)
	}
	return binary.BigEndian.Uint64(v), nil
}

// decodeUserRecord reads the users bucket's value for key k. Every
// delivery reads its recipients' records two or three times (the RCPT
// lookup, the quota check at RCPT and again in the commit), and decoding
// the JSON was 4% of the server's CPU at 8 sessions, so decoded records
// are remembered by their stored bytes (userMemo). The caller must not
// change the returned record's Hash.
func decodeUserRecord(k, v []byte) (userRecord, error) {
	if rec, ok := userMemo.get(k, v); ok {
		return rec, nil
	}
	rec, err := parseUserRecord(k, v)
	if err == nil {
		userMemo.put(k, v, rec)
	}
	return rec, err
}

// userMemo maps a user record's stored bytes to what they decode to. Keyed
// by content, it needs no invalidation: a changed record has other bytes,
// and the old entry is never asked for again. A record of another key with
// the same bytes (a corrupt one) does not match: the key is kept too.
var userMemo = &recordMemo{}

// maxUserMemo bounds the memo; when full it starts again empty, which a
// server with more users than this pays with a decode now and then.
const maxUserMemo = 1024

type recordMemo struct {
	mu sync.Mutex
	m  map[string]memoEntry
}

type memoEntry struct {
	key string
	rec userRecord
}

func (rm *recordMemo) get(k, v []byte) (userRecord, bool) {
	rm.mu.Lock()
	e, ok := rm.m[string(v)]
	rm.mu.Unlock()
	if !ok || e.key != string(k) {
		return userRecord{}, false
	}
	return e.rec, true
}

func (rm *recordMemo) put(k, v []byte, rec userRecord) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.m == nil || len(rm.m) >= maxUserMemo {
		rm.m = make(map[string]memoEntry)
	}
	rm.m[string(v)] = memoEntry{key: string(k), rec: rec}
}

// parseUserRecord decodes and checks a user record.
func parseUserRecord(k, v []byte) (userRecord, error) {
	var rec userRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return userRecord{}, fmt.Errorf("user record %q: %w", k, err)
	}
	if rec.Address == "" || Key(rec.Address) != string(k) {
		return userRecord{}, fmt.Errorf("user record %q: address %q does not match its key: corrupt", k, rec.Address)
	}
	if len(rec.Hash) == 0 {
		return userRecord{}, fmt.Errorf("user record %q: no password hash: corrupt", k)
	}
	return rec, nil
}

// decodeQueueEntry reads the queue bucket's value for key k.
func decodeQueueEntry(k, v []byte) (QueueEntry, error) {
	if len(k) != 8 {
		return QueueEntry{}, fmt.Errorf("queue entry %x: key of %d bytes: corrupt", k, len(k))
	}
	id := keyID(k)
	var e QueueEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return QueueEntry{}, fmt.Errorf("queue entry %d: %w", id, err)
	}
	// UpdateQueueEntry writes back under e.ID: an id that disagrees with
	// the key would overwrite another entry.
	if e.ID != id {
		return QueueEntry{}, fmt.Errorf("queue entry %d: holds id %d: corrupt", id, e.ID)
	}
	return e, nil
}
