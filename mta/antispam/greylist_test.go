package antispam_test

import (
	"net/netip"
	"testing"
	"time"

	"minimail/mta/antispam"
	"minimail/store"
)

func newGreylist(t *testing.T, delay time.Duration) (*antispam.Greylist, *time.Time, *store.Store) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return &antispam.Greylist{Delay: delay, Store: st, Now: func() time.Time { return now }}, &now, st
}

func TestGreylist_FirstTryWaitsThenTheTripletPasses(t *testing.T) {
	g, now, _ := newGreylist(t, 5*time.Minute)
	ip := netip.MustParseAddr("192.0.2.7")
	check := func(ip netip.Addr, from string, rcpts []string, want time.Duration) {
		t.Helper()
		got, err := g.Check(ip, from, rcpts, nil)
		if err != nil || got != want {
			t.Fatalf("Check(%s, %s, %v) at %s = %s, %v; want %s", ip, from, rcpts, now.Format(time.TimeOnly), got, err, want)
		}
	}
	check(ip, "bob@sender.test", []string{"alice@example.org"}, 5*time.Minute)
	*now = now.Add(2 * time.Minute)
	check(ip, "bob@sender.test", []string{"alice@example.org"}, 3*time.Minute) // retry too early
	*now = now.Add(3 * time.Minute)
	check(ip, "bob@sender.test", []string{"alice@example.org"}, 0)
	check(ip, "BOB@sender.test", []string{"Alice@example.org"}, 0)                                 // at once now
	check(netip.MustParseAddr("192.0.2.200"), "bob@sender.test", []string{"alice@example.org"}, 0) // same /24
	check(netip.MustParseAddr("198.51.100.7"), "bob@sender.test", []string{"alice@example.org"}, 5*time.Minute)
	check(ip, "", []string{"alice@example.org"}, 5*time.Minute)                                   // the null sender is its own
	check(ip, "bob@sender.test", []string{"alice@example.org", "bob@example.org"}, 5*time.Minute) // one new recipient
	// Remembered for 30 days after the last pass, then forgotten.
	*now = now.Add(29 * 24 * time.Hour)
	check(ip, "bob@sender.test", []string{"alice@example.org"}, 0)
	*now = now.Add(30*24*time.Hour + time.Second)
	check(ip, "bob@sender.test", []string{"alice@example.org"}, 5*time.Minute)
}

func TestGreylist_IPv6CountsThe64(t *testing.T) {
	g, _, _ := newGreylist(t, time.Minute)
	g.Delay = 0 // passes at once: what matters is that the key is shared
	if _, err := g.Check(netip.MustParseAddr("2001:db8:1:2::1"), "b@s.test", []string{"a@example.org"}, nil); err != nil {
		t.Fatal(err)
	}
	g.Delay = time.Minute
	if wait, _ := g.Check(netip.MustParseAddr("2001:db8:1:2:ffff::9"), "b@s.test", []string{"a@example.org"}, nil); wait != 0 {
		t.Fatalf("another address of the /64 waits %s", wait)
	}
	if wait, _ := g.Check(netip.MustParseAddr("2001:db8:1:3::1"), "b@s.test", []string{"a@example.org"}, nil); wait == 0 {
		t.Fatal("another /64 passed at once")
	}
}

// A sender that authenticated for a domain that delivered before skips
// greylisting, from any address.
func TestGreylist_KnownAuthenticatedDomainSkips(t *testing.T) {
	g, now, _ := newGreylist(t, 5*time.Minute)
	ip := netip.MustParseAddr("203.0.113.9")
	if wait, _ := g.Check(ip, "x@big.test", []string{"a@example.org"}, []string{"big.test"}); wait == 0 {
		t.Fatal("an unknown domain skipped greylisting")
	}
	if err := g.Delivered([]string{"big.test"}); err != nil {
		t.Fatal(err)
	}
	if wait, _ := g.Check(ip, "y@big.test", []string{"b@example.org"}, []string{"big.test"}); wait != 0 {
		t.Fatalf("a known authenticated domain waits %s", wait)
	}
	if wait, _ := g.Check(ip, "y@big.test", []string{"b@example.org"}, nil); wait == 0 {
		t.Fatal("the same sender, unauthenticated, skipped greylisting")
	}
	*now = now.Add(31 * 24 * time.Hour)
	if wait, _ := g.Check(ip, "z@big.test", []string{"c@example.org"}, []string{"big.test"}); wait == 0 {
		t.Fatal("a domain not seen for 31 days still skips")
	}
}

func TestGreylist_PruneDropsExpiredRecords(t *testing.T) {
	g, now, _ := newGreylist(t, time.Minute)
	ip := netip.MustParseAddr("192.0.2.7")
	g.Check(ip, "a@s.test", []string{"x@example.org"}, nil) // never retried
	g.Check(ip, "b@s.test", []string{"x@example.org"}, nil)
	*now = now.Add(2 * time.Minute)
	g.Check(ip, "b@s.test", []string{"x@example.org"}, nil) // passed
	*now = now.Add(3 * 24 * time.Hour)
	if n, err := g.Prune(*now); err != nil || n != 1 {
		t.Fatalf("Prune after 3 days = %d, %v; want the one never retried", n, err)
	}
	*now = now.Add(30 * 24 * time.Hour)
	if n, err := g.Prune(*now); err != nil || n != 1 {
		t.Fatalf("Prune after 33 days = %d, %v; want the passed one", n, err)
	}
}
