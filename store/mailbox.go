package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrOverQuota means a copy would take its mailbox past its quota.
var ErrOverQuota = errors.New("mailbox over quota")

// ErrNoMessage means the id is not (or no longer) in the mailbox.
var ErrNoMessage = errors.New("no such message")

// MessageInfo describes a stored message without its body.
type MessageInfo struct {
	ID uint64
	// Size is the message size in octets exactly as stored (CRLF line
	// endings, before any dot-stuffing), which is what POP3 LIST reports.
	Size    int64
	Arrived time.Time

	// epoch is the epoch of the open that stored the message; 0 for a
	// schema 1 message.
	epoch uint64
}

// UIDL returns the message's POP3 unique id (RFC 1939 section 7: 1 to 70
// octets in 0x21-0x7E): "<epoch>-<id>", or the decimal id alone for a
// message stored under schema 1. The package doc says why it never repeats.
func (m MessageInfo) UIDL() string {
	if m.epoch == 0 {
		return strconv.FormatUint(m.ID, 10)
	}
	return fmt.Sprintf("%016x-%d", m.epoch, m.ID)
}

// Delivery is one message for one mailbox: Header, the lines only this
// mailbox's copy carries (trace fields such as Delivered-To; may be empty),
// followed by Message. Both use CRLF line endings.
//
// Deliveries in one AppendMany call that pass the same Message slice share
// one stored copy of it, so a message for many mailboxes is written once.
//
// A copy that would take its mailbox past its quota (the user's own, else
// DefaultQuota; none when both are 0) fails the call with an error
// wrapping ErrOverQuota, unless IgnoreQuota is set (for notices, which
// must not be lost). A mailbox exactly at its quota takes nothing more.
type Delivery struct {
	Address string // the user, as known to LookupUser
	Header  []byte
	Message []byte

	DefaultQuota int64
	IgnoreQuota  bool

	// Events are trace events recorded with this copy, before its own
	// delivered event (the received event of the message that is being
	// delivered, for instance): written once the copy is, and only then
	// (trace_pending.go).
	Events []Event
	// TraceID, when set, records a delivered event under that message id
	// for this copy, naming the mailbox and the copy's number, so that a
	// POP3 retrieval or deletion of it can be traced back to the id.
	TraceID string
	// TraceFacts are extra facts for that delivered event.
	TraceFacts []Fact
}

