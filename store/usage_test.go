package store

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// usageState reads addr's mailbox three ways: its stored running total
// (ok false when it has none), the sum of its index, and what Usage says.
func usageState(t *testing.T, s *Store, addr string) (stored int64, ok bool, summed, reported int64) {
	t.Helper()
	err := s.view(func(tx *bolt.Tx) error {
		mb, err := mailbox(tx, addr)
		if err != nil {
			return err
		}
		stored, ok = storedUsage(mb)
		summed, err = sumIndex(mb)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if reported, _, err = s.Usage(addr); err != nil {
		t.Fatal(err)
	}
	return stored, ok, summed, reported
}

// wantUsage fails unless addr's running total is there and equals the sum
// of its index and what Usage reports.
func wantUsage(t *testing.T, s *Store, addr, after string) {
	t.Helper()
	stored, ok, summed, reported := usageState(t, s, addr)
	if !ok || stored != summed || reported != summed {
		t.Fatalf("after %s, %s: running total %d (kept: %v), index sums to %d, Usage says %d", after, addr, stored, ok, summed, reported)
	}
}

// Every writer of a mailbox's index keeps its running total: appends of
// one copy and of copies sharing a body (each with its own head), deletions
// by Delete and by a POP3 session's QUIT (UpdateMaildrop), deletions of ids
// already gone, and big bodies beside small ones.
func TestUsage_KeptByEveryChange(t *testing.T) {
	s := openInternal(t, Options{})
	users := []string{"a@example.org", "b@example.org", "c@example.org"}
	for _, u := range users {
		if err := s.AddUser(u, "password-12345"); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	held := map[string][]uint64{}
	message := func() []byte {
		n := 1 + r.IntN(4000)
		if r.IntN(10) == 0 {
			n = 100<<10 + r.IntN(100<<10) // a big body, shared as such
		}
		return append([]byte("Subject: x\r\n\r\n"), bytes.Repeat([]byte("y"), n)...)
	}
	for step := range 300 {
		switch op := r.IntN(5); {
		case op <= 1: // one copy
			u := users[r.IntN(len(users))]
			ids, err := s.AppendMany([]Delivery{{Address: u, Header: []byte("Delivered-To: " + u + "\r\n"), Message: message()}})
			if err != nil {
				t.Fatal(err)
			}
			held[u] = append(held[u], ids...)
		case op == 2: // one message for every user, and twice for the first
			msg := message()
			ds := []Delivery{{Address: users[0], Message: msg}}
			for _, u := range users {
				ds = append(ds, Delivery{Address: u, Header: []byte("Delivered-To: " + u + "\r\n"), Message: msg})
			}
			ids, err := s.AppendMany(ds)
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range ds {
				held[d.Address] = append(held[d.Address], ids[i])
			}
		default: // some deleted, by either writer, with an id already gone among them
			u := users[r.IntN(len(users))]
			ids := held[u]
			r.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			n := r.IntN(len(ids) + 1)
			gone := append(ids[:n:n], 1<<40)
			held[u] = ids[n:]
			var err error
			if op == 3 {
				err = s.Delete(u, gone)
			} else {
				err = s.UpdateMaildrop(u, MaildropUpdate{Deleted: gone})
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, u := range users {
			if _, ok, _, _ := usageState(t, s, u); ok || len(held[u]) > 0 {
				wantUsage(t, s, u, fmt.Sprint("step ", step))
			}
		}
	}
	// The totals survive a reopen and a compaction (a copy of every key).
	dir := filepath.Dir(s.path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Compact(dir, CompactOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, u := range users {
		wantUsage(t, s, u, "a compaction")
	}
}

// A mailbox of a schema 5 file has no running total: Usage sums its index
// (and a quota is checked against the sum) until its first change writes
// the total, from the sum; from then on the total is kept.
func TestUsage_OlderSchemaMailboxIsSummedUntilItChanges(t *testing.T) {
	dir := t.TempDir()
	opts := Options{BcryptCost: 4}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	addr := "a@example.org"
	if err := s.AddUser(addr, "password-12345"); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for i := range 20 {
		id, err := s.Append(addr, bytes.Repeat([]byte("z"), 100*(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	_, _, want, _ := usageState(t, s, addr)
	s = asSchema(t, s, dir, opts, schemaV5, func(tx *bolt.Tx) error {
		mb, err := mailbox(tx, addr)
		if err != nil {
			return err
		}
		return mb.Delete(keyUsed)
	})
	wantCurrentSchema(t, s)
	stored, ok, summed, reported := usageState(t, s, addr)
	if ok || summed != want || reported != want {
		t.Fatalf("schema 5 mailbox after Open: total %d (kept: %v), index %d, Usage %d; want no total and %d", stored, ok, summed, reported, want)
	}
	if err := s.SetQuota(addr, want+50); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendMany([]Delivery{{Address: addr, Message: bytes.Repeat([]byte("q"), 51)}}); err == nil {
		t.Fatal("a message past the quota of a mailbox without a total was stored")
	}
	if _, err := s.Append(addr, []byte("small")); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, s, addr, "the first append")
	if err := s.Delete(addr, ids[:5]); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, s, addr, "a deletion")
}

// A damaged total (a short value, or one that a deletion would take below
// zero) is not believed: Usage sums the index, and the next change writes
// the sum.
func TestUsage_DamagedTotalIsSummedAgain(t *testing.T) {
	for name, damage := range map[string][]byte{
		"short":     {1, 2, 3},
		"too small": {0, 0, 0, 0, 0, 0, 0, 1},
		"negative":  {0xff, 0, 0, 0, 0, 0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			s := openInternal(t, Options{})
			addr := "a@example.org"
			if err := s.AddUser(addr, "password-12345"); err != nil {
				t.Fatal(err)
			}
			id, err := s.Append(addr, bytes.Repeat([]byte("z"), 1000))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Append(addr, bytes.Repeat([]byte("w"), 300)); err != nil {
				t.Fatal(err)
			}
			err = s.update(func(tx *bolt.Tx) error {
				mb, err := mailbox(tx, addr)
				if err != nil {
					return err
				}
				return mb.Put(keyUsed, damage)
			})
			if err != nil {
				t.Fatal(err)
			}
			if name != "too small" {
				if _, _, summed, reported := usageState(t, s, addr); reported != summed {
					t.Fatalf("Usage %d with a damaged total, index sums to %d", reported, summed)
				}
			}
			if err := s.Delete(addr, []uint64{id}); err != nil {
				t.Fatal(err)
			}
			wantUsage(t, s, addr, "a deletion")
		})
	}
}
