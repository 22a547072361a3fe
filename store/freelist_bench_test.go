package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

// BenchmarkAppendAfterChurn measures durable 4 KiB deliveries into a fresh
// store and into one where churnMiB of 1 MiB messages were stored and then
// deleted (a mailbox emptied by POP3), for each freelist setting bbolt
// offers. After churn, bbolt's freelist holds every freed page: the array
// freelist is written (and fsync'd) in full by each commit and searched
// linearly on each allocation. reopen_ms is the next Open, which rebuilds
// the freelist by scanning when it is not synced.
func BenchmarkAppendAfterChurn(b *testing.B) {
	churnMiB := benchChurnMiB()
	for _, fl := range []struct {
		name string
		freelistSettings
	}{
		{"array+sync", freelistSettings{kind: bolt.FreelistArrayType}},
		{"array+nosync", freelistSettings{kind: bolt.FreelistArrayType, noSync: true}},
		{"map+sync", freelistSettings{kind: bolt.FreelistMapType}},
		{"map+nosync", freelistSettings{kind: bolt.FreelistMapType, noSync: true}},
	} {
		for _, churn := range []int{0, churnMiB} {
			b.Run(fmt.Sprintf("%s/churn=%dMiB", fl.name, churn), func(b *testing.B) {
				dir := b.TempDir()
				opts := Options{BcryptCost: bcrypt.MinCost, freelist: &fl.freelistSettings}
				churnStore(b, dir, opts, churn)
				start := time.Now()
				s, err := Open(dir, opts)
				if err != nil {
					b.Fatal(err)
				}
				reopen := time.Since(start)
				defer s.Close()
				appendSmall(b, s)
				b.ReportMetric(float64(reopen.Microseconds())/1000, "reopen_ms")
				if fi, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
					b.ReportMetric(float64(fi.Size())/(1<<20), "file_MiB")
				}
			})
		}
	}
}

const benchAddr = "alice@example.org"

// benchChurnMiB is how much 1 MiB mail the churn benchmarks store and
// delete.
func benchChurnMiB() int {
	if testing.Short() {
		return 64
	}
	return 512
}

// churnStore creates a store in dir with one user, stores churnMiB of 1 MiB
// messages in it and deletes them all, as a POP3 client emptying its
// mailbox does, and closes it.
func churnStore(b *testing.B, dir string, opts Options, churnMiB int) {
	b.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.AddUser(benchAddr, "pw"); err != nil {
		b.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16)
	// Distinct slices: the same slice would be stored once.
	batch := make([]Delivery, 16)
	for i := range batch {
		batch[i] = Delivery{Address: benchAddr, Message: bytes.Clone(big)}
	}
	var stored []uint64
	for n := 0; n < churnMiB; n += len(batch) {
		ids, err := s.AppendMany(batch)
		if err != nil {
			b.Fatal(err)
		}
		stored = append(stored, ids...)
	}
	for len(stored) > 0 {
		n := min(len(stored), 64)
		if err := s.Delete(benchAddr, stored[:n]); err != nil {
			b.Fatal(err)
		}
		stored = stored[n:]
	}
}

// appendSmall is the measured loop: durable 4 KiB deliveries, one at a time.
func appendSmall(b *testing.B, s *Store) {
	b.Helper()
	small := bytes.Repeat([]byte("0123456789abcde\n"), 4096/16)
	b.SetBytes(int64(len(small)))
	start := time.Now()
	n := 0
	for b.Loop() {
		if _, err := s.Append(benchAddr, small); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(n), "ms/msg")
}
