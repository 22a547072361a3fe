package store

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// entries lists everything in tx as walk visits it, one line an entry.
func entries(t *testing.T, db *bolt.DB) []string {
	t.Helper()
	var out []string
	err := db.View(func(tx *bolt.Tx) error {
		return walk(tx, func(path [][]byte, k, v []byte, sub *bolt.Bucket) error {
			p := string(bytes.Join(append(path[:len(path):len(path)], k), []byte("/")))
			if sub != nil {
				out = append(out, fmt.Sprintf("%s/ seq=%d", p, sub.Sequence()))
			} else {
				out = append(out, fmt.Sprintf("%s = %q", p, v))
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mutate makes n random changes to db, each in a transaction of its own
// (so that buckets are rewritten, or not, as a store's writes do): values
// put, changed and deleted, buckets created (big and inline), deleted and
// given a new sequence, a value turned into a bucket and back.
func mutate(t *testing.T, db *bolt.DB, r *rand.Rand, n int) {
	t.Helper()
	tops := []string{"mailboxes", "trace", "users", "queue"}
	for i := range n {
		err := db.Update(func(tx *bolt.Tx) error {
			top, err := tx.CreateBucketIfNotExists([]byte(tops[r.IntN(len(tops))]))
			if err != nil {
				return err
			}
			b := top
			if r.IntN(2) == 0 { // one level down, in one of a few buckets
				name := []byte(fmt.Sprintf("sub%d", r.IntN(6)))
				if b = top.Bucket(name); b == nil {
					if top.Get(name) != nil {
						return top.Delete(name) // a value where a bucket goes
					}
					if b, err = top.CreateBucket(name); err != nil {
						return err
					}
				}
			}
			k := []byte(fmt.Sprintf("k%03d", r.IntN(300)))
			switch op := r.IntN(10); {
			case op < 5:
				// Often as long as the value it replaces, never the same.
				v := fmt.Appendf(nil, "%04d%s", i, bytes.Repeat([]byte{'v'}, r.IntN(3)*200))
				if b.Bucket(k) != nil {
					return b.DeleteBucket(k)
				}
				return b.Put(k, v)
			case op < 7:
				if b.Bucket(k) != nil {
					return b.DeleteBucket(k)
				}
				return b.Delete(k)
			case op < 8:
				_, err := b.NextSequence()
				return err
			case op < 9:
				if b.Get(k) != nil && b.Bucket(k) == nil {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				inner, err := b.CreateBucketIfNotExists(k)
				if err != nil {
					return err
				}
				return inner.Put([]byte(fmt.Sprint(i)), []byte("x"))
			default: // a whole top bucket goes
				name := []byte(tops[r.IntN(len(tops))])
				if tx.Bucket(name) != nil && r.IntN(4) == 0 {
					return tx.DeleteBucket(name)
				}
				return nil
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A copy of a snapshot, caught up with the changes made since, holds what
// the store holds now, entry for entry; and the digest catchUp feeds is
// the digest of the store now.
func TestCatchUp_CopyOfASnapshotEndsEqualToTheStore(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			checkCatchUp(t, seed, 400, r.IntN(60)) // some runs: no change at all
		})
	}
}

// FuzzCatchUp runs checkCatchUp on other stores and other changes.
func FuzzCatchUp(f *testing.F) {
	f.Add(uint64(1), uint16(50), uint16(10))
	f.Add(uint64(2), uint16(0), uint16(30))
	f.Add(uint64(3), uint16(200), uint16(0))
	f.Fuzz(func(t *testing.T, seed uint64, before, after uint16) {
		checkCatchUp(t, seed, int(before%500), int(after%200))
	})
}

// checkCatchUp makes a store of before random changes, copies a snapshot
// of it, makes after more changes and catches the copy up.
func checkCatchUp(t *testing.T, seed uint64, before, after int) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 11))
	dir := t.TempDir()
	src, err := bolt.Open(filepath.Join(dir, "src.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	mutate(t, src, r, before)
	snap, err := src.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := createCopy(filepath.Join(dir, "dst.db"), 1<<20, 0)
	if err != nil {
		snap.Rollback()
		t.Fatal(err)
	}
	defer dst.Close()
	_, err = copySnapshot(snap, dst, nil, func(compactStep, int) {}, nil)
	snap.Rollback() // the store's map may grow now
	if err != nil {
		t.Fatal(err)
	}
	mutate(t, src, r, after)

	cur, err := src.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Rollback()
	hseed := maphash.MakeSeed()
	want := newDigester(hseed)
	tx, err := dst.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := catchUp(cur, tx, want); err != nil {
		tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, want := entries(t, dst), entries(t, src); !slices.Equal(got, want) {
		t.Fatalf("copy after catching up differs:\n%s", diffLines(got, want))
	}
	got, err := digest(dst, newDigester(hseed))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.sum()) {
		t.Error("catchUp's digest is not the digest of the store it caught up with")
	}
}

// diffLines shows the first lines where got and want part.
func diffLines(got, want []string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	end := func(l []string) []string { return l[i:min(len(l), i+5)] }
	return fmt.Sprintf("at line %d\ngot:  %s\nwant: %s", i, strings.Join(end(got), " | "), strings.Join(end(want), " | "))
}

// A catch-up that fails deep in the tree names the entry it failed at
// once, not again for every bucket on the way to it.
func TestCatchUp_FailureNamesTheEntryOnce(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *bolt.DB {
		db, err := bolt.Open(filepath.Join(dir, name), 0o600, &bolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	src, dst := open("src.db"), open("dst.db")
	for _, db := range []*bolt.DB{src, dst} {
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("trace"))
			if err == nil {
				_, err = b.CreateBucket([]byte("runs"))
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// New in the store since the copy: a value two buckets down.
	if err := src.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("trace")).Bucket([]byte("runs")).Put([]byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	cur, err := src.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Rollback()
	// A copy that takes no writes fails at the first change.
	tx, err := dst.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	err = catchUp(cur, tx, newDigester(maphash.MakeSeed()))
	if want := `catch up "trace/runs": ` + bolt.ErrTxNotWritable.Error(); err == nil || err.Error() != want || !errors.Is(err, bolt.ErrTxNotWritable) {
		t.Errorf("catchUp = %v, want %s", err, want)
	}
}
