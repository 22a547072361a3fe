package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNoQueueEntry means the queue id is not (or no longer) queued.
var ErrNoQueueEntry = errors.New("no such queue entry")

// RcptState is where one recipient of a queued message stands.
type RcptState string

const (
	// RcptPending recipients are still to be (re)tried.
	RcptPending RcptState = "pending"
	// RcptSent recipients were accepted by the next hop (or a local
	// mailbox). They are never sent again.
	RcptSent RcptState = "sent"
	// RcptFailed recipients failed for good; Notified says whether the
	// sender has been told.
	RcptFailed RcptState = "failed"
)

// QueueRcpt is one recipient of a queued message and the outcome of its
// last attempt.
type QueueRcpt struct {
	Addr     string    `json:"addr"`
	State    RcptState `json:"state"`
	Attempts int       `json:"attempts,omitempty"`
	// LastError is the human-readable result of the last failed attempt.
	LastError string `json:"last_error,omitempty"`
	// Status is the RFC 3463 enhanced status code of the last failure.
	Status string `json:"status,omitempty"`
	// Diagnostic is the RFC 3464 Diagnostic-Code ("smtp; 550 5.1.1 ...").
	Diagnostic string `json:"diagnostic,omitempty"`
	// RemoteMTA is the host that gave the last answer, if any.
	RemoteMTA string `json:"remote_mta,omitempty"`
	// Notified records that the notice about this recipient's outcome
	// (its failure, or the success SuccessAction names) was handed on, or
	// is not owed (a null sender, NOTIFY=NEVER).
	Notified bool `json:"notified,omitempty"`

	// The RFC 3461 parameters of its RCPT command (submission only).
	// Notify is the NOTIFY list, upper case; nil when none was given,
	// which RFC 3461 4.1 reads as FAILURE,DELAY (so do entries from
	// before these fields).
	Notify []string `json:"notify,omitempty"`
	// ORcptType and ORcpt are the ORCPT parameter, the address decoded
	// from xtext; "" when none was given.
	ORcptType string `json:"orcpt_type,omitempty"`
	ORcpt     string `json:"orcpt,omitempty"`
	// SuccessAction is the RFC 3464 action a NOTIFY=SUCCESS recipient is
	// owed once sent: "delivered" (a local mailbox has it) or "relayed"
	// (a next hop without DSN took it); "" when no success notice is owed.
	SuccessAction string `json:"success_action,omitempty"`
}

// QueueEntry is one queued message without its body.
type QueueEntry struct {
	ID uint64 `json:"id"`
	// MsgID is the message's id everywhere outside the store (the 250
	// reply, logs, queue list and drop); "" in entries queued before it
	// existed, which go by ID.
	MsgID string `json:"msg_id,omitempty"`
	// From is the envelope sender; "" is the null sender of a bounce.
	From          string      `json:"from"`
	Rcpts         []QueueRcpt `json:"rcpts"`
	Created       time.Time   `json:"created"`
	NextAttempt   time.Time   `json:"next_attempt"`
	Attempts      int         `json:"attempts,omitempty"`
	LastError     string      `json:"last_error,omitempty"`
	DelayNotified bool        `json:"delay_notified,omitempty"`
	// Ret and EnvID are the RFC 3461 RET and ENVID of its MAIL command
	// (ENVID decoded from xtext); "" when none was given.
	Ret   string `json:"ret,omitempty"`
	EnvID string `json:"envid,omitempty"`
	// Notice marks a delivery status notification of this server's own:
	// it is stored in a local mailbox even past the quota.
	Notice bool `json:"notice,omitempty"`

	// Events are trace events written with the entry by EnqueueMessage,
	// EnqueueNotice and UpdateQueueEntry, in the same transaction; they
	// are not part of the
	// entry and never read back into it.
	Events []Event `json:"-"`
}

