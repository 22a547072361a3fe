package store

import (
	"bytes"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Trace events live in the trace bucket, created when missing at Open like
// the aliases bucket (no migration; the runs bucket came with schema 7):
//
//	trace       sequence = last event number
//	  events    8-byte event number -> event record (events.go)
//	  runs      8-byte number of a run's first event -> a bucket of index
//	            keys (trace_runs.go), sequence = how many were put in it;
//	            every index in one run, told apart by a first byte:
//	            'i' id 0x00 8-byte number -> empty
//	            'm' lower-cased Message-ID without <> 0x00 number -> id
//	            'r' lower-cased recipient 0x00 number -> id
//	            'b' lower-cased mailbox 0x00 8-byte mailbox message id -> id
//	  index     the keys of the events before the first run, as schema 6
//	            and before wrote them (read and pruned, never written)
//
//	  "indexed" 8-byte number of the last event the index holds
//
// Event numbers grow with every event written, so the events bucket is in
// the order the events happened, and the 'i' keys of the runs, oldest run
// first, list one message's events oldest first.
//
// An event is recorded by the write of the change it describes and written
// by a commit soon after (trace_pending.go), only ever appended to the
// events bucket: its pages are shared by every message of about a tenth
// of a second. The index keys are random (ids, addresses),
// and each one written next to a delivery would cost that commit pages of
// its own; BenchmarkMXDelivery with 32 clients lost half its throughput to
// them. So the index is derived data, brought up to date in batches by
// IndexTrace (the queue's runner calls it each pass), and every lookup
// also reads the events past "indexed" (a minute's worth, typically).
// Every index key is derived from its event alone (indexKeys), so pruning
// an event removes exactly the keys indexing it added.
var (
	bucketTrace       = []byte("trace")
	bucketTraceEvents = []byte("events")
	bucketTraceIndex  = []byte("index")
	keyTraceIndexed   = []byte("indexed")
)

// The indexes, as the first byte of their keys in the index bucket.
const (
	indexID    byte = 'i'
	indexMsgID byte = 'm'
	indexRcpt  byte = 'r'
	indexMbox  byte = 'b'
)

// ErrNoTrace means no event names the id, Message-ID or recipient asked for.
var ErrNoTrace = errors.New("no trace events")

// TraceRecipientMessages is how many of a recipient's messages a trace by
// address shows: the most recent ones.
const TraceRecipientMessages = 20

// initTrace creates the trace buckets; run by initSchema.
func initTrace(tx *bolt.Tx) error {
	root, err := tx.CreateBucketIfNotExists(bucketTrace)
	if err != nil {
		return err
	}
	for _, name := range [][]byte{bucketTraceEvents, bucketTraceIndex, bucketTraceRuns} {
		if _, err := root.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// traceKey is one entry of the index bucket.
type traceKey struct {
	key   []byte
	value []byte
}

// indexPrefix is where an index's keys for s begin: the index's byte, s,
// and a 0 that ends s (no id, address or Message-ID contains one).
func indexPrefix(index byte, s string) []byte {
	k := make([]byte, 0, len(s)+10)
	k = append(k, index)
	k = append(k, s...)
	return append(k, 0)
}

// indexKeys lists the index entries event number n (e) has.
func indexKeys(n uint64, e Event) []traceKey {
	num := idKey(n)
	join := func(index byte, s string) []byte { return append(indexPrefix(index, s), num...) }
	id := []byte(e.ID)
	keys := []traceKey{{join(indexID, e.ID), nil}}
	if e.Kind != EventReceived && e.Kind != EventQueued {
		if e.Kind == EventDelivered {
			if mid, err := strconv.ParseUint(e.Get(FactMsg), 10, 64); err == nil && e.Get(FactMailbox) != "" {
				keys = append(keys, traceKey{mboxKey(e.Get(FactMailbox), mid), id})
			}
		}
		return keys
	}
	if mid := NormalMessageID(e.Get(FactMessageID)); mid != "" {
		keys = append(keys, traceKey{join(indexMsgID, mid), id})
	}
	seen := map[string]bool{}
	for _, f := range e.Facts {
		if f.Key != FactRcpt || seen[Key(f.Value)] {
			continue
		}
		seen[Key(f.Value)] = true
		keys = append(keys, traceKey{join(indexRcpt, Key(f.Value)), id})
	}
	return keys
}

// mboxKey is the index key of copy n in mailbox addr.
func mboxKey(addr string, n uint64) []byte {
	return append(indexPrefix(indexMbox, Key(addr)), idKey(n)...)
}

// NormalMessageID is how a Message-ID is looked up: without the angle
// brackets, surrounding space, and case.
func NormalMessageID(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "<")
	s = strings.TrimSuffix(s, ">")
	return strings.ToLower(strings.TrimSpace(s))
}

// writeEvents appends events to the trace's events bucket in tx, each
// under the trace's next number. The writes record their events with
// putEvents; the committer writes them here (trace_pending.go).
func writeEvents(tx *bolt.Tx, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	root := tx.Bucket(bucketTrace)
	evs := root.Bucket(bucketTraceEvents)
	// Numbers only grow: appended keys fill pages whole instead of
	// splitting them in half.
	evs.FillPercent = 1.0
	for _, e := range events {
		n, err := root.NextSequence()
		if err != nil {
			return err
		}
		if err := evs.Put(idKey(n), encodeEvent(e)); err != nil {
			return err
		}
	}
	return nil
}

// indexed is the number of the last event the index holds.
func indexed(root *bolt.Bucket) uint64 {
	if v := root.Get(keyTraceIndexed); len(v) == 8 {
		return keyID(v)
	}
	return 0
}

// tail calls fn for each event the index does not hold yet, oldest first,
// until fn returns false.
func tail(root *bolt.Bucket, fn func(n uint64, e Event) bool) {
	c := root.Bucket(bucketTraceEvents).Cursor()
	for k, v := c.Seek(idKey(indexed(root) + 1)); k != nil; k, v = c.Next() {
		if e, err := decodeEvent(v); err == nil && !fn(keyID(k), e) {
			return
		}
	}
}

// IndexTrace adds up to limit events to the index in one commit and
// reports how many; none waiting costs a read, not a commit.
func (s *Store) IndexTrace(limit int) (int, error) {
	waiting := false
	if err := s.view(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketTrace)
		k, _ := root.Bucket(bucketTraceEvents).Cursor().Last()
		waiting = k != nil && keyID(k) > indexed(root)
		return nil
	}); err != nil || !waiting || limit <= 0 {
		return 0, err
	}
	done := 0
	err := s.update(func(tx *bolt.Tx) error {
		done = 0
		root := tx.Bucket(bucketTrace)
		last := indexed(root)
		first := last + 1
		var keys []traceKey
		c := root.Bucket(bucketTraceEvents).Cursor()
		for k, v := c.Seek(idKey(first)); k != nil && done < limit; k, v = c.Next() {
			last = keyID(k)
			done++
			e, err := decodeEvent(v)
			if err != nil {
				continue // unreadable: nothing to index, pruned in its time
			}
			keys = append(keys, indexKeys(last, e)...)
		}
		if err := addRun(root, first, keys); err != nil {
			return err
		}
		return root.Put(keyTraceIndexed, idKey(last))
	})
	if err != nil {
		return 0, fmt.Errorf("index trace: %w", err)
	}
	if done >= indexGiveBackEvents {
		// The pass's nodes and pages are garbage now, megabytes of them,
		// and the collector's goal is twice what was live at its commit:
		// idle, the server stayed at 12 MB of anonymous memory for the 12 s
		// of slow allocation it took to reach that goal after a pass of
		// 5,000 events, against 7.6 before and after. Give them back now.
		if s.opts.giveBack != nil {
			s.opts.giveBack()
		} else {
			debug.FreeOSMemory()
		}
	}
	return done, nil
}

