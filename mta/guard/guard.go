// Package guard holds the per-connection defences shared by the SMTP and
// POP3 listeners: a limit on concurrent connections (in total and per client
// IP), the accept loop's backoff, and a throttle on failed logins. Logins are
// refused per IP and per subnet, never per user, so an attacker cannot lock
// a real user out of their own mailbox; per user, each further wrong
// password only waits longer (FailureDelay), the right one never does.
package guard

import (
	"container/list"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
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
//
// Memory is bounded whatever clients send: a user name is counted only up
// to an address's length, each table keeps MaxTracked names or networks
// (the one that failed least recently is forgotten first), and each of
// those the failures the limits can use.
type AuthThrottle struct {
	MaxPerIP     int           // 0 = 5
	MaxPerSubnet int           // 0 = 4 * MaxPerIP
	Window       time.Duration // 0 = 15 minutes
	MaxDelay     time.Duration // cap of FailureDelay; 0 = 30 seconds
	MaxTracked   int           // per table (users, IPs, subnets); 0 = 10000
	Now          func() time.Time
	// Sleep waits d, or until cancel is closed; nil uses a timer. Tests
	// set it to record the delays Pause is asked for instead of waiting
	// them.
	Sleep func(d time.Duration, cancel <-chan struct{})
	// Log gets one line, auth_blocked, when an address or its subnet
	// reaches its limit; nil discards.
	Log *slog.Logger

	mu       sync.Mutex
	byIP     failureLog[netip.Addr]
	bySubnet failureLog[netip.Prefix]
	byUser   failureLog[string]
}

// maxNameBytes is the longest user name FailureDelay counts apart: no
// address is longer (RFC 5321 4.5.3.1.3: a path is at most 256 octets,
// angle brackets included). Longer names all share one count.
const maxNameBytes = 254

// FailureDelay records a wrong password for user and returns how long to
// wait before answering it: base for a user's first MaxPerIP failures in
// the window, then doubling with each further one, up to MaxDelay.
//
// user should be the login name as the store looks it up (lower case
// makes no difference here); "" stands for a name that is no address,
// and all such names share one count.
func (t *AuthThrottle) FailureDelay(user string, base time.Duration) time.Duration {
	perIP, _, window := t.limits()
	maxDelay := t.MaxDelay
	if maxDelay <= 0 {
		maxDelay = 30 * time.Second
	}
	key := ""
	if len(user) <= maxNameBytes {
		key = strings.ToLower(user)
	}
	now := t.now()
	t.mu.Lock()
	n := t.byUser.add(key, now, window, t.maxTracked(), t.maxPerKey())
	t.mu.Unlock()
	d := base
	for extra := n - perIP; extra > 0 && d < maxDelay; extra-- {
		d = max(2*d, time.Second)
	}
	return min(d, max(maxDelay, base))
}

// Pause waits d (a FailureDelay), or less if cancel is closed first.
func (t *AuthThrottle) Pause(d time.Duration, cancel <-chan struct{}) {
	if d <= 0 {
		return
	}
	if t.Sleep != nil {
		t.Sleep(d, cancel)
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-cancel:
	}
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

func (t *AuthThrottle) maxTracked() int {
	if t.MaxTracked <= 0 {
		return 10000
	}
	return t.MaxTracked
}

// maxPerKey is how many failures of one key are worth keeping: enough to
// reach either block limit, and the doublings FailureDelay can make (from
// one second, 64 doublings exceed any Duration).
func (t *AuthThrottle) maxPerKey() int {
	perIP, perSubnet, _ := t.limits()
	return max(perIP, perSubnet) + 64
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
	return t.byIP.count(ip, now, window) >= perIP ||
		t.bySubnet.count(Subnet(ip), now, window) >= perSubnet
}

// Fail records a failed login from ip. The failure that blocks ip, or its
// subnet, is logged as auth_blocked with when the block ends.
func (t *AuthThrottle) Fail(ip netip.Addr) {
	ip = ip.Unmap()
	perIP, perSubnet, window := t.limits()
	now := t.now()
	maxKeys, perKey := t.maxTracked(), t.maxPerKey()
	subnet := Subnet(ip)
	t.mu.Lock()
	nIP := t.byIP.add(ip, now, window, maxKeys, perKey)
	nSubnet := t.bySubnet.add(subnet, now, window, maxKeys, perKey)
	// Only the failure that reaches a limit logs: later ones are refused
	// before they are counted, save the few already being checked.
	var blocks []Block
	if nIP == perIP {
		blocks = append(blocks, Block{Net: single(ip), Failures: nIP, Until: t.byIP.until(ip, perIP, window)})
	}
	if nSubnet == perSubnet {
		blocks = append(blocks, Block{Net: subnet, Failures: nSubnet, Until: t.bySubnet.until(subnet, perSubnet, window)})
	}
	t.mu.Unlock()
	if t.Log == nil {
		return
	}
	for _, b := range blocks {
		reason := fmt.Sprintf("%d failed logins from this address within %v", b.Failures, window)
		if !b.Net.IsSingleIP() {
			reason = fmt.Sprintf("%d failed logins from its subnet %v within %v", b.Failures, b.Net, window)
		}
		t.Log.Warn("auth_blocked", "client", ip.String(), "until", b.Until.Format(time.RFC3339), "failures", b.Failures, "reason", reason)
	}
}

// Block is an address or a subnet whose logins are refused.
type Block struct {
	Net      netip.Prefix // a single address (/32, /128) or a subnet (Subnet)
	Failures int          // counted in the window
	Until    time.Time    // when the count drops below the limit, if no more failures come
}

// Blocks lists the addresses and subnets whose logins are refused now,
// addresses first, each in address order.
func (t *AuthThrottle) Blocks() []Block {
	perIP, perSubnet, window := t.limits()
	now := t.now()
	var blocks []Block
	t.mu.Lock()
	t.byIP.over(perIP, now, window, func(ip netip.Addr, n int, until time.Time) {
		blocks = append(blocks, Block{Net: single(ip), Failures: n, Until: until})
	})
	t.bySubnet.over(perSubnet, now, window, func(p netip.Prefix, n int, until time.Time) {
		blocks = append(blocks, Block{Net: p, Failures: n, Until: until})
	})
	t.mu.Unlock()
	slices.SortFunc(blocks, func(a, b Block) int { return compareNets(a.Net, b.Net) })
	return blocks
}

// Unblock forgets the failed logins counted against the addresses in
// target and against every subnet that overlaps it: unblocking one address
// clears its subnet's count too, which its failures raised. It returns the
// addresses and subnets that had failures in the window. The per-user
// counts of FailureDelay stay: they never refuse a login.
func (t *AuthThrottle) Unblock(target netip.Prefix) []netip.Prefix {
	return t.clear(unmapPrefix(target).Masked().Overlaps)
}

// UnblockAll forgets the failed logins of every address and subnet, and
// returns those that had failures in the window. The per-user counts of
// FailureDelay stay.
func (t *AuthThrottle) UnblockAll() []netip.Prefix {
	return t.clear(func(netip.Prefix) bool { return true })
}

// clear removes the addresses and subnets match selects, and returns
// those that had failures in the window, addresses first.
func (t *AuthThrottle) clear(match func(netip.Prefix) bool) []netip.Prefix {
	_, _, window := t.limits()
	now := t.now()
	t.mu.Lock()
	ips := t.byIP.removeIf(now, window, func(ip netip.Addr) bool { return match(single(ip)) })
	subnets := t.bySubnet.removeIf(now, window, match)
	t.mu.Unlock()
	var cleared []netip.Prefix
	for _, ip := range ips {
		cleared = append(cleared, single(ip))
	}
	cleared = append(cleared, subnets...)
	slices.SortFunc(cleared, compareNets)
	return cleared
}

// single is the prefix of one address.
func single(ip netip.Addr) netip.Prefix { return netip.PrefixFrom(ip, ip.BitLen()) }

// compareNets orders single addresses before subnets, each by address.
func compareNets(a, b netip.Prefix) int {
	if a.IsSingleIP() != b.IsSingleIP() {
		if a.IsSingleIP() {
			return -1
		}
		return 1
	}
	return a.Compare(b)
}

// unmapPrefix turns a prefix of IPv4-mapped IPv6 addresses into the IPv4
// prefix the throttle counts them under (IP unmaps every client address).
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// failureLog holds the recent failure times of each key, the keys in the
// order they last failed, so that both forgetting the expired ones and
// evicting the stalest are cheap.
type failureLog[K comparable] struct {
	byKey map[K]*list.Element // of *failures[K]
	order list.List           // front: least recently failed
}

type failures[K comparable] struct {
	key   K
	times []time.Time // oldest first
}

// count returns how many failures of k are younger than window.
func (l *failureLog[K]) count(k K, now time.Time, window time.Duration) int {
	l.expire(now, window)
	e, ok := l.byKey[k]
	if !ok {
		return 0
	}
	f := e.Value.(*failures[K])
	if f.times = prune(f.times, now, window); len(f.times) == 0 {
		l.remove(e)
	}
	return len(f.times)
}

// add records a failure of k at now and returns k's count in the window,
// this one included. The log keeps at most maxKeys keys and perKey
// failures of each: the oldest go first.
func (l *failureLog[K]) add(k K, now time.Time, window time.Duration, maxKeys, perKey int) int {
	l.expire(now, window)
	if l.byKey == nil {
		l.byKey = map[K]*list.Element{}
	}
	e, ok := l.byKey[k]
	if !ok {
		for len(l.byKey) >= maxKeys {
			l.remove(l.order.Front())
		}
		e = l.order.PushBack(&failures[K]{key: k})
		l.byKey[k] = e
	}
	l.order.MoveToBack(e)
	f := e.Value.(*failures[K])
	f.times = append(prune(f.times, now, window), now)
	if over := len(f.times) - perKey; over > 0 {
		f.times = append(f.times[:0], f.times[over:]...)
	}
	return len(f.times)
}

// expire forgets the keys whose last failure has left the window: clients
// that never come back.
func (l *failureLog[K]) expire(now time.Time, window time.Duration) {
	for e := l.order.Front(); e != nil; e = l.order.Front() {
		times := e.Value.(*failures[K]).times
		if len(times) > 0 && now.Sub(times[len(times)-1]) < window {
			return
		}
		l.remove(e)
	}
}

// until returns when k's count in the window drops below limit if it
// fails no more: when the limit-th youngest failure leaves the window.
// k has at least limit failures.
func (l *failureLog[K]) until(k K, limit int, window time.Duration) time.Time {
	times := l.byKey[k].Value.(*failures[K]).times
	return times[len(times)-limit].Add(window)
}

// over calls fn for each key with at least limit failures in the window.
func (l *failureLog[K]) over(limit int, now time.Time, window time.Duration, fn func(k K, n int, until time.Time)) {
	l.expire(now, window)
	for e := l.order.Front(); e != nil; e = e.Next() {
		f := e.Value.(*failures[K])
		if times := prune(f.times, now, window); len(times) >= limit {
			fn(f.key, len(times), times[len(times)-limit].Add(window))
		}
	}
}

// removeIf removes the keys match selects, and returns those that had
// failures in the window.
func (l *failureLog[K]) removeIf(now time.Time, window time.Duration, match func(K) bool) []K {
	var removed []K
	var next *list.Element
	for e := l.order.Front(); e != nil; e = next {
		next = e.Next()
		f := e.Value.(*failures[K])
		if !match(f.key) {
			continue
		}
		if len(prune(f.times, now, window)) > 0 {
			removed = append(removed, f.key)
		}
		l.remove(e)
	}
	return removed
}

func (l *failureLog[K]) remove(e *list.Element) {
	delete(l.byKey, e.Value.(*failures[K]).key)
	l.order.Remove(e)
}

func (l *failureLog[K]) len() int { return len(l.byKey) }

// prune drops the failures older than window.
func prune(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= window {
		i++
	}
	return ts[i:]
}
