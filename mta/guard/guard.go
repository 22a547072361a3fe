// Package guard holds the per-connection defences shared by the SMTP and
// POP3 listeners: a limit on concurrent connections (in total and per client
// IP) and a throttle on failed logins (per IP and per subnet, never per user,
// so an attacker cannot lock a real user out of their own mailbox).
package guard

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ConnLimiter bounds concurrent connections.
type ConnLimiter struct {
	Max      int // total; 0 = unlimited
	MaxPerIP int // per client IP; 0 = unlimited

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

// Acquire takes a slot for a connection from addr. It returns false when a
// limit is reached; otherwise release must be called once when the
// connection ends.
func (l *ConnLimiter) Acquire(addr net.Addr) (release func(), ok bool) {
	ip := IP(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byIP == nil {
		l.byIP = map[netip.Addr]int{}
	}
	if (l.Max > 0 && l.total >= l.Max) || (l.MaxPerIP > 0 && l.byIP[ip] >= l.MaxPerIP) {
		return nil, false
	}
	l.total++
	l.byIP[ip]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.byIP[ip]--; l.byIP[ip] <= 0 {
				delete(l.byIP, ip)
			}
		})
	}, true
}

// IP returns the client IP of a connection address (unmapped), or the zero
// Addr for non-IP addresses.
func IP(addr net.Addr) netip.Addr {
	if a, ok := addr.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// Subnet is the network a client is counted with: /24 for IPv4, /64 for
// IPv6, the sizes one attacker typically controls.
func Subnet(ip netip.Addr) netip.Prefix {
	// An IPv4-mapped address would otherwise fall in ::ffff:0:0/64 with
	// every other IPv4 client.
	ip = ip.Unmap()
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}

// AuthThrottle counts failed logins in a sliding window. After MaxPerIP
// failures from one IP, or MaxPerSubnet from its subnet, further attempts
// from there are refused until Window has passed since the oldest counted
// failure.
//
// Failures are also counted per user name, but a user is never refused:
// that would let anyone lock the owner out. Instead FailureDelay makes each
// further wrong password for that name wait longer, which slows a guesser
// spread over many addresses while the owner, who knows the password, logs
// in at once.
type AuthThrottle struct {
	MaxPerIP     int           // 0 = 5
	MaxPerSubnet int           // 0 = 4 * MaxPerIP
	Window       time.Duration // 0 = 15 minutes
	MaxDelay     time.Duration // cap of FailureDelay; 0 = 30 seconds
	Now          func() time.Time

	mu        sync.Mutex
	byIP      map[netip.Addr][]time.Time
	bySubnet  map[netip.Prefix][]time.Time
	byUser    map[string][]time.Time
	lastSweep time.Time
}

// FailureDelay records a wrong password for user (any case) and returns how
// long to wait before answering it: base for a user's first MaxPerIP
// failures in the window, then doubling with each further one, up to
// MaxDelay.
func (t *AuthThrottle) FailureDelay(user string, base time.Duration) time.Duration {
	perIP, _, window := t.limits()
	maxDelay := t.MaxDelay
	if maxDelay <= 0 {
		maxDelay = 30 * time.Second
	}
	key := strings.ToLower(user)
	now := t.now()
	t.mu.Lock()
	if t.byUser == nil {
		t.byUser = map[string][]time.Time{}
	}
	ts := append(prune(t.byUser, key, now, window), now)
	t.byUser[key] = ts
	t.mu.Unlock()
	d := base
	for extra := len(ts) - perIP; extra > 0 && d < maxDelay; extra-- {
		d = max(2*d, time.Second)
	}
	return min(d, max(maxDelay, base))
}

func (t *AuthThrottle) limits() (perIP, perSubnet int, window time.Duration) {
	perIP, perSubnet, window = t.MaxPerIP, t.MaxPerSubnet, t.Window
	if perIP <= 0 {
		perIP = 5
	}
	if perSubnet <= 0 {
		perSubnet = 4 * perIP
	}
	if window <= 0 {
		window = 15 * time.Minute
	}
	return
}

func (t *AuthThrottle) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Blocked reports whether logins from ip are currently refused.
func (t *AuthThrottle) Blocked(ip netip.Addr) bool {
	ip = ip.Unmap()
	perIP, perSubnet, window := t.limits()
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(prune(t.byIP, ip, now, window)) >= perIP ||
		len(prune(t.bySubnet, Subnet(ip), now, window)) >= perSubnet
}

// Fail records a failed login from ip.
func (t *AuthThrottle) Fail(ip netip.Addr) {
	ip = ip.Unmap()
	_, _, window := t.limits()
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byIP == nil {
		t.byIP = map[netip.Addr][]time.Time{}
		t.bySubnet = map[netip.Prefix][]time.Time{}
	}
	// Clients that never come back are only pruned here: sweep everything
	// once per window so the maps hold no more than a window's failures.
	if now.Sub(t.lastSweep) >= window {
		for k := range t.byIP {
			prune(t.byIP, k, now, window)
		}
		for k := range t.bySubnet {
			prune(t.bySubnet, k, now, window)
		}
		for k := range t.byUser {
			prune(t.byUser, k, now, window)
		}
		t.lastSweep = now
	}
	t.byIP[ip] = append(prune(t.byIP, ip, now, window), now)
	sn := Subnet(ip)
	t.bySubnet[sn] = append(prune(t.bySubnet, sn, now, window), now)
}

// prune drops failures older than window and forgets keys with none left, so
// memory stays bounded by recent attackers.
func prune[K comparable](m map[K][]time.Time, k K, now time.Time, window time.Duration) []time.Time {
	ts := m[k]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(m, k)
		return nil
	}
	m[k] = ts
	return ts
}
