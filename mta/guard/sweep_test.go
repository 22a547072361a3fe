package guard

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestAuthThrottle_ForgetsClientsThatNeverReturn: an attacker rotating
// through many addresses must not grow the throttle's memory without bound.
func TestAuthThrottle_ForgetsClientsThatNeverReturn(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	th := &AuthThrottle{Window: time.Minute, Now: func() time.Time { return now }}
	for i := 0; i < 1000; i++ {
		th.Fail(netip.MustParseAddr(fmt.Sprintf("2001:db8:%x::1", i)))
	}
	if th.byIP.len() != 1000 || th.bySubnet.len() != 1000 {
		t.Fatalf("sanity: %d IPs, %d subnets tracked", th.byIP.len(), th.bySubnet.len())
	}
	now = now.Add(time.Minute)
	th.Fail(netip.MustParseAddr("192.0.2.1"))
	if th.byIP.len() != 1 || th.bySubnet.len() != 1 {
		t.Errorf("a window later, %d IPs and %d subnets still tracked, want 1 each", th.byIP.len(), th.bySubnet.len())
	}
}