// indexGiveBackEvents is the pass after which IndexTrace returns its
// garbage to the system at once: a small domain's passes of a few events
// are not worth a collection.
const indexGiveBackEvents = 1000

// RecordEvents writes events, and those waiting, in one commit. The paths
// that change state pass their events with the change instead; this is
// for events that describe no stored change.
func (s *Store) RecordEvents(events []Event) error {
	return s.submit(&writeReq{fn: func(*bolt.Tx) error {
		s.putEvents(events)
		return nil
	}, flushTrace: true})
}

// mailboxTraceIDs maps copies in addr's mailbox to the message ids their
// delivered events gave them; copies without one are left out.
func mailboxTraceIDs(tx *bolt.Tx, addr string, ids []uint64) map[uint64]string {
	root := tx.Bucket(bucketTrace)
	var runs []*bolt.Bucket // listed for the first copy without its id
	out := make(map[uint64]string, len(ids))
	// The copy's own index entry names it (schema 3); a copy stored by an
	// older minimail is found in the trace's index, or among the events
	// past it.
	var entries *bolt.Bucket
	if mb, err := mailbox(tx, addr); err == nil {
		entries = mb.Bucket(bucketIndex)
	}
	missing := map[uint64]bool{}
	for _, n := range ids {
		if entries != nil {
			if v := entries.Get(idKey(n)); v != nil {
				if e, err := decodeIndexEntry(idKey(n), v); err == nil && e.traceID != "" {
					out[n] = e.traceID
					continue
				}
			}
		}
		if runs == nil {
			runs = indexRuns(root)
		}
		if v := getIndexed(runs, mboxKey(addr, n)); v != nil {
			out[n] = string(v)
			continue
		}
		missing[n] = true
	}
	if len(missing) == 0 {
		return out
	}
	key := Key(addr)
	tail(root, func(_ uint64, e Event) bool {
		if e.Kind != EventDelivered || Key(e.Get(FactMailbox)) != key {
			return true
		}
		if n, err := strconv.ParseUint(e.Get(FactMsg), 10, 64); err == nil && missing[n] {
			out[n] = e.ID
			delete(missing, n)
		}
		return len(missing) > 0
	})
	return out
}