// EnqueueMessage stores a new entry and its body in one transaction and
// returns the id it was given (e.ID is ignored). Both are on disk when it
// returns.
func (s *Store) EnqueueMessage(e QueueEntry, body []byte) (uint64, error) {
	var id uint64
	err := s.updateSized(len(body), func(tx *bolt.Tx) error {
		stored, err := s.enqueueTx(tx, e, body)
		id = stored.ID
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("enqueue: %w", err)
	}
	return id, nil
}

// EnqueueNotice replaces the existing entry e (matched by e.ID, as
// UpdateQueueEntry) and stores the new entry n with its body, in one
// transaction, and returns n's id. A notice and the record that it was
// sent are thus on disk together or not at all: a crash can neither lose
// the notice nor, by leaving e unmarked, have it sent twice.
func (s *Store) EnqueueNotice(e QueueEntry, n QueueEntry, body []byte) (uint64, error) {
	v, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("queue entry %d: %w", e.ID, err)
	}
	var id uint64
	err = s.updateSized(len(body), func(tx *bolt.Tx) error {
		q := tx.Bucket(bucketQueue)
		if q.Get(idKey(e.ID)) == nil {
			return fmt.Errorf("queue entry %d: %w", e.ID, ErrNoQueueEntry)
		}
		if err := q.Put(idKey(e.ID), v); err != nil {
			return err
		}
		s.putEvents(e.Events)
		stored, err := s.enqueueTx(tx, n, body)
		id = stored.ID
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("enqueue notice: %w", err)
	}
	return id, nil
}

// enqueueTx puts e under the queue's next id, and its body, in tx, and
// records e's events; it returns e with that id.
func (s *Store) enqueueTx(tx *bolt.Tx, e QueueEntry, body []byte) (QueueEntry, error) {
	q := tx.Bucket(bucketQueue)
	n, err := q.NextSequence()
	if err != nil {
		return QueueEntry{}, err
	}
	e.ID = n
	v, err := json.Marshal(e)
	if err != nil {
		return QueueEntry{}, err
	}
	if err := q.Put(idKey(n), v); err != nil {
		return QueueEntry{}, err
	}
	s.putEvents(e.Events)
	return e, tx.Bucket(bucketQueueBody).Put(idKey(n), body)
}

// QueueEntries returns every queued entry in id order, without bodies.
func (s *Store) QueueEntries() ([]QueueEntry, error) {
	var out []QueueEntry
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueue).ForEach(func(k, v []byte) error {
			e, err := decodeQueueEntry(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("queue entries: %w", err)
	}
	return out, nil
}

// QueueLen returns how many messages are queued, without reading them.
func (s *Store) QueueLen() (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketQueue).Stats().KeyN
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("queue length: %w", err)
	}
	return n, nil
}

// QueueEntry returns one entry, or an error wrapping ErrNoQueueEntry.
func (s *Store) QueueEntry(id uint64) (QueueEntry, error) {
	var e QueueEntry
	err := s.view(func(tx *bolt.Tx) error {
		k := idKey(id)
		v := tx.Bucket(bucketQueue).Get(k)
		if v == nil {
			return fmt.Errorf("queue entry %d: %w", id, ErrNoQueueEntry)
		}
		var err error
		e, err = decodeQueueEntry(k, v)
		return err
	})
	return e, err
}

// QueueBody returns a copy of a queued message's bytes.
func (s *Store) QueueBody(id uint64) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketQueueBody).Get(idKey(id))
		if v == nil {
			return fmt.Errorf("queue body %d: %w", id, ErrNoQueueEntry)
		}
		// bbolt's slice dies with the transaction: copy it out.
		out = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	return out, err
}

// UpdateQueueEntry replaces an existing entry (matched by e.ID) and returns
// once the change is on disk. An entry dropped in the meantime is not
// recreated: the error wraps ErrNoQueueEntry.
func (s *Store) UpdateQueueEntry(e QueueEntry) error {
	// Marshal outside the transaction: update may run fn more than once.
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("queue entry %d: %w", e.ID, err)
	}
	return s.update(func(tx *bolt.Tx) error {
		q := tx.Bucket(bucketQueue)
		if q.Get(idKey(e.ID)) == nil {
			return fmt.Errorf("queue entry %d: %w", e.ID, ErrNoQueueEntry)
		}
		s.putEvents(e.Events)
		return q.Put(idKey(e.ID), v)
	})
}

// DeleteQueueEntry removes an entry and its body, writing events (trace
// events about why it goes) in the same transaction. A missing entry gives
// an error wrapping ErrNoQueueEntry, and no event is written.
func (s *Store) DeleteQueueEntry(id uint64, events ...Event) error {
	return s.update(func(tx *bolt.Tx) error {
		q := tx.Bucket(bucketQueue)
		if q.Get(idKey(id)) == nil {
			return fmt.Errorf("queue entry %d: %w", id, ErrNoQueueEntry)
		}
		s.putEvents(events)
		if err := q.Delete(idKey(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketQueueBody).Delete(idKey(id))
	})
}