// Append stores msg at the end of addr's mailbox and returns its id once it
// is on disk.
func (s *Store) Append(addr string, msg []byte) (uint64, error) {
	ids, err := s.AppendMany([]Delivery{{Address: addr, Message: msg}})
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// AppendMany stores every delivery in one transaction: all are durable when it
// returns nil, and none are stored when it returns an error.
func (s *Store) AppendMany(ds []Delivery) ([]uint64, error) {
	ids, _, err := s.AppendAndEnqueue(ds, nil)
	return ids, err
}

// writeSize is about what AppendAndEnqueue writes: the copies of a
// delivery share their body, and a forward's queued body is the same
// message, so the largest of them.
func writeSize(ds []Delivery, out []Outgoing) int {
	n := 0
	for _, d := range ds {
		n = max(n, len(d.Header)+len(d.Message))
	}
	for _, o := range out {
		n = max(n, len(o.Body))
	}
	return n
}

// Outgoing is a message for the outbound queue that AppendAndEnqueue
// commits together with mailbox copies: Body is stored as the entry's
// message (the same slice as the copies' Message costs no memory).
type Outgoing struct {
	Entry QueueEntry
	Body  []byte
}

// AppendAndEnqueue stores the deliveries and queues the outgoing messages
// in one transaction: all of it is durable when it returns nil, none of it
// when it returns an error. It returns the mailbox ids and the queue
// entries with their ids set. Forwarding uses it, so that the local copies
// and the one for a remote target are accepted in one step.
func (s *Store) AppendAndEnqueue(ds []Delivery, out []Outgoing) ([]uint64, []QueueEntry, error) {
	ids := make([]uint64, len(ds))
	entries := make([]QueueEntry, len(out))
	// Marshalled inside the transaction (the id comes from its sequence),
	// which update may run more than once: every run starts from out.
	now := time.Now().UTC()
	err := s.updateSized(writeSize(ds, out), func(tx *bolt.Tx) error {
		for i, o := range out {
			e, err := s.enqueueTx(tx, o.Entry, o.Body)
			if err != nil {
				return err
			}
			entries[i] = e
		}
		mailboxes := tx.Bucket(bucketMailboxes)
		bodies := newBodyWriter(tx)
		for i, d := range ds {
			mb, err := mailbox(tx, d.Address)
			if err != nil {
				return err
			}
			if err := checkQuota(tx, mb, d); err != nil {
				return err
			}
			id, err := mailboxes.NextSequence()
			if err != nil {
				return err
			}
			ids[i] = id
			bodyID, err := bodies.add(d.Message, copyHead{mb, id, d.Header})
			if err != nil {
				return err
			}
			e := indexEntry{
				size:    int64(len(d.Header) + len(d.Message)),
				arrived: now,
				epoch:   s.epoch,
				body:    bodyID,
				traceID: d.TraceID,
			}
			if err := mb.Bucket(bucketIndex).Put(idKey(id), e.encode()); err != nil {
				return err
			}
			if err := addUsage(mb, e.size); err != nil {
				return err
			}
			s.putEvents(d.Events)
			if d.TraceID != "" {
				facts := append([]Fact{{FactMailbox, Key(d.Address)}, {FactMsg, strconv.FormatUint(id, 10)}}, d.TraceFacts...)
				s.putEvents([]Event{{Time: now, Kind: EventDelivered, ID: d.TraceID, Facts: facts}})
			}
		}
		return bodies.finish()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("append: %w", err)
	}
	return ids, entries, nil
}

// checkQuota refuses d when it would take mb past its quota. It runs in the
// writing transaction, after the copies before it were put, so concurrent
// deliveries and several copies in one call are all counted.
func checkQuota(tx *bolt.Tx, mb *bolt.Bucket, d Delivery) error {
	if d.IgnoreQuota {
		return nil
	}
	quota := d.DefaultQuota
	k := []byte(Key(d.Address))
	v := tx.Bucket(bucketUsers).Get(k)
	if v == nil {
		return fmt.Errorf("%s: %w", d.Address, ErrNoUser)
	}
	rec, err := decodeUserRecord(k, v)
	if err != nil {
		return err
	}
	if rec.Quota > 0 {
		quota = rec.Quota
	}
	if quota <= 0 {
		return nil
	}
	used, err := usage(mb)
	if err != nil {
		return err
	}
	if size := int64(len(d.Header) + len(d.Message)); used+size > quota {
		return fmt.Errorf("%s: %d of %d octets used, message of %d: %w", d.Address, used, quota, size, ErrOverQuota)
	}
	return nil
}

// usage is the sum of the sizes in mb's index: what its messages take,
// heads included, as POP3 LIST reports them. A quota is checked against it
// at RCPT and again in the delivery's write, so it is kept as a running
// total (keyUsed) by the two writers of the index, the append and
// deleteMessage (DeleteUser drops the whole bucket, compaction copies the
// key like any other): summing the index instead cost 0.4 ms a
// 10,000-message mailbox (BenchmarkUsage), twice a delivery, once of it in
// the single writer that every other delivery waits for. A mailbox of an
// older schema has no total until its first change sums it (addUsage);
// until then it is summed here.
func usage(mb *bolt.Bucket) (int64, error) {
	if used, ok := storedUsage(mb); ok {
		return used, nil
	}
	return sumIndex(mb)
}

// keyUsed is the key of a mailbox's running total (schema 6); no
// mailbox's sub-bucket has the name.
var keyUsed = []byte("used")

// storedUsage returns mb's running total, if it has a sound one.
func storedUsage(mb *bolt.Bucket) (int64, bool) {
	v := mb.Get(keyUsed)
	if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) < 0 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), true
}