// Trace returns the events of the messages query names, each message's
// events oldest first and the messages in the order they began. query is
// a message id (the 250 reply's), a Message-ID with or without <>, or a
// recipient address, which gives its last TraceRecipientMessages messages.
// Nothing found is an error wrapping ErrNoTrace.
func (s *Store) Trace(query string) ([]Event, error) {
	query = strings.TrimSpace(query)
	s.flushTrace()
	var out []Event
	err := s.view(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketTrace)
		if root == nil {
			return nil // a file opened read-only before it had events
		}
		// The runs are listed once for every lookup of the query, and
		// the events past the index, hundreds of thousands on a server
		// busier than the runner's pace, are read twice: once for the
		// three lookups together, once for the messages found.
		runs := indexRuns(root)
		lookups := []*traceLookup{
			newTraceLookup(indexID, query, 1),
			newTraceLookup(indexMsgID, NormalMessageID(query), 0),
			newTraceLookup(indexRcpt, Key(query), TraceRecipientMessages),
		}
		lookInTail(root, lookups)
		var ids []string
		for _, l := range lookups {
			if ids = l.ids(runs); len(ids) > 0 {
				break
			}
		}
		evs, err := eventsOf(root, runs, ids)
		out = evs
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("trace %q: %w", query, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("trace %q: %w", query, ErrNoTrace)
	}
	return out, nil
}

// traceLookup is one way Trace reads its query: a key of one of the
// index's kinds.
type traceLookup struct {
	index  byte
	key    string
	prefix []byte // nil for an empty key: nothing to look up
	limit  int    // > 0: only the most recent limit messages
	// inTail maps the ids found among the events past the index to the
	// number of the first event that has the key (lookInTail).
	inTail map[string]uint64
}

func newTraceLookup(index byte, key string, limit int) *traceLookup {
	l := &traceLookup{index: index, key: key, limit: limit, inTail: map[string]uint64{}}
	if key != "" {
		l.prefix = indexPrefix(index, key)
	}
	return l
}

// lookInTail finds the lookups' keys among the events past the index, in
// one walk of them.
func lookInTail(root *bolt.Bucket, lookups []*traceLookup) {
	tail(root, func(n uint64, e Event) bool {
		for _, ik := range indexKeys(n, e) {
			for _, l := range lookups {
				if l.prefix != nil && bytes.HasPrefix(ik.key, l.prefix) && len(ik.key) == len(l.prefix)+8 {
					if _, ok := l.inTail[e.ID]; !ok {
						l.inTail[e.ID] = n
					}
				}
			}
		}
		return true
	})
}

// ids returns the distinct ids listed under the lookup's key, oldest
// first, the entries of the index's runs (indexRuns) and the events past
// it (lookInTail) alike.
func (l *traceLookup) ids(runs []*bolt.Bucket) []string {
	if l.prefix == nil {
		return nil
	}
	first := map[string]uint64{} // id -> its first event's number
	_ = eachIndexed(runs, l.prefix, func(n uint64, v []byte) error {
		id := string(v)
		if l.index == indexID {
			id = l.key
		}
		if _, ok := first[id]; !ok {
			first[id] = n
		}
		return nil
	})
	// Every event past the index is newer than every event in it.
	for id, n := range l.inTail {
		if _, ok := first[id]; !ok {
			first[id] = n
		}
	}
	type hit struct {
		id  string
		num uint64
	}
	hits := make([]hit, 0, len(first))
	for id, n := range first {
		hits = append(hits, hit{id, n})
	}
	sort.Slice(hits, func(i, j int) bool { return hits[i].num < hits[j].num })
	if l.limit > 0 && len(hits) > l.limit {
		hits = hits[len(hits)-l.limit:]
	}
	out := make([]string, len(hits))
	for i, h := range hits {
		out[i] = h.id
	}
	return out
}

