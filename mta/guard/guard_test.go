package guard_test

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"minimail/mta/guard"
)

func tcp(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000} }

// step is one Acquire or release in a ConnLimiter scenario.
type step struct {
	acquire string // client IP to acquire for, or ""
	release int    // 1-based index of an earlier acquire to release, or 0
	wantOK  bool   // for acquire
}

func TestConnLimiter(t *testing.T) {
	tests := []struct {
		name          string
		max, maxPerIP int
		steps         []step
	}{
		{"total limit", 2, 0, []step{
			{acquire: "10.0.0.1", wantOK: true},
			{acquire: "10.0.0.2", wantOK: true},
			{acquire: "10.0.0.3", wantOK: false},
			{release: 1},
			{acquire: "10.0.0.3", wantOK: true},
			{acquire: "10.0.0.4", wantOK: false},
		}},
		{"per-IP limit leaves other IPs alone", 0, 2, []step{
			{acquire: "10.0.0.1", wantOK: true},
			{acquire: "10.0.0.1", wantOK: true},
			{acquire: "10.0.0.1", wantOK: false},
			{acquire: "10.0.0.2", wantOK: true},
			{release: 2},
			{acquire: "10.0.0.1", wantOK: true},
			{acquire: "10.0.0.1", wantOK: false},
		}},
		{"both limits", 3, 2, []step{
			{acquire: "10.0.0.1", wantOK: true},
			{acquire: "10.0.0.1", wantOK: true},
			{acquire: "10.0.0.1", wantOK: false},
			{acquire: "10.0.0.2", wantOK: true},
			{acquire: "10.0.0.3", wantOK: false},
		}},
		{"double release frees one slot", 1, 0, []step{
			{acquire: "10.0.0.1", wantOK: true},
			{release: 1},
			{release: 1},
			{acquire: "10.0.0.1", wantOK: true},
			{acquire: "10.0.0.2", wantOK: false},
		}},
		{"double release per IP", 0, 1, []step{
			{acquire: "10.0.0.1", wantOK: true},
			{release: 1},
			{release: 1},
			{acquire: "10.0.0.1", wantOK: true},
			{acquire: "10.0.0.1", wantOK: false},
		}},
		{"IPv4-mapped IPv6 is the same client", 0, 1, []step{
			{acquire: "192.0.2.7", wantOK: true},
			{acquire: "::ffff:192.0.2.7", wantOK: false},
		}},
		{"IPv6 per address", 0, 1, []step{
			{acquire: "2001:db8::1", wantOK: true},
			{acquire: "2001:db8::1", wantOK: false},
			{acquire: "2001:db8::2", wantOK: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &guard.ConnLimiter{Max: tt.max, MaxPerIP: tt.maxPerIP}
			var releases []func()
			for i, s := range tt.steps {
				if s.release > 0 {
					releases[s.release-1]()
					continue
				}
				release, ok := l.Acquire(tcp(s.acquire))
				if ok != s.wantOK {
					t.Fatalf("step %d: Acquire(%s) ok = %v, want %v", i+1, s.acquire, ok, s.wantOK)
				}
				if ok == (release == nil) {
					t.Fatalf("step %d: ok %v with release %v", i+1, ok, release != nil)
				}
				releases = append(releases, release)
			}
		})
	}
}

func TestConnLimiter_ZeroIsUnlimited(t *testing.T) {
	var l guard.ConnLimiter
	for i := 0; i < 1000; i++ {
		if _, ok := l.Acquire(tcp("10.0.0.1")); !ok {
			t.Fatalf("zero ConnLimiter refused connection %d", i+1)
		}
	}
}

// TestConnLimiter_Concurrent: slots taken and given back from many
// goroutines leave the limiter empty.
func TestConnLimiter_Concurrent(t *testing.T) {
	l := &guard.ConnLimiter{Max: 8, MaxPerIP: 3}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := tcp(fmt.Sprintf("10.0.0.%d", g%4))
			for i := 0; i < 200; i++ {
				if release, ok := l.Acquire(addr); ok {
					release()
					release()
				}
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 8; i++ {
		if _, ok := l.Acquire(tcp(fmt.Sprintf("10.1.0.%d", i))); !ok {
			t.Fatalf("after all releases, slot %d of 8 refused", i+1)
		}
	}
}

func TestIP_RealConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	if got := guard.IP(sc.RemoteAddr()); got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("IP(%v) = %v, want 127.0.0.1", sc.RemoteAddr(), got)
	}
}