// addUsage brings mb's running total up to a change of its index by delta
// octets, made already in this transaction. A mailbox without a sound
// total (of an older schema, or a damaged key) gets the sum of its index,
// which holds the change.
func addUsage(mb *bolt.Bucket, delta int64) error {
	used, ok := storedUsage(mb)
	if used += delta; !ok || used < 0 {
		var err error
		if used, err = sumIndex(mb); err != nil {
			return err
		}
	}
	return mb.Put(keyUsed, binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(used)))
}

// sumIndex adds up the sizes in mb's index.
func sumIndex(mb *bolt.Bucket) (int64, error) {
	var used int64
	err := mb.Bucket(bucketIndex).ForEach(func(k, v []byte) error {
		e, err := decodeIndexEntry(k, v)
		used += e.size
		return err
	})
	return used, err
}

// Usage returns the octets addr's messages take and the user's own quota (0:
// none of its own, the server's default applies).
func (s *Store) Usage(addr string) (used, quota int64, err error) {
	r, err := s.quotaUse(addr, 0, true)
	return r.Used, r.Quota, err
}

// Recipient is what a check at RCPT needs to know of a user, read at once.
type Recipient struct {
	Address string // the user's own spelling, as LookupUser returns it
	// Quota is the quota that applies to its mailbox: its own, else the
	// default; 0 = none.
	Quota int64
	// Used is the octets its mailbox holds, only when there is a quota.
	Used int64
}

// LookupRecipient returns the user addr as a recipient (or an error
// wrapping ErrNoUser): its address, and the quota that applies to it (its
// own, else defaultQuota) with what its mailbox holds, in one read. The
// mailbox's use is read only where a quota applies: the check at RCPT of
// a mailbox of an older schema, whose total is summed, costs no walk of
// its index where none does, which is the usual case.
func (s *Store) LookupRecipient(addr string, defaultQuota int64) (Recipient, error) {
	return s.quotaUse(addr, defaultQuota, false)
}

func (s *Store) quotaUse(addr string, defaultQuota int64, always bool) (Recipient, error) {
	var r Recipient
	err := s.view(func(tx *bolt.Tx) error {
		k := []byte(Key(addr))
		v := tx.Bucket(bucketUsers).Get(k)
		if v == nil {
			return fmt.Errorf("%s: %w", addr, ErrNoUser)
		}
		rec, err := decodeUserRecord(k, v)
		if err != nil {
			return err
		}
		mb, err := mailbox(tx, addr)
		if err != nil {
			return err
		}
		r = Recipient{Address: rec.Address, Quota: rec.Quota}
		if !always {
			if r.Quota <= 0 {
				r.Quota = defaultQuota
			}
			if r.Quota <= 0 {
				r.Quota = 0
				return nil // no quota: nothing to read
			}
		}
		r.Used, err = usage(mb)
		return err
	})
	return r, err
}

// bodyWriter stores each distinct Message of one AppendMany call once,
// counts the copies that refer to it and puts each copy's head where it
// belongs once the count is known (finish).
type bodyWriter struct {
	bodies, refs *bolt.Bucket
	ids          map[sliceID]uint64
	order        []storedBody          // in the order stored
	copies       map[uint64][]copyHead // body id -> the copies referring to it
}

type storedBody struct {
	id   uint64
	size int
}

// copyHead is one copy's own head: its trace header lines, stored apart
// from the shared body.
type copyHead struct {
	mailbox *bolt.Bucket
	id      uint64 // the copy's id in the mailbox
	head    []byte
}

