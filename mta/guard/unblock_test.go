package guard_test

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"minimail/mta/guard"
)

// failure is one failed login of a scenario: from ip, after the clock has
// moved on by after.
type failure struct {
	ip    string
	after time.Duration
}

// failures repeats one address n times, a second apart.
func failures(addr string, n int) []failure {
	fs := make([]failure, n)
	for i := range fs {
		fs[i] = failure{addr, time.Second}
	}
	return fs
}

func replay(th *guard.AuthThrottle, c *clock, fs ...[]failure) {
	for _, f := range slices.Concat(fs...) {
		c.Advance(f.after)
		th.Fail(ip(f.ip))
	}
}

func TestAuthThrottle_BlocksListsWhatIsRefusedAndUntilWhen(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	type block struct {
		net      string
		failures int
		until    time.Time
	}
	tests := []struct {
		name     string
		failures []failure
		later    time.Duration // the clock moves on by this before Blocks
		want     []block
	}{
		{"nothing failed", nil, 0, nil},
		{"below the limit", failures("198.51.100.9", 2), 0, nil},
		{"an address at its limit, until its oldest failure leaves the window",
			failures("198.51.100.9", 3), 0,
			[]block{{"198.51.100.9/32", 3, at(time.Second + 10*time.Minute)}}},
		{"past the limit, until the failure that made the limit leaves the window",
			failures("198.51.100.9", 4), 0,
			[]block{{"198.51.100.9/32", 4, at(2*time.Second + 10*time.Minute)}}},
		{"a subnet of hosts each below their limit",
			slices.Concat(failures("198.51.100.1", 2), failures("198.51.100.2", 2), failures("198.51.100.3", 2)), 0,
			[]block{{"198.51.100.0/24", 6, at(time.Second + 10*time.Minute)}}},
		{"addresses before subnets, each in address order",
			slices.Concat(failures("203.0.113.5", 3), failures("2001:db8:1:2::1", 3), failures("198.51.100.7", 3), failures("198.51.100.8", 3)), 0,
			[]block{
				{"198.51.100.7/32", 3, at(7*time.Second + 10*time.Minute)},
				{"198.51.100.8/32", 3, at(10*time.Second + 10*time.Minute)},
				{"203.0.113.5/32", 3, at(time.Second + 10*time.Minute)},
				{"2001:db8:1:2::1/128", 3, at(4*time.Second + 10*time.Minute)},
				{"198.51.100.0/24", 6, at(7*time.Second + 10*time.Minute)},
			}},
		{"an IPv6 /64",
			[]failure{{"2001:db8::1", time.Second}, {"2001:db8::2", time.Second}, {"2001:db8::3", time.Second}, {"2001:db8::ffff", time.Second}, {"2001:db8::5", time.Second}, {"2001:db8::6", time.Second}}, 0,
			[]block{{"2001:db8::/64", 6, at(time.Second + 10*time.Minute)}}},
		{"the window has passed", failures("198.51.100.9", 3), 10 * time.Minute, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, c := newThrottle(3, 6, 10*time.Minute)
			replay(th, c, tt.failures)
			c.Advance(tt.later)
			var got []block
			for _, b := range th.Blocks() {
				got = append(got, block{b.Net.String(), b.Failures, b.Until})
				// What is listed is what Blocked refuses.
				if !th.Blocked(b.Net.Addr()) {
					t.Errorf("%v listed, but Blocked(%v) is false", b.Net, b.Net.Addr())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Blocks() =\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
}

func TestAuthThrottle_BlockEndsAtTheListedTime(t *testing.T) {
	th, c := newThrottle(3, 100, 10*time.Minute)
	a := ip("198.51.100.9")
	replay(th, c, failures("198.51.100.9", 5))
	blocks := th.Blocks()
	if len(blocks) != 1 {
		t.Fatalf("Blocks() = %v, want one", blocks)
	}
	c.Advance(blocks[0].Until.Sub(c.Now()) - time.Nanosecond)
	if !th.Blocked(a) {
		t.Fatal("unblocked before the listed time")
	}
	c.Advance(time.Nanosecond)
	if th.Blocked(a) || len(th.Blocks()) != 0 {
		t.Fatalf("still blocked at the listed time: %v", th.Blocks())
	}
}

func TestAuthThrottle_Unblock(t *testing.T) {
	tests := []struct {
		name        string
		failures    []failure
		target      string // an address, a prefix, or "all"
		wantCleared []string
		blocked     []string // still refused afterwards
		free        []string // accepted afterwards
	}{
		{"an address, and the subnet count it raised",
			slices.Concat(failures("198.51.100.1", 3), failures("198.51.100.2", 2)), "198.51.100.1",
			[]string{"198.51.100.1/32", "198.51.100.0/24"}, nil, []string{"198.51.100.1", "198.51.100.2"}},
		{"an address leaves other addresses blocked",
			slices.Concat(failures("198.51.100.1", 3), failures("203.0.113.1", 3)), "198.51.100.1",
			[]string{"198.51.100.1/32", "198.51.100.0/24"}, []string{"203.0.113.1"}, []string{"198.51.100.1"}},
		{"an address of a blocked subnet lifts the subnet block",
			slices.Concat(failures("198.51.100.1", 2), failures("198.51.100.2", 2), failures("198.51.100.3", 2)), "198.51.100.3",
			[]string{"198.51.100.3/32", "198.51.100.0/24"}, nil, []string{"198.51.100.1", "198.51.100.200"}},
		{"a subnet clears every address in it",
			slices.Concat(failures("198.51.100.1", 3), failures("198.51.100.2", 3), failures("198.51.101.1", 3)), "198.51.100.0/24",
			[]string{"198.51.100.1/32", "198.51.100.2/32", "198.51.100.0/24"}, []string{"198.51.101.1"}, []string{"198.51.100.1", "198.51.100.2"}},
		{"a subnet written with an address in it",
			failures("198.51.100.1", 3), "198.51.100.77/24",
			[]string{"198.51.100.1/32", "198.51.100.0/24"}, nil, []string{"198.51.100.1"}},
		{"a wider prefix clears the subnets in it",
			slices.Concat(failures("198.51.100.1", 3), failures("198.51.101.1", 3)), "198.51.0.0/16",
			[]string{"198.51.100.1/32", "198.51.101.1/32", "198.51.100.0/24", "198.51.101.0/24"}, nil, []string{"198.51.100.1", "198.51.101.1"}},
		{"the IPv4-mapped form of an address",
			failures("198.51.100.1", 3), "::ffff:198.51.100.1",
			[]string{"198.51.100.1/32", "198.51.100.0/24"}, nil, []string{"198.51.100.1"}},
		{"an IPv6 address and its /64",
			failures("2001:db8::1", 3), "2001:db8::1",
			[]string{"2001:db8::1/128", "2001:db8::/64"}, nil, []string{"2001:db8::1"}},
		{"an address with no failures clears nothing",
			failures("198.51.100.1", 3), "203.0.113.1",
			nil, []string{"198.51.100.1"}, []string{"203.0.113.1"}},
		{"all",
			slices.Concat(failures("198.51.100.1", 3), failures("2001:db8::1", 3), failures("203.0.113.1", 1)), "all",
			[]string{"198.51.100.1/32", "203.0.113.1/32", "2001:db8::1/128", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/64"},
			nil, []string{"198.51.100.1", "2001:db8::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, c := newThrottle(3, 6, 10*time.Minute)
			replay(th, c, tt.failures)
			var cleared []netip.Prefix
			switch {
			case tt.target == "all":
				cleared = th.UnblockAll()
			case strings.Contains(tt.target, "/"):
				cleared = th.Unblock(netip.MustParsePrefix(tt.target))
			default:
				a := ip(tt.target)
				cleared = th.Unblock(netip.PrefixFrom(a, a.BitLen()))
			}
			var got []string
			for _, p := range cleared {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tt.wantCleared) {
				t.Errorf("cleared %v, want %v", got, tt.wantCleared)
			}
			for _, a := range tt.blocked {
				if !th.Blocked(ip(a)) {
					t.Errorf("%s no longer blocked", a)
				}
			}
			for _, a := range tt.free {
				if th.Blocked(ip(a)) {
					t.Errorf("%s still blocked", a)
				}
			}
		})
	}
}

// TestAuthThrottle_UnblockedAddressStartsAFreshCount: the next block needs
// the full allowance of failures again, not one.
func TestAuthThrottle_UnblockedAddressStartsAFreshCount(t *testing.T) {
	th, c := newThrottle(3, 6, 10*time.Minute)
	replay(th, c, failures("198.51.100.1", 3), failures("198.51.100.2", 2))
	th.Unblock(netip.MustParsePrefix("198.51.100.1/32"))
	replay(th, c, failures("198.51.100.1", 2))
	if th.Blocked(ip("198.51.100.1")) {
		t.Fatal("blocked again after 2 failures, limit 3")
	}
	replay(th, c, failures("198.51.100.1", 1))
	if !th.Blocked(ip("198.51.100.1")) {
		t.Fatal("not blocked after 3 fresh failures")
	}
}

// TestAuthThrottle_UnblockKeepsPerUserDelays: the slowdown of a user name
// guessed from many addresses is no block, and survives an unblock.
func TestAuthThrottle_UnblockKeepsPerUserDelays(t *testing.T) {
	th, _ := newThrottle(1, 0, time.Hour)
	base := 10 * time.Millisecond
	th.FailureDelay("alice@example.test", base)
	th.UnblockAll()
	if got := th.FailureDelay("alice@example.test", base); got != time.Second {
		t.Fatalf("second failure after UnblockAll: delay %v, want 1s", got)
	}
}

func TestAuthThrottle_LogsEachBlockOnceWithItsReason(t *testing.T) {
	tests := []struct {
		name     string
		failures []failure
		want     []string
	}{
		{"below the limit", failures("198.51.100.1", 2), nil},
		{"an address", failures("198.51.100.1", 5), []string{
			`level=WARN msg=auth_blocked client=198.51.100.1 until=2025-01-01T00:10:01Z failures=3 reason="3 failed logins from this address within 10m0s"`,
		}},
		{"a subnet", slices.Concat(failures("198.51.100.1", 2), failures("198.51.100.2", 2), failures("198.51.100.3", 2), failures("198.51.100.4", 1)), []string{
			`level=WARN msg=auth_blocked client=198.51.100.3 until=2025-01-01T00:10:01Z failures=6 reason="6 failed logins from its subnet 198.51.100.0/24 within 10m0s"`,
		}},
		{"blocked again once the window has let it go", slices.Concat(failures("198.51.100.1", 3), []failure{{"198.51.100.1", 10*time.Minute - 2*time.Second}}), []string{
			`level=WARN msg=auth_blocked client=198.51.100.1 until=2025-01-01T00:10:01Z failures=3 reason="3 failed logins from this address within 10m0s"`,
			`level=WARN msg=auth_blocked client=198.51.100.1 until=2025-01-01T00:10:02Z failures=3 reason="3 failed logins from this address within 10m0s"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			th, c := newThrottle(3, 6, 10*time.Minute)
			th.Log = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}}))
			replay(th, c, tt.failures)
			got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			if buf.Len() == 0 {
				got = nil
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
