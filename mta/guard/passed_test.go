package guard

import (
	"net/netip"
	"testing"
	"time"
)

func TestPassed_RemembersForTTLOnly(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	p := &Passed{TTL: time.Hour, Now: func() time.Time { return now }}
	a := netip.MustParseAddr("192.0.2.1")
	if p.Has(a) {
		t.Fatal("an unknown client counts as passed")
	}
	p.Add(a)
	if !p.Has(a) || !p.Has(netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Fatal("a client that passed (also written as IPv4-mapped) is not remembered")
	}
	if p.Has(netip.MustParseAddr("192.0.2.2")) {
		t.Fatal("a neighbour counts as passed")
	}
	now = now.Add(time.Hour)
	if p.Has(a) {
		t.Fatal("a pass outlives its TTL")
	}
	var nilP *Passed
	nilP.Add(a)
	if nilP.Has(a) {
		t.Fatal("a nil Passed remembers")
	}
}

func TestPassed_BoundedInSize(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	p := &Passed{TTL: time.Hour, Max: 10, Now: func() time.Time { return now }}
	for i := range 5 {
		p.Add(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	now = now.Add(2 * time.Hour) // those five have expired
	for i := range 100 {
		p.Add(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
		if n := p.Len(); n > 10 {
			t.Fatalf("%d clients remembered, Max is 10", n)
		}
	}
	last := netip.AddrFrom4([4]byte{198, 51, 100, 99})
	if !p.Has(last) {
		t.Fatal("the newest pass was not kept")
	}
}