// sliceID identifies a slice by its memory: two slices with the same start
// and length hold the same bytes, without comparing them.
type sliceID struct {
	start *byte
	n     int
}

func idOf(b []byte) sliceID {
	if len(b) == 0 {
		return sliceID{}
	}
	return sliceID{&b[0], len(b)}
}

func newBodyWriter(tx *bolt.Tx) *bodyWriter {
	return &bodyWriter{
		bodies: tx.Bucket(bucketBodies),
		refs:   tx.Bucket(bucketBodyRefs),
		ids:    map[sliceID]uint64{},
		copies: map[uint64][]copyHead{},
	}
}

// add returns the body id for msg, storing msg if this call has not stored
// it yet, for copy c. bbolt keeps a reference to msg (and to c's head)
// until the commit copies it into its pages: the caller's slice is written
// once, however many copies.
func (w *bodyWriter) add(msg []byte, c copyHead) (uint64, error) {
	key := idOf(msg)
	id, ok := w.ids[key]
	if !ok {
		n, err := w.bodies.NextSequence()
		if err != nil {
			return 0, err
		}
		id = n
		if err := putBody(w.bodies, id, msg); err != nil {
			return 0, fmt.Errorf("body %d: %w", id, err)
		}
		w.ids[key] = id
		w.order = append(w.order, storedBody{id, len(msg)})
	}
	w.copies[id] = append(w.copies[id], c)
	return id, nil
}

// finish records how many copies refer to each body stored, and stores
// the copies' heads. A body of one copy, most mail, keeps its count in its
// own bucket's sequence (schema 4) and its copy's head in that bucket too,
// beside the body (schema 5): that bucket is written anyway, where an
// entry in bodyrefs cost the commit that tree's leaf and branches, three
// of the twenty pages a 4 KiB delivery wrote, and a head in the mailbox's
// head bucket two more. Both go with the bucket when the copy is deleted.
// A body shared by more copies has its count in bodyrefs, and so has one
// whose copies went down to one. Their heads are in the body's bucket
// too, one key a copy, when the body is small (maxHeadsWithBody): ten
// recipients of a 4 KiB message cost the commit one bucket of a few
// pages, not ten head trees' leaves and branches. A big body's copies keep
// their heads in their mailboxes' head buckets, so that deleting one of
// them does not rewrite the body.
func (w *bodyWriter) finish() error {
	for _, b := range w.order {
		if err := w.finishBody(b, w.copies[b.id]); err != nil {
			return fmt.Errorf("body %d: %w", b.id, err)
		}
	}
	return nil
}

// maxHeadsWithBody is the largest shared body whose bucket holds its
// copies' heads. Deleting a copy rewrites the bucket's page that held its
// head, which may be the body's: a few pages in one run for mail this
// small.
const maxHeadsWithBody = 64 << 10

func (w *bodyWriter) finishBody(sb storedBody, copies []copyHead) error {
	b := w.bodies.Bucket(idKey(sb.id))
	if len(copies) == 1 {
		if err := b.SetSequence(1); err != nil {
			return err
		}
		if head := copies[0].head; len(head) > 0 {
			return b.Put(bodyHeadKey, head)
		}
		return nil
	}
	if err := w.refs.Put(idKey(sb.id), encodeCount(uint64(len(copies)))); err != nil {
		return err
	}
	withBody := sb.size <= maxHeadsWithBody
	if withBody {
		// Written once, whole: full pages, fewer of them.
		b.FillPercent = 1.0
	}
	for _, c := range copies {
		if len(c.head) == 0 {
			continue
		}
		if withBody {
			if err := b.Put(copyHeadKey(c.id), c.head); err != nil {
				return err
			}
			continue
		}
		heads, err := c.mailbox.CreateBucketIfNotExists(bucketHead)
		if err != nil {
			return err
		}
		if err := heads.Put(idKey(c.id), c.head); err != nil {
			return err
		}
	}
	return nil
}

