package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Event is one step in a message's life, for `minimail trace`: its time,
// its kind (received, delivered, queued, attempt, deferred, sent, bounced,
// retrieved, deleted), the message id it belongs to (the id of the 250
// reply) and its facts in the order they are shown.
//
// Events are written in the same transaction as the change they describe
// (the copy stored, the queue entry written), so they cost no fsync of
// their own; see trace.go for the buckets and indexes.
type Event struct {
	Time  time.Time
	Kind  string
	ID    string
	Facts []Fact
}

// Fact is one key=value detail of an Event. A key may repeat (one rcpt
// fact per recipient).
type Fact struct{ Key, Value string }

// Fact keys that the indexes read: a received or queued event's rcpt and
// message_id make the message findable by recipient and Message-ID, a
// delivered event's mailbox and msg map a POP3 retrieval back to the id.
const (
	FactRcpt      = "rcpt"
	FactMessageID = "message_id"
	FactMailbox   = "mailbox"
	FactMsg       = "msg"
	FactDSN       = "dsn"
)

// Event kinds.
const (
	EventReceived  = "received"
	EventDelivered = "delivered"
	EventQueued    = "queued"
	EventAttempt   = "attempt"
	EventDeferred  = "deferred"
	EventSent      = "sent"
	EventBounced   = "bounced"
	EventRetrieved = "retrieved"
	EventDeleted   = "deleted"
	EventDropped   = "dropped" // queue drop: the operator removed it from the queue
)

// Get returns the value of the first fact named key, or "".
func (e Event) Get(key string) string {
	for _, f := range e.Facts {
		if f.Key == key {
			return f.Value
		}
	}
	return ""
}

// String is the event as `trace` prints it: time, kind, id, then the facts
// as key=value, values with spaces or quotes quoted.
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(e.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
	b.WriteByte(' ')
	b.WriteString(e.Kind)
	b.WriteString(" id=")
	b.WriteString(e.ID)
	for _, f := range e.Facts {
		b.WriteByte(' ')
		b.WriteString(f.Key)
		b.WriteByte('=')
		v := f.Value
		if v == "" || strings.ContainsAny(v, " \t\"=\\") || strings.ContainsFunc(v, isControl) {
			v = fmt.Sprintf("%q", v)
		}
		b.WriteString(v)
	}
	return b.String()
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Limits of one event record: remote replies and client HELOs are bounded
// before they are stored, and the decoder refuses anything beyond them.
const (
	maxEventFacts  = 256
	maxEventString = 1024
	eventVersion   = 1
)

// encodeEvent writes an event record:
//
//	version byte (1) | time: varint Unix nanoseconds | kind | id |
//	uvarint fact count | key, value ...
//
// where every string is a uvarint length and the bytes. Strings longer than
// maxEventString are cut (at a UTF-8 boundary) and facts past
// maxEventFacts dropped, so every encoded event decodes.
func encodeEvent(e Event) []byte {
	b := make([]byte, 0, 64)
	b = append(b, eventVersion)
	b = binary.AppendVarint(b, e.Time.UnixNano())
	b = appendString(b, e.Kind)
	b = appendString(b, e.ID)
	facts := e.Facts
	if len(facts) > maxEventFacts {
		facts = facts[:maxEventFacts]
	}
	b = binary.AppendUvarint(b, uint64(len(facts)))
	for _, f := range facts {
		b = appendString(b, f.Key)
		b = appendString(b, f.Value)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	s = truncate(s, maxEventString)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

var errBadEvent = errors.New("bad event record")

// decodeEvent reads what encodeEvent wrote. It never panics and refuses
// records with trailing bytes, unknown versions or out-of-bound lengths.
func decodeEvent(b []byte) (Event, error) {
	d := eventDecoder{b: b}
	if v := d.byte(); v != eventVersion {
		return Event{}, fmt.Errorf("%w: version %d", errBadEvent, v)
	}
	var e Event
	nano := d.varint()
	kind := d.string()
	id := d.string()
	n := d.uvarint()
	if d.err == nil && n > maxEventFacts {
		d.err = fmt.Errorf("%w: %d facts", errBadEvent, n)
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		k := d.string()
		v := d.string()
		e.Facts = append(e.Facts, Fact{Key: k, Value: v})
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errBadEvent, len(d.b))
	}
	if d.err != nil {
		return Event{}, d.err
	}
	e.Time, e.Kind, e.ID = time.Unix(0, nano).UTC(), kind, id
	return e, nil
}

// eventDecoder reads fields until the first error, which sticks.
type eventDecoder struct {
	b   []byte
	err error
}

func (d *eventDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errBadEvent, what)
	}
}

func (d *eventDecoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail("short")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *eventDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *eventDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *eventDecoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > maxEventString || n > uint64(len(d.b)) {
		d.fail("bad string length")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
