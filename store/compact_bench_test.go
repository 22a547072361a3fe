package store

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// BenchmarkAppendAfterCompaction compares durable 4 KiB deliveries into
// three stores: a fresh one, one where churnMiB of 1 MiB messages were
// stored and deleted (reopened), and that one compacted and reopened. Each
// iteration delivers one message to each store in turn, so the three share
// whatever else the machine does (fsync latency varies with it far more
// than between them); the metrics are each store's median and 90th
// percentile per message, the file sizes before and after compaction, and
// the time Compact took.
func BenchmarkAppendAfterCompaction(b *testing.B) {
	churnMiB := benchChurnMiB()
	opts := Options{BcryptCost: bcrypt.MinCost}
	type variant struct {
		name  string
		s     *Store
		took  []time.Duration
		churn int
	}
	variants := []*variant{{name: "fresh"}, {name: "churned", churn: churnMiB}, {name: "compacted", churn: churnMiB}}
	var before, after int64
	var compactTook time.Duration
	for _, v := range variants {
		dir := b.TempDir()
		churnStore(b, dir, opts, v.churn)
		if v.name == "compacted" {
			res, err := Compact(dir, CompactOptions{})
			if err != nil {
				b.Fatal(err)
			}
			before, after, compactTook = res.Before, res.After, res.Duration
		}
		s, err := Open(dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		v.s = s
	}
	small := bytes.Repeat([]byte("0123456789abcde\n"), 4096/16)
	b.SetBytes(int64(len(small)) * int64(len(variants)))
	for b.Loop() {
		for _, v := range variants {
			start := time.Now()
			if _, err := v.s.Append(benchAddr, small); err != nil {
				b.Fatal(err)
			}
			v.took = append(v.took, time.Since(start))
		}
	}
	for _, v := range variants {
		slices.Sort(v.took)
		ms := func(q float64) float64 { return float64(v.took[int(q*float64(len(v.took)-1))].Microseconds()) / 1000 }
		b.ReportMetric(ms(0.5), v.name+"_p50_ms")
		b.ReportMetric(ms(0.9), v.name+"_p90_ms")
	}
	b.ReportMetric(float64(before)/(1<<20), "before_MiB")
	b.ReportMetric(float64(after)/(1<<20), "after_MiB")
	b.ReportMetric(float64(compactTook.Microseconds())/1000, "compact_ms")
}