// releaseBody drops copy copyID's reference to a stored body (and its
// head there, if any), and the body with the last one, which it tells f.
func releaseBody(tx *bolt.Tx, bodyID, copyID uint64, f *freeing) error {
	refs, bodies := tx.Bucket(bucketBodyRefs), tx.Bucket(bucketBodies)
	k := idKey(bodyID)
	if v := refs.Get(k); v != nil {
		n, err := decodeCount(k, v)
		if err != nil {
			return err
		}
		if n > 1 {
			if b := bodies.Bucket(k); b != nil {
				// Deleting a key that is not there writes nothing.
				if err := b.Delete(copyHeadKey(copyID)); err != nil {
					return err
				}
			}
			return refs.Put(k, encodeCount(n-1))
		}
		if err := refs.Delete(k); err != nil {
			return err
		}
	} else if b := bodies.Bucket(k); b == nil || b.Sequence() != 1 {
		// Neither count of finish: a body without one lost it, and
		// deleting it might take it from copies still there.
		return fmt.Errorf("body %d: no reference count: corrupt", bodyID)
	}
	if err := bodies.DeleteBucket(k); err != nil {
		return err
	}
	f.freedBody()
	return nil
}

// Each body is the one value of a bucket of its own, under the body's id:
// bbolt keeps at least two keys in a page, so bodies side by side in one
// bucket would share leaves, and storing one would rewrite (and read back
// through the map) its neighbour, a megabyte for a megabyte. A bucket of
// its own puts only its 16-octet header in the shared leaves. (A small
// body stays inline in the parent's leaf, as small values always did.)
var bodyKey = []byte("m")

// bodyHeadKey holds, in the bucket of a body stored for one copy, that
// copy's head (schema 5; see finish). Sorting before bodyKey, it shares
// the body's page. In the bucket of a small shared body, copyHeadKey(id)
// holds copy id's.
var bodyHeadKey = []byte("h")

func copyHeadKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, 9), bodyHeadKey...), id)
}

func putBody(bodies *bolt.Bucket, id uint64, msg []byte) error {
	b, err := bodies.CreateBucket(idKey(id))
	if err != nil {
		return err
	}
	return b.Put(bodyKey, msg)
}

// mailbox returns addr's mailbox bucket, or an error wrapping ErrNoUser.
// Its index bucket is there: callers may use it without a check.
func mailbox(tx *bolt.Tx, addr string) (*bolt.Bucket, error) {
	mb := tx.Bucket(bucketMailboxes).Bucket([]byte(Key(addr)))
	if mb == nil {
		return nil, fmt.Errorf("%s: %w", addr, ErrNoUser)
	}
	if mb.Bucket(bucketIndex) == nil {
		return nil, fmt.Errorf("mailbox %s: no index: corrupt", Key(addr))
	}
	return mb, nil
}

// List returns the messages in addr's mailbox in arrival order. It reads only
// the index, never message bodies.
func (s *Store) List(addr string) ([]MessageInfo, error) {
	var out []MessageInfo
	err := s.view(func(tx *bolt.Tx) error {
		mb, err := mailbox(tx, addr)
		if err != nil {
			return err
		}
		return mb.Bucket(bucketIndex).ForEach(func(k, v []byte) error {
			e, err := decodeIndexEntry(k, v)
			if err != nil {
				return err
			}
			out = append(out, e.info(keyID(k)))
			return nil
		})
	})
	return out, err
}

// Read returns a copy of one message's bytes: its head, then its body.
func (s *Store) Read(addr string, id uint64) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		mb, err := mailbox(tx, addr)
		if err != nil {
			return err
		}
		k := idKey(id)
		v := mb.Bucket(bucketIndex).Get(k)
		if v == nil {
			return fmt.Errorf("message %d: %w", id, ErrNoMessage)
		}
		e, err := decodeIndexEntry(k, v)
		if err != nil {
			return err
		}
		head, body, err := messageParts(tx, mb, id, e)
		if err != nil {
			return err
		}
		// bbolt's slices die with the transaction: copy them out.
		out = make([]byte, 0, e.size)
		out = append(append(out, head...), body...)
		return nil
	})
	return out, err
}

