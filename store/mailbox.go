package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNoMessage means the id is not (or no longer) in the mailbox.
var ErrNoMessage = errors.New("no such message")

// MessageInfo describes a stored message without its body.
type MessageInfo struct {
	ID uint64
	// Size is the message size in octets exactly as stored (CRLF line
	// endings, before any dot-stuffing), which is what POP3 LIST reports.
	Size    int64
	Arrived time.Time
}

// Delivery is one message for one mailbox.
type Delivery struct {
	Address string // the user, as known to LookupUser
	Message []byte // CRLF line endings
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
	ids := make([]uint64, len(ds))
	now := time.Now().UTC()
	err := s.update(func(tx *bolt.Tx) error {
		mailboxes := tx.Bucket(bucketMailboxes)
		for i, d := range ds {
			mb := mailboxes.Bucket([]byte(Key(d.Address)))
			if mb == nil {
				return fmt.Errorf("%s: %w", d.Address, ErrNoUser)
			}
			id, err := mailboxes.NextSequence()
			if err != nil {
				return err
			}
			ids[i] = id
			info := encodeInfo(int64(len(d.Message)), now)
			if err := mb.Bucket(bucketIndex).Put(idKey(id), info); err != nil {
				return err
			}
			if err := mb.Bucket(bucketBody).Put(idKey(id), d.Message); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	return ids, nil
}

// List returns the messages in addr's mailbox in arrival order. It reads only
// the index, never message bodies.
func (s *Store) List(addr string) ([]MessageInfo, error) {
	var out []MessageInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMailboxes).Bucket([]byte(Key(addr)))
		if mb == nil {
			return fmt.Errorf("%s: %w", addr, ErrNoUser)
		}
		idx := mb.Bucket(bucketIndex)
		return idx.ForEach(func(k, v []byte) error {
			if len(v) != 16 || len(k) != 8 {
				return fmt.Errorf("message index entry %x: corrupt", k)
			}
			out = append(out, MessageInfo{
				ID:      keyID(k),
				Size:    int64(binary.BigEndian.Uint64(v)),
				Arrived: time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))).UTC(),
			})
			return nil
		})
	})
	return out, err
}

// Read returns a copy of one message's bytes.
func (s *Store) Read(addr string, id uint64) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMailboxes).Bucket([]byte(Key(addr)))
		if mb == nil {
			return fmt.Errorf("%s: %w", addr, ErrNoUser)
		}
		v := mb.Bucket(bucketBody).Get(idKey(id))
		if v == nil {
			return fmt.Errorf("message %d: %w", id, ErrNoMessage)
		}
		// bbolt's slice dies with the transaction: copy it out.
		out = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	return out, err
}

// Delete removes the given ids from addr's mailbox in one transaction. Ids
// already gone are ignored, so a retried delete is harmless.
func (s *Store) Delete(addr string, ids []uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMailboxes).Bucket([]byte(Key(addr)))
		if mb == nil {
			return fmt.Errorf("%s: %w", addr, ErrNoUser)
		}
		idx, body := mb.Bucket(bucketIndex), mb.Bucket(bucketBody)
		for _, id := range ids {
			if err := idx.Delete(idKey(id)); err != nil {
				return err
			}
			if err := body.Delete(idKey(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// encodeInfo packs an index entry: size and arrival time, 8 bytes each.
func encodeInfo(size int64, arrived time.Time) []byte {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, uint64(size))
	binary.BigEndian.PutUint64(v[8:], uint64(arrived.UnixNano()))
	return v
}
