package store_test

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minimail/store"
)

// BenchmarkAppend measures durable deliveries of 4 KiB messages with 1 and 32
// concurrent writers. commits/msg shows the group commit at work: each commit
// costs the same fsyncs however many messages it carries.
func BenchmarkAppend(b *testing.B) {
	msg := bytes.Repeat([]byte("0123456789abcde\n"), 4096/16)
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := storeWithUsers(b, alice)
			b.SetBytes(int64(len(msg)))
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			before := s.Commits()
			start := time.Now()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := s.Append(alice, msg); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(s.Commits()-before)/float64(b.N), "commits/msg")
		})
	}
}

// BenchmarkList100k lists a mailbox of 100,000 messages (ids and sizes, as
// POP3 LIST and UIDL need). The mailbox is built once, in batches.
func BenchmarkList100k(b *testing.B) {
	const total, chunk = 100_000, 2_000
	s := storeWithUsers(b, alice)
	msg := bytes.Repeat([]byte("x"), 1024)
	ds := make([]store.Delivery, chunk)
	for i := range ds {
		ds[i] = store.Delivery{Address: alice, Message: msg}
	}
	for n := 0; n < total; n += chunk {
		if _, err := s.AppendMany(ds); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("messages=100000", func(b *testing.B) {
		start := time.Now()
		for i := 0; i < b.N; i++ {
			infos, err := s.List(alice)
			if err != nil {
				b.Fatal(err)
			}
			if len(infos) != total {
				b.Fatalf("listed %d messages, want %d", len(infos), total)
			}
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/op")
	})
}