// messageParts finds the stored bytes of message id, valid for tx's life.
// A schema 1 message is all body.
func messageParts(tx *bolt.Tx, mb *bolt.Bucket, id uint64, e indexEntry) (head, body []byte, err error) {
	k := idKey(id)
	if e.schemaV1() {
		if legacy := mb.Bucket(bucketBody); legacy != nil {
			body = legacy.Get(k)
		}
	} else if b := tx.Bucket(bucketBodies).Bucket(idKey(e.body)); b != nil {
		body = b.Get(bodyKey)
		// One of three places holds the head (see finish); a copy
		// stored before schema 5 has it in the head bucket.
		if head = b.Get(bodyHeadKey); head == nil {
			head = b.Get(copyHeadKey(id))
		}
		if head == nil {
			if heads := mb.Bucket(bucketHead); heads != nil {
				head = heads.Get(k)
			}
		}
	}
	// The size in the index is what LIST promised; bytes that do not add up
	// to it are a missing or damaged record (an empty body reads as nil).
	if int64(len(head)+len(body)) != e.size {
		return nil, nil, fmt.Errorf("message %d: stored %d octets, index says %d: corrupt", id, len(head)+len(body), e.size)
	}
	return head, body, nil
}

// Delete removes the given ids from addr's mailbox in one transaction. Ids
// already gone are ignored, so a retried delete is harmless. A shared body
// goes with the last copy that refers to it.
func (s *Store) Delete(addr string, ids []uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		mb, err := mailbox(tx, addr)
		if err != nil {
			return err
		}
		return deleteMessages(tx, mb, ids)
	})
}

// deleteMessages deletes ids from mailbox mb in tx; ids already gone are
// ignored.
func deleteMessages(tx *bolt.Tx, mb *bolt.Bucket, ids []uint64) error {
	f := &freeing{tx: tx}
	for _, id := range ids {
		if err := deleteMessage(tx, mb, id, f); err != nil {
			return err
		}
	}
	return nil
}

// deleteMessage deletes message id from mailbox mb, telling f of the body
// it frees, if any.
func deleteMessage(tx *bolt.Tx, mb *bolt.Bucket, id uint64, f *freeing) error {
	k := idKey(id)
	idx := mb.Bucket(bucketIndex)
	v := idx.Get(k)
	if v == nil {
		return nil
	}
	e, err := decodeIndexEntry(k, v)
	if err != nil {
		return err
	}
	if err := idx.Delete(k); err != nil {
		return err
	}
	if err := addUsage(mb, -e.size); err != nil {
		return err
	}
	if e.schemaV1() {
		if legacy := mb.Bucket(bucketBody); legacy != nil {
			return legacy.Delete(k)
		}
		return nil
	}
	if heads := mb.Bucket(bucketHead); heads != nil {
		if err := heads.Delete(k); err != nil {
			return err
		}
	}
	return releaseBody(tx, e.body, id, f)
}

// releaseMailbox drops the references a mailbox's messages hold on shared
// bodies, before the mailbox bucket is deleted.
func releaseMailbox(tx *bolt.Tx, mb *bolt.Bucket) error {
	type ref struct{ body, copy uint64 }
	var refs []ref
	err := mb.Bucket(bucketIndex).ForEach(func(k, v []byte) error {
		e, err := decodeIndexEntry(k, v)
		if err != nil {
			return err
		}
		if !e.schemaV1() {
			refs = append(refs, ref{e.body, keyID(k)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	f := &freeing{tx: tx}
	for _, r := range refs {
		if err := releaseBody(tx, r.body, r.copy, f); err != nil {
			return err
		}
	}
	return nil
}