func TestIP(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want netip.Addr
	}{
		{tcp("192.0.2.1"), netip.MustParseAddr("192.0.2.1")},
		{tcp("::ffff:192.0.2.1"), netip.MustParseAddr("192.0.2.1")},
		{tcp("2001:db8::1"), netip.MustParseAddr("2001:db8::1")},
		{&net.UDPAddr{IP: net.ParseIP("192.0.2.2"), Port: 1}, netip.MustParseAddr("192.0.2.2")},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, netip.Addr{}},
	}
	for _, tt := range tests {
		if got := guard.IP(tt.addr); got != tt.want {
			t.Errorf("IP(%v) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestSubnet(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"192.0.2.77", "192.0.2.0/24"},
		{"::ffff:192.0.2.77", "192.0.2.0/24"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"},
	}
	for _, tt := range tests {
		if got := guard.Subnet(netip.MustParseAddr(tt.ip)); got != netip.MustParsePrefix(tt.want) {
			t.Errorf("Subnet(%s) = %v, want %s", tt.ip, got, tt.want)
		}
	}
}

// clock is a settable time source for AuthThrottle.Now.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time          { return c.t }
func (c *clock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func newThrottle(perIP, perSubnet int, window time.Duration) (*guard.AuthThrottle, *clock) {
	c := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	return &guard.AuthThrottle{MaxPerIP: perIP, MaxPerSubnet: perSubnet, Window: window, Now: c.Now}, c
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestAuthThrottle_BlocksAfterMaxPerIP(t *testing.T) {
	tests := []struct {
		name      string
		perIP     int
		wantLimit int
	}{
		{"configured", 3, 3},
		{"default", 0, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, _ := newThrottle(tt.perIP, 0, time.Minute)
			attacker := ip("198.51.100.9")
			for i := 0; i < tt.wantLimit; i++ {
				if th.Blocked(attacker) {
					t.Fatalf("blocked after %d failures, limit %d", i, tt.wantLimit)
				}
				th.Fail(attacker)
			}
			if !th.Blocked(attacker) {
				t.Fatalf("not blocked after %d failures", tt.wantLimit)
			}
			if th.Blocked(ip("203.0.113.1")) {
				t.Error("an unrelated client is blocked")
			}
		})
	}
}

func TestAuthThrottle_SubnetLimitCatchesManyIPs(t *testing.T) {
	th, _ := newThrottle(3, 6, time.Minute)
	// Six hosts of one /24, each below its own limit.
	for i := 1; i <= 6; i++ {
		a := ip(fmt.Sprintf("198.51.100.%d", i))
		if th.Blocked(a) {
			t.Fatalf("host %d blocked before the subnet reached its limit", i)
		}
		th.Fail(a)
	}
	if !th.Blocked(ip("198.51.100.200")) {
		t.Error("a fresh host in the same /24 is not blocked after 6 failures from the subnet")
	}
	if th.Blocked(ip("198.51.101.1")) {
		t.Error("the neighbouring /24 is blocked")
	}
}

func TestAuthThrottle_IPv6GroupedBy64(t *testing.T) {
	th, _ := newThrottle(2, 4, time.Minute)
	for i := 1; i <= 4; i++ {
		th.Fail(ip(fmt.Sprintf("2001:db8:1:2::%x", i)))
	}
	tests := []struct {
		ip      string
		blocked bool
	}{
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", true}, // same /64
		{"2001:db8:1:3::1", false},                 // next /64
		{"2001:db8:1:2::1", true},
	}
	for _, tt := range tests {
		if got := th.Blocked(ip(tt.ip)); got != tt.blocked {
			t.Errorf("Blocked(%s) = %v, want %v", tt.ip, got, tt.blocked)
		}
	}
}

func TestAuthThrottle_IPv4MappedCountsAsIPv4(t *testing.T) {
	th, _ := newThrottle(2, 100, time.Minute)
	th.Fail(ip("::ffff:192.0.2.1"))
	th.Fail(ip("192.0.2.1"))
	if !th.Blocked(ip("192.0.2.1")) || !th.Blocked(ip("::ffff:192.0.2.1")) {
		t.Error("mapped and plain forms of one IPv4 address counted apart")
	}
	// Mapped addresses from different /24s must not share a subnet count.
	th2, _ := newThrottle(100, 2, time.Minute)
	th2.Fail(ip("::ffff:192.0.2.1"))
	th2.Fail(ip("::ffff:203.0.113.1"))
	if th2.Blocked(ip("::ffff:198.51.100.1")) {
		t.Error("IPv4-mapped clients from different /24s share one subnet")
	}
}

func TestAuthThrottle_WindowExpiry(t *testing.T) {
	th, c := newThrottle(3, 0, 10*time.Minute)
	a := ip("198.51.100.9")
	th.Fail(a) // t=0
	c.Advance(time.Minute)
	th.Fail(a) // t=1m
	c.Advance(time.Minute)
	th.Fail(a) // t=2m
	if !th.Blocked(a) {
		t.Fatal("not blocked after 3 failures")
	}
	c.Advance(8*time.Minute - time.Nanosecond) // just before the first expires
	if !th.Blocked(a) {
		t.Error("unblocked before the window passed")
	}
	c.Advance(time.Nanosecond) // t=10m: the first failure leaves the window
	if th.Blocked(a) {
		t.Error("still blocked once the oldest failure left the window")
	}
	th.Fail(a) // two still in the window plus this one
	if !th.Blocked(a) {
		t.Error("sliding window: not blocked again after a new failure")
	}
	c.Advance(time.Hour)
	if th.Blocked(a) {
		t.Error("blocked an hour after the last failure")
	}
}

func TestFailureDelayGrowsPerUserButNeverBlocks(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	th := &guard.AuthThrottle{MaxPerIP: 3, Window: time.Minute, MaxDelay: 8 * time.Second, Now: func() time.Time { return now }}
	base := 100 * time.Millisecond
	want := []time.Duration{base, base, base, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i, w := range want {
		user := "Alice@Example.test"
		if i%2 == 1 {
			user = "alice@example.test" // the same user in another case
		}
		if got := th.FailureDelay(user, base); got != w {
			t.Fatalf("failure %d: delay %v, want %v", i+1, got, w)
		}
	}
	if got := th.FailureDelay("bob@example.test", base); got != base {
		t.Fatalf("another user's delay %v, want %v", got, base)
	}
	// A user's failures never block an IP that did nothing wrong.
	if th.Blocked(netip.MustParseAddr("192.0.2.7")) {
		t.Fatal("per-user failures blocked an innocent IP")
	}
	now = now.Add(time.Minute)
	if got := th.FailureDelay("alice@example.test", base); got != base {
		t.Fatalf("after the window: delay %v, want %v", got, base)
	}
}

// TestFailureDelay_NamesLongerThanAnAddressShareOneCount: a name over 254
// octets is no address, so changing its tail must not buy a fresh delay.
func TestFailureDelay_NamesLongerThanAnAddressShareOneCount(t *testing.T) {
	th, _ := newThrottle(1, 0, time.Minute)
	long := strings.Repeat("a", 300) + "@example.test"
	base := 10 * time.Millisecond
	for i, want := range []time.Duration{base, time.Second, 2 * time.Second} {
		if got := th.FailureDelay(fmt.Sprintf("%s%d", long, i), base); got != want {
			t.Fatalf("failure %d: delay %v, want %v", i+1, got, want)
		}
	}
	if got := th.FailureDelay("", base); got != 4*time.Second {
		t.Fatalf(`"" (a name that is no address): delay %v, want the shared count's 4s`, got)
	}
}

// TestFailureDelay_ForgetsTheUserThatFailedLeastRecently: with MaxTracked
// names, a new name evicts the stalest one, and a name that keeps failing
// keeps its count.
func TestFailureDelay_ForgetsTheUserThatFailedLeastRecently(t *testing.T) {
	th, c := newThrottle(1, 0, time.Hour)
	th.MaxTracked = 3
	base := 10 * time.Millisecond
	fail := func(user string, want time.Duration) {
		t.Helper()
		c.Advance(time.Second)
		if got := th.FailureDelay(user, base); got != want {
			t.Fatalf("FailureDelay(%s) = %v, want %v", user, got, want)
		}
	}
	fail("a@x.test", base)
	fail("b@x.test", base)
	fail("c@x.test", base)
	fail("a@x.test", time.Second) // a is now the freshest
	fail("d@x.test", base)        // evicts b
	fail("b@x.test", base)        // b starts again, evicting c
	fail("a@x.test", 2*time.Second)
	fail("d@x.test", time.Second)
}

// TestAuthThrottle_MemoryBoundedForHugeNames: a thousand failures, each for
// a different 45 KB name, once held 96 MB; the throttle now keeps no more
// than the first 254 octets' worth of any of them.
func TestAuthThrottle_MemoryBoundedForHugeNames(t *testing.T) {
	th, _ := newThrottle(5, 0, time.Hour)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("%d%s@example.test", i, strings.Repeat("x", 45<<10))
		th.FailureDelay(name, 0)
	}
	for i := 0; i < 30000; i++ {
		th.FailureDelay(fmt.Sprintf("user%d@example.test", i), 0)
		th.Fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	after := heap()
	runtime.KeepAlive(th)
	// 3 tables of 10000 keys, each with one failure: a few MB. The names
	// alone would be 45 MB.
	if grown := int64(after) - int64(before); grown > 16<<20 {
		t.Fatalf("throttle holds %d MB after hostile names", grown>>20)
	}
}

func TestPause(t *testing.T) {
	t.Run("Sleep sees the delay instead of a timer", func(t *testing.T) {
		var got []time.Duration
		th := &guard.AuthThrottle{Sleep: func(d time.Duration, _ <-chan struct{}) { got = append(got, d) }}
		th.Pause(time.Hour, nil)
		th.Pause(0, nil) // no delay: Sleep is not asked
		if len(got) != 1 || got[0] != time.Hour {
			t.Fatalf("Sleep called with %v, want [1h]", got)
		}
	})
	t.Run("a closed cancel ends the wait", func(t *testing.T) {
		cancel := make(chan struct{})
		close(cancel)
		done := make(chan struct{})
		go func() {
			(&guard.AuthThrottle{}).Pause(time.Hour, cancel)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Pause ignored its cancel channel")
		}
	})
}
