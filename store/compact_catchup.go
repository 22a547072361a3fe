package store

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// catchUp brings dst, a write transaction of a copy made from an earlier
// snapshot of the store, up to cur, a read transaction of the store now,
// and feeds every entry of cur to sum in walk's order, for the check of
// the copy (the digest of dst, committed, must then equal sum). It is how
// an online compaction copies a snapshot while the store takes writes,
// and then makes writes wait only while it walks the two side by side.
//
// The copy is read and written in the one transaction, so that nothing
// holds bbolt's map while the commit may grow it. A bucket's own entries
// are changed once its walk is over (bbolt's cursors do not survive a
// change to their bucket); its sub-buckets are caught up as the walk
// reaches them, which leaves the parent's entries as they are until the
// commit.
func catchUp(cur, dst *bolt.Tx, sum *digester) error {
	f := &feed{sum: sum, rels: []*mapRelease{{db: cur.DB(), size: cur.Size()}, {db: dst.DB(), size: dst.Size()}}}
	return errCorrupt(func() error { return catchUpLevel(nil, dst, cur, nil, f) })
}

// feed takes cur's entries in walk's order: it sums them, and gives back
// the pages the walk read through the two maps as it goes (see
// mapRelease), as the copy's walk does.
type feed struct {
	sum  *digester
	rels []*mapRelease
}

func (f *feed) add(path [][]byte, k, v []byte, sub *bolt.Bucket) {
	f.sum.add(path, k, v, sub)
	for _, r := range f.rels {
		r.read(len(k) + len(v))
	}
}

// level is the entries of a bucket, or the buckets of a transaction.
type level interface {
	Cursor() *bolt.Cursor
	Bucket(name []byte) *bolt.Bucket
	CreateBucket(name []byte) (*bolt.Bucket, error)
	DeleteBucket(name []byte) error
}

// catchUpLevel brings the copy's level at path (dstB, the same as a
// bucket; nil for a transaction's) to cur's, merging the two in key order.
func catchUpLevel(path [][]byte, dst, cur level, dstB *bolt.Bucket, f *feed) error {
	var changes []func() error
	dc, cc := dst.Cursor(), cur.Cursor()
	dk, dv := dc.First()
	ck, cv := cc.First()
	for dk != nil || ck != nil {
		order := 0
		switch {
		case dk == nil:
			order = 1
		case ck == nil:
			order = -1
		default:
			order = bytes.Compare(dk, ck)
		}
		var err error
		switch {
		case order < 0: // deleted since the snapshot
			changes = append(changes, dropEntry(dst, dstB, dk, dv))
			dk, dv = dc.Next()
		case order > 0: // new since
			var add func() error
			if add, err = addEntry(path, cur, dst, dstB, ck, cv, f); err != nil {
				return catchUpFailed(path, ck, err)
			}
			changes = append(changes, add)
			ck, cv = cc.Next()
		default:
			var change func() error
			if change, err = updateEntry(path, dst, cur, dstB, ck, dv, cv, f); err != nil {
				return catchUpFailed(path, ck, err)
			}
			if change != nil {
				changes = append(changes, change)
			}
			dk, dv = dc.Next()
			ck, cv = cc.Next()
		}
	}
	for _, change := range changes {
		if err := change(); err != nil {
			return catchUpFailed(path, nil, err)
		}
	}
	return nil
}

// catchUpError names the entry a catch-up failed at.
type catchUpError struct {
	entry string
	err   error
}

func (e *catchUpError) Error() string { return "catch up " + e.entry + ": " + e.err.Error() }
func (e *catchUpError) Unwrap() error { return e.err }

// catchUpFailed names the entry k at path in err, unless a level below
// named its own already: the error names the deepest entry once, not
// every bucket on the way to it.
func catchUpFailed(path [][]byte, k []byte, err error) error {
	if _, named := errors.AsType[*catchUpError](err); named {
		return err
	}
	return &catchUpError{entry: entryName(path, k), err: err}
}