// eventsOf reads the events of messages ids, each message's oldest first,
// the messages in the order of ids; the events past the index are read
// once for all of them.
func eventsOf(root *bolt.Bucket, runs []*bolt.Bucket, ids []string) ([]Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	evs := root.Bucket(bucketTraceEvents)
	of := make(map[string][]Event, len(ids))
	for _, id := range ids {
		var got []Event
		err := eachIndexed(runs, indexPrefix(indexID, id), func(n uint64, _ []byte) error {
			v := evs.Get(idKey(n))
			if v == nil {
				return nil
			}
			e, err := decodeEvent(v)
			if err != nil {
				return fmt.Errorf("event %d: %w", n, err)
			}
			got = append(got, e)
			return nil
		})
		if err != nil {
			return nil, err
		}
		of[id] = got
	}
	tail(root, func(_ uint64, e Event) bool {
		if got, ok := of[e.ID]; ok {
			of[e.ID] = append(got, e)
		}
		return true
	})
	var out []Event
	for _, id := range ids {
		out = append(out, of[id]...)
	}
	return out, nil
}

// PruneTrace deletes events older than before, oldest first, at most limit
// of them in one commit (so one pass holds the writer briefly), and
// reports how many went. Only indexed events go (IndexTrace first), so
// their index keys go with them. Callers repeat it until it returns fewer than
// limit.
func (s *Store) PruneTrace(before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	// Most calls find nothing to do: a read says so without a commit.
	due := false
	if err := s.view(func(tx *bolt.Tx) error {
		_, v := tx.Bucket(bucketTrace).Bucket(bucketTraceEvents).Cursor().First()
		if v != nil {
			e, err := decodeEvent(v)
			due = err != nil || e.Time.Before(before)
		}
		return nil
	}); err != nil || !due {
		return 0, err
	}
	pruned := 0
	err := s.update(func(tx *bolt.Tx) error {
		pruned = 0
		root := tx.Bucket(bucketTrace)
		evs := root.Bucket(bucketTraceEvents)
		var doomed [][]byte
		last := indexed(root)
		runs := runWalk{root: root}
		c := evs.Cursor()
		for k, v := c.First(); k != nil && len(doomed) < limit && keyID(k) <= last; k, v = c.Next() {
			e, err := decodeEvent(v)
			if err == nil && !e.Time.Before(before) {
				// Numbers follow time: the rest are younger. (An event
				// written with an earlier clock waits for the next pass
				// after this one goes.)
				break
			}
			doomed = append(doomed, append([]byte(nil), k...))
			if err != nil {
				continue // unreadable: no index keys to find, drop it
			}
			run, err := runs.at(keyID(k))
			if err != nil {
				return err
			}
			for _, ik := range indexKeys(keyID(k), e) {
				if err := run.Delete(ik.key); err != nil {
					return err
				}
			}
		}
		if err := runs.done(); err != nil {
			return err
		}
		for _, k := range doomed {
			if err := evs.Delete(k); err != nil {
				return err
			}
		}
		pruned = len(doomed)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune trace: %w", err)
	}
	return pruned, nil
}

// TraceCount reports events recorded since `since` by kind, for status:
// it walks the events bucket from the newest back until an older one.
func (s *Store) TraceCount(since time.Time) (map[string]int, error) {
	s.flushTrace()
	out := map[string]int{}
	err := s.view(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketTrace)
		if root == nil {
			return nil
		}
		c := root.Bucket(bucketTraceEvents).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			e, err := decodeEvent(v)
			if err != nil {
				continue
			}
			if e.Time.Before(since) {
				break
			}
			out[e.Kind]++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("trace count: %w", err)
	}
	return out, nil
}

// MaildropUpdate is the end of a POP3 session (RFC 1939 section 6, the
// UPDATE state): the copies it deletes, the ones it retrieved, and facts
// about the session (the client's address) for their events.
type MaildropUpdate struct {
	Deleted   []uint64
	Retrieved []uint64
	Facts     []Fact
}

// UpdateMaildrop deletes u.Deleted from addr's mailbox as Delete does and,
// in the same transaction, records a retrieved event for each retrieved
// copy and a deleted event for each deleted one, under the message id its
// delivered event named (copies stored without one get no event). A POP3
// session makes one such write at QUIT, so a retrieval costs no commit of
// its own.
func (s *Store) UpdateMaildrop(addr string, u MaildropUpdate) error {
	now := time.Now().UTC()
	return s.update(func(tx *bolt.Tx) error {
		mb, err := mailbox(tx, addr)
		if err != nil {
			return err
		}
		ids := mailboxTraceIDs(tx, addr, append(append([]uint64(nil), u.Retrieved...), u.Deleted...))
		var events []Event
		add := func(kind string, ns []uint64) {
			for _, n := range ns {
				if id, ok := ids[n]; ok {
					facts := append([]Fact{{FactMailbox, Key(addr)}, {FactMsg, strconv.FormatUint(n, 10)}}, u.Facts...)
					events = append(events, Event{Time: now, Kind: kind, ID: id, Facts: facts})
				}
			}
		}
		add(EventRetrieved, u.Retrieved)
		if err := deleteMessages(tx, mb, u.Deleted); err != nil {
			return err
		}
		add(EventDeleted, u.Deleted)
		s.putEvents(events)
		return nil
	})
}
