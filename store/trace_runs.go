package store

import (
	"bytes"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// The trace index is written in runs (schema 7). Its keys are random (ids,
// Message-IDs, recipients): put among those of every earlier event, one
// pass of the queue's runner (5,000 events) rewrote most of the index's
// pages, 4,254 of them and 68 MB of garbage for a trace of 100,000
// messages, 115 ms holding the store's one writer (BenchmarkIndexTrace,
// before). So each pass sorts its keys and adds them to the newest run,
// a bucket of its own, while that holds fewer than runMaxKeys; otherwise
// it starts a new one, filled in key order, whole pages at a time. A pass
// then writes about the pages its own keys take, whatever the size of
// the trace; a lookup seeks once per run, a few dozen at the benchmark's
// rates and one or two on a small domain's server.
//
// A run is named by the number of its first event, and holds the keys of
// the events from there to the next run's first: runs follow the events'
// order, which is what lookups rely on to list a message's events oldest
// first. Its sequence counts the keys put in it. The flat index of schema 6
// and before (the index bucket) holds the events before the first run:
// read and pruned like a run, never written.
var bucketTraceRuns = []byte("runs")

// runMaxKeys is how many keys a run takes before the next pass starts
// another: the pages of a pass that adds its keys to the newest run are at
// most that run's, about 700 for 32,768 keys (half-full pages, keys of
// about 45 octets), against 140 for a run of its own.
const runMaxKeys = 1 << 15

// indexRuns lists the buckets the index keys are in: the flat index of
// older schemas, then the runs, oldest first. A file of an older schema
// opened read-only has no runs yet.
func indexRuns(root *bolt.Bucket) []*bolt.Bucket {
	out := []*bolt.Bucket{root.Bucket(bucketTraceIndex)}
	runs := root.Bucket(bucketTraceRuns)
	if runs == nil {
		return out
	}
	c := runs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			out = append(out, runs.Bucket(k))
		}
	}
	return out
}

// runOf returns the bucket that holds the index keys of event n, its
// name in the runs bucket (nil for the flat index of older schemas), and
// the first event of the next run (none: the largest number).
func runOf(root *bolt.Bucket, n uint64) (run *bolt.Bucket, name []byte, end uint64) {
	run, end = root.Bucket(bucketTraceIndex), ^uint64(0)
	runs := root.Bucket(bucketTraceRuns)
	if runs == nil {
		return run, nil, end
	}
	c := runs.Cursor()
	var k, v []byte
	if next, _ := c.Seek(idKey(n + 1)); next != nil {
		end = keyID(next)
		k, v = c.Prev()
	} else {
		k, v = c.Last()
	}
	// The last run that begins at n or before, if any.
	if k != nil && v == nil {
		return runs.Bucket(k), k, end
	}
	return run, nil, end
}

// addRun puts keys, those of the events from number first on, into the
// newest run, or into a new one named first when the newest has no room
// for them.
func addRun(root *bolt.Bucket, first uint64, keys []traceKey) error {
	if len(keys) == 0 {
		return nil
	}
	slices.SortFunc(keys, func(a, b traceKey) int { return bytes.Compare(a.key, b.key) })
	runs := root.Bucket(bucketTraceRuns)
	var run *bolt.Bucket
	if k, v := runs.Cursor().Last(); k != nil && v == nil {
		if r := runs.Bucket(k); r.Sequence()+uint64(len(keys)) <= runMaxKeys {
			run = r
		}
	}
	if run == nil {
		var err error
		if run, err = runs.CreateBucket(idKey(first)); err != nil {
			return err
		}
		// In key order into an empty bucket: pages are filled whole.
		run.FillPercent = 1.0
	}
	for _, ik := range keys {
		if err := run.Put(ik.key, ik.value); err != nil {
			return err
		}
	}
	return run.SetSequence(run.Sequence() + uint64(len(keys)))
}

// runWalk finds the runs of the events pruning deletes, oldest first, and
// drops each run it leaves empty.
type runWalk struct {
	root *bolt.Bucket
	run  *bolt.Bucket // the run of the last event asked for
	name []byte       // its name; nil for the flat index of older schemas
	end  uint64       // the first event of the next run
}

// at returns the bucket that holds the keys of event n, which is never
// below the number asked for before.
func (w *runWalk) at(n uint64) (*bolt.Bucket, error) {
	if w.run != nil && n < w.end {
		return w.run, nil
	}
	if err := w.done(); err != nil {
		return nil, err
	}
	w.run, w.name, w.end = runOf(w.root, n)
	return w.run, nil
}

// done drops the run of the last event asked for if it is empty now; the
// flat index stays, empty or not.
func (w *runWalk) done() error {
	if w.run == nil || w.name == nil {
		return nil
	}
	if k, _ := w.run.Cursor().First(); k != nil {
		return nil
	}
	return w.root.Bucket(bucketTraceRuns).DeleteBucket(w.name)
}

// eachIndexed calls fn with the event number and value of every index
// key that is p and an event number, in runs (indexRuns) oldest first (a
// longer key that merely starts with p is not one), until fn fails.
func eachIndexed(runs []*bolt.Bucket, p []byte, fn func(n uint64, v []byte) error) error {
	for _, run := range runs {
		c := run.Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if len(k) != len(p)+8 {
				continue
			}
			if err := fn(keyID(k[len(p):]), v); err != nil {
				return err
			}
		}
	}
	return nil
}

// getIndexed is the value of the index key k, in whichever run holds it.
func getIndexed(runs []*bolt.Bucket, k []byte) []byte {
	for _, run := range runs {
		if v := run.Get(k); v != nil {
			return v
		}
	}
	return nil
}