// entryName is the entry k at path, quoted; the bucket at path itself
// when k is nil.
func entryName(path [][]byte, k []byte) string {
	if k != nil {
		path = append(path[:len(path):len(path)], k)
	}
	return fmt.Sprintf("%q", bytes.Join(path, []byte("/")))
}

// subBucket returns the bucket under k at l, whose cursor gave v; nil for
// a value.
func subBucket(l level, k, v []byte) *bolt.Bucket {
	if v != nil {
		return nil
	}
	return l.Bucket(k)
}

// errNoValues: a transaction's level holds buckets only.
var errNoValues = errors.New("a value outside every bucket")

// dropEntry is the change that deletes the copy's entry k. The key is
// copied: the cursor's may not outlive the change before it.
func dropEntry(dst level, dstB *bolt.Bucket, k, v []byte) func() error {
	k = bytes.Clone(k)
	if subBucket(dst, k, v) != nil {
		return func() error { return dst.DeleteBucket(k) }
	}
	return func() error {
		if dstB == nil {
			return errNoValues
		}
		return dstB.Delete(k)
	}
}

// addEntry feeds cur's new entry k to sum and returns the change that
// puts it into the copy. cur's keys and values stay valid while cur is
// open, which is until the copy's commit.
func addEntry(path [][]byte, cur, dst level, dstB *bolt.Bucket, k, v []byte, f *feed) (func() error, error) {
	if cb := subBucket(cur, k, v); cb != nil {
		f.add(path, k, nil, cb)
		err := walkEntries(append(path, k), cb, func(path [][]byte, k, v []byte, sub *bolt.Bucket) error {
			f.add(path, k, v, sub)
			return nil
		})
		return func() error { return copyBucket(dst, k, cb) }, err
	}
	if v == nil {
		v = []byte{} // as walk has it
	}
	f.add(path, k, v, nil)
	return func() error {
		if dstB == nil {
			return errNoValues
		}
		return dstB.Put(k, v)
	}, nil
}

// updateEntry feeds cur's entry k, which the copy has too, to sum, catches
// up a bucket's entries at once, and returns the change to the entry
// itself, if any.
func updateEntry(path [][]byte, dst, cur level, dstB *bolt.Bucket, k, dv, cv []byte, f *feed) (func() error, error) {
	db, cb := subBucket(dst, k, dv), subBucket(cur, k, cv)
	switch {
	case db != nil && cb != nil:
		f.add(path, k, nil, cb)
		if db.Sequence() != cb.Sequence() {
			if err := db.SetSequence(cb.Sequence()); err != nil {
				return nil, err
			}
		}
		return nil, catchUpLevel(append(path, k), db, cb, db, f)
	case db == nil && cb == nil:
		if cv == nil {
			cv = []byte{}
		}
		f.add(path, k, cv, nil)
		if bytes.Equal(dv, cv) {
			return nil, nil
		}
		return func() error {
			if dstB == nil {
				return errNoValues
			}
			return dstB.Put(k, cv)
		}, nil
	}
	// A value became a bucket, or a bucket a value.
	drop := dropEntry(dst, dstB, k, dv)
	add, err := addEntry(path, cur, dst, dstB, k, cv, f)
	return func() error {
		if err := drop(); err != nil {
			return err
		}
		return add()
	}, err
}

// copyBucket creates the bucket k at parent as a copy of src.
func copyBucket(parent level, k []byte, src *bolt.Bucket) error {
	b, err := parent.CreateBucket(k)
	if err != nil {
		return err
	}
	if err := b.SetSequence(src.Sequence()); err != nil {
		return err
	}
	return src.ForEach(func(k, v []byte) error {
		if v == nil {
			if sub := src.Bucket(k); sub != nil {
				return copyBucket(b, k, sub)
			}
			v = []byte{}
		}
		return b.Put(k, v)
	})
}
