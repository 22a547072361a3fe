package mda_test

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"minimail/mda"
	"minimail/store"
)

// storeWithUsers opens a real store holding n users, u0@example.org and on.
func storeWithUsers(t testing.TB, n int) (*store.Store, []string) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rcpts := make([]string, n)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("u%d@example.org", i)
		if err := st.AddUser(rcpts[i], "pw"); err != nil {
			t.Fatal(err)
		}
	}
	return st, rcpts
}

// deliverAllocs delivers msg to every user of a fresh store and returns
// the bytes allocated meanwhile by the whole process (the store's committer
// included, where bbolt copies values into its pages).
func deliverAllocs(t *testing.T, recipients int, msg []byte) uint64 {
	st, rcpts := storeWithUsers(t, recipients)
	a := &mda.Agent{Mailboxes: st}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i, err := range a.Deliver("bob@b.test", rcpts, msg) {
		if err != nil {
			t.Fatalf("recipient %d: %v", i, err)
		}
	}
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDeliver_MemoryDoesNotGrowWithRecipients: a 1 MiB message for 100
// mailboxes costs a small multiple of one delivery, not 100 copies: each
// recipient adds its trace headers and index records, the body is shared.
func TestDeliver_MemoryDoesNotGrowWithRecipients(t *testing.T) {
	msg := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("0123456789abcdef0123456789abcd\r\n"), 1<<15)...)
	one := deliverAllocs(t, 1, msg)
	hundred := deliverAllocs(t, 100, msg)
	t.Logf("1 MiB message: %d bytes allocated for 1 recipient, %d for 100", one, hundred)
	if hundred > 4*one {
		t.Errorf("100 recipients allocated %d bytes, %.1f times one recipient's %d; want at most 4 times",
			hundred, float64(hundred)/float64(one), one)
	}
}

// BenchmarkDeliver delivers a 1 MiB message to 1 and to 100 mailboxes;
// B/op shows what the recipients add.
func BenchmarkDeliver(b *testing.B) {
	msg := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("0123456789abcdef0123456789abcd\r\n"), 1<<15)...)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("recipients=%d", n), func(b *testing.B) {
			st, rcpts := storeWithUsers(b, n)
			a := &mda.Agent{Mailboxes: st}
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				for _, err := range a.Deliver("bob@b.test", rcpts, msg) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// aliasSiteForAllocs is storeWithUsers plus n aliases a0..a(n-1)@example.org,
// each to its user, every other one also forwarding to a remote address.
func aliasSiteForAllocs(t testing.TB, n int) (*store.Store, []string) {
	st, users := storeWithUsers(t, n)
	aliases := make([]string, n)
	for i := range aliases {
		aliases[i] = fmt.Sprintf("a%d@example.org", i)
		targets := []string{users[i]}
		if i%2 == 0 {
			targets = append(targets, fmt.Sprintf("fwd%d@remote.test", i))
		}
		if _, err := st.AddAliasRemote(aliases[i], targets, func(a string) bool { return !bytes.HasSuffix([]byte(a), []byte("@example.org")) }); err != nil {
			t.Fatal(err)
		}
	}
	return st, aliases
}

// aliasAllocs delivers msg to n aliases of a fresh store (n mailboxes, n/2
// remote targets in one queue entry) and returns the bytes allocated.
func aliasAllocs(t *testing.T, n int, msg []byte) uint64 {
	st, aliases := aliasSiteForAllocs(t, n)
	a := &mda.Agent{Mailboxes: st, Domains: []string{"example.org"}}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i, err := range a.Deliver("", aliases, msg) {
		if err != nil {
			t.Fatalf("recipient %d: %v", i, err)
		}
	}
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDeliver_TenAliasesDoNotCostTenBodies: a 1 MiB message to 10 aliases
// (10 mailboxes and 5 forwarded addresses) allocates what two stored
// values cost (bbolt's page buffers take about 3 bodies for each large
// value: the mailboxes' shared body and the queue's), about 6 bodies. A
// copy of the body per recipient would add 10 bodies to that, so the
// bound of 10 cannot pass with them.
func TestDeliver_TenAliasesDoNotCostTenBodies(t *testing.T) {
	msg := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("0123456789abcdef0123456789abcd\r\n"), 1<<15)...)
	got := aliasAllocs(t, 10, msg)
	t.Logf("1 MiB message to 10 aliases: %d bytes allocated (%.1f bodies)", got, float64(got)/float64(len(msg)))
	if limit := uint64(10 * len(msg)); got > limit {
		t.Errorf("10 aliases allocated %d bytes, %.1f bodies; want fewer than 10", got, float64(got)/float64(len(msg)))
	}
}

// BenchmarkDeliverAliases is BenchmarkDeliver to 10 aliases, half of them
// forwarding (one queue entry for the 5 remote targets): B/op is about
// two stored values' worth, whatever the recipients. The queue entry is
// removed after each message, untimed, as the queue runner would: queued
// bodies share bbolt pages, and a queue that only grows would make every
// commit rewrite its neighbours.
func BenchmarkDeliverAliases(b *testing.B) {
	msg := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("0123456789abcdef0123456789abcd\r\n"), 1<<15)...)
	st, aliases := aliasSiteForAllocs(b, 10)
	a := &mda.Agent{Mailboxes: st, Domains: []string{"example.org"}}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for i := 0; i < b.N; i++ {
		for _, err := range a.Deliver("", aliases, msg) {
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		entries, err := st.QueueEntries()
		if err != nil || len(entries) != 1 {
			b.Fatalf("queue: %v, %v", entries, err)
		}
		if err := st.DeleteQueueEntry(entries[0].ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
