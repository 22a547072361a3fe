package guard

import (
	"net/netip"
	"sync"
	"time"
)

// Passed remembers, for a while, the clients that passed a test, so that
// they are not tested on every connection: postscreen's cache of clients
// that waited for the greeting (postscreen_greet_ttl, a day). A real MX
// that sends to us every few minutes then pays the wait before the
// greeting once a day, not on each connection. The zero value is ready.
type Passed struct {
	TTL time.Duration    // how long a pass counts; 0 = DefaultPassTTL
	Max int              // clients remembered at most; 0 = DefaultPassMax
	Now func() time.Time // nil = time.Now; for tests

	mu    sync.Mutex
	until map[netip.Addr]time.Time
}

// DefaultPassTTL and DefaultPassMax bound Passed: a day, like postscreen,
// and a table of at most a few megabytes.
const (
	DefaultPassTTL = 24 * time.Hour
	DefaultPassMax = 100_000
)

// Has reports whether ip passed within TTL.
func (p *Passed) Has(ip netip.Addr) bool {
	if p == nil {
		return false
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.until[ip.Unmap()]
	return ok && now.Before(t)
}

// Add records that ip passed now. When the table is full, expired entries
// go first; if none has expired, an arbitrary one makes room: forgetting a
// client costs it one more wait, never its mail.
func (p *Passed) Add(ip netip.Addr) {
	if p == nil {
		return
	}
	now := p.now()
	ttl, max := positive(p.TTL, DefaultPassTTL), positive(p.Max, DefaultPassMax)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.until == nil {
		p.until = make(map[netip.Addr]time.Time)
	}
	ip = ip.Unmap()
	if _, ok := p.until[ip]; !ok && len(p.until) >= max {
		for k, t := range p.until {
			if !now.Before(t) {
				delete(p.until, k)
			}
		}
		for k := range p.until {
			if len(p.until) < max {
				break
			}
			delete(p.until, k)
		}
	}
	p.until[ip] = now.Add(ttl)
}

// Len is the number of clients remembered, expired ones included.
func (p *Passed) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.until)
}

func (p *Passed) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func positive[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}
