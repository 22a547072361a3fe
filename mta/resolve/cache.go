package resolve

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/dns/dnsmessage"
)

// Cache keeps DNS answers for their TTL, negative ones too (RFC 2308), so
// that the SPF, DKIM and DMARC checks of a hundred messages from one
// sender domain ask the server once, and so do MX lookups for one
// destination. It sits under the standard resolver, at its Dial: every
// lookup of every library that takes a *net.Resolver goes through it
// unchanged. Only complete UDP answers are kept; a truncated answer, which
// the resolver then asks again over TCP, is not, and SERVFAIL is never
// kept (RFC 2308 7.1 allows five minutes; a failing server is better
// asked again).
//
// The zero value is not usable; call NewCache.
type Cache struct {
	max    int
	maxTTL time.Duration
	now    func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
	order   []cacheKey // insertion order, for eviction
	hits    int
	misses  int
}

// CacheOptions configure a Cache; zero fields take the defaults.
type CacheOptions struct {
	MaxEntries int              // default 10000
	MaxTTL     time.Duration    // answers are kept no longer; default 1h
	Now        func() time.Time // default time.Now
}

type cacheKey struct {
	name          string // lower case, fully qualified
	qtype, qclass uint16
}

type cacheEntry struct {
	wire    []byte // the answer as it came: unpacked for each hit, read by LookupTXT as the resolver would
	stored  time.Time
	expires time.Time
}

// NewCache returns an empty cache.
func NewCache(o CacheOptions) *Cache {
	c := &Cache{max: o.MaxEntries, maxTTL: o.MaxTTL, now: o.Now, entries: map[cacheKey]*cacheEntry{}}
	if c.max <= 0 {
		c.max = 10000
	}
	if c.maxTTL <= 0 {
		c.maxTTL = time.Hour
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Resolver returns a resolver that asks addr (host:port; "" = the servers
// of /etc/resolv.conf) through the cache.
func (c *Cache) Resolver(addr string) *net.Resolver {
	d := net.Dialer{Timeout: 5 * time.Second}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, server string) (net.Conn, error) {
			if addr != "" {
				server = addr
			}
			if network != "udp" && network != "udp4" && network != "udp6" {
				return d.DialContext(ctx, network, server)
			}
			return &cachingConn{cache: c, dial: func() (net.Conn, error) { return d.DialContext(ctx, network, server) }}, nil
		},
	}
}

// Stats reports cache hits and misses since the cache was made.
func (c *Cache) Stats() (hits, misses int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

func keyOf(m *dns.Msg) (cacheKey, bool) {
	if len(m.Question) != 1 {
		return cacheKey{}, false
	}
	q := m.Question[0]
	return cacheKey{strings.ToLower(q.Name), q.Qtype, q.Qclass}, true
}

// get returns a copy of the kept answer to query, its TTLs aged.
func (c *Cache) get(query *dns.Msg) *dns.Msg {
	k, ok := keyOf(query)
	if !ok {
		return nil
	}
	c.mu.Lock()
	e := c.entries[k]
	now := c.now()
	fresh := e != nil && now.Before(e.expires)
	if fresh {
		c.hits++
	} else {
		c.misses++
	}
	c.mu.Unlock()
	if !fresh {
		return nil
	}
	// An entry is never changed once kept, only replaced.
	m := new(dns.Msg)
	if m.Unpack(e.wire) != nil {
		return nil // it was unpacked once before it was kept
	}
	m.Id = query.Id
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				h.Ttl -= min(age, h.Ttl)
			}
		}
	}
	return m
}

// put keeps answer, which came as wire, if it is one worth keeping.
func (c *Cache) put(answer *dns.Msg, wire []byte) {
	k, ok := keyOf(answer)
	if !ok || answer.Truncated {
		return
	}
	ttl, ok := ttlOf(answer)
	if !ok || ttl <= 0 {
		return
	}
	ttl = min(ttl, c.maxTTL)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, exists := c.entries[k]; !exists {
		for len(c.order) >= c.max {
			delete(c.entries, c.order[0])
			c.order = c.order[1:]
		}
		c.order = append(c.order, k)
	}
	c.entries[k] = &cacheEntry{wire: bytes.Clone(wire), stored: now, expires: now.Add(ttl)}
}

// LookupTXT answers a TXT lookup of name from what the cache holds, as
// net.Resolver's LookupTXT would: each record's strings joined, and a
// *net.DNSError that IsNotFound for a name or a record type that does not
// exist. hit is false when the cache holds no fresh answer; the lookup then
// goes to a Resolver of the cache, which keeps what it gets. Through the
// resolver even a kept answer costs a query built, parsed and answered,
// and a context and a goroutine stack to grow: 20 to 25 µs of CPU a lookup
// in the server's profile (a 4 KiB message from a remote sender does two,
// SPF's and DMARC's), about a microsecond here.
func (c *Cache) LookupTXT(name string) (txts []string, hit bool, err error) {
	k := cacheKey{strings.ToLower(dns.Fqdn(name)), dns.TypeTXT, dns.ClassINET}
	c.mu.Lock()
	e := c.entries[k]
	fresh := e != nil && c.now().Before(e.expires)
	if fresh {
		c.hits++
	}
	c.mu.Unlock()
	if !fresh {
		return nil, false, nil
	}
	return txtAnswer(e.wire, name)
}

// txtAnswer reads the TXT records of a kept answer the way the standard
// resolver does (net/dnsclient_unix.go): with its parser, taking every TXT
// record of the answer section. An answer it cannot read is no hit.
func txtAnswer(wire []byte, name string) (txts []string, hit bool, err error) {
	var p dnsmessage.Parser
	h, err := p.Start(wire)
	if err != nil {
		return nil, false, nil
	}
	notFound := &net.DNSError{Err: "no such host", Name: name, Server: cacheAddr{}.String(), IsNotFound: true}
	if h.RCode == dnsmessage.RCodeNameError {
		return nil, true, notFound
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, false, nil
	}
	for {
		ah, err := p.AnswerHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			return nil, false, nil
		}
		if ah.Type != dnsmessage.TypeTXT || ah.Class != dnsmessage.ClassINET {
			if err := p.SkipAnswer(); err != nil {
				return nil, false, nil
			}
			continue
		}
		r, err := p.TXTResource()
		if err != nil {
			return nil, false, nil
		}
		txts = append(txts, strings.Join(r.TXT, ""))
	}
	if len(txts) == 0 {
		return nil, true, notFound
	}
	return txts, true, nil
}

// noSOANegativeTTL is how long a negative answer without an SOA record is
// kept. RFC 2308 5 says such answers SHOULD NOT be cached, for fear of two
// servers feeding each other the answer for ever; this cache answers only
// this process, so it cannot loop, and without it every message of a
// sender domain with no DMARC record asks the server again (some forwarders
// and small servers strip the SOA). A few seconds absorbs a burst while a
// record published meanwhile is seen almost at once; answers with an SOA
// keep its negative TTL, minutes to hours.
const noSOANegativeTTL = 5 * time.Second

// ttlOf is how long an answer may be kept: the smallest TTL of its
// answer records; for NXDOMAIN and NODATA, RFC 2308 5's minimum of the SOA
// record's TTL and its MINIMUM field, and noSOANegativeTTL without an SOA.
func ttlOf(m *dns.Msg) (time.Duration, bool) {
	switch m.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return 0, false
	}
	if m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0 {
		least := m.Answer[0].Header().Ttl
		for _, rr := range m.Answer[1:] {
			least = min(least, rr.Header().Ttl)
		}
		return time.Duration(least) * time.Second, true
	}
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second, true
		}
	}
	return noSOANegativeTTL, true
}

// cachingConn is what the standard resolver dials for a UDP exchange: it
// writes one query and reads one answer (it implements net.PacketConn, so
// the resolver frames messages as UDP). A query the cache can answer never
// leaves the process.
type cachingConn struct {
	cache *Cache
	dial  func() (net.Conn, error)

	mu       sync.Mutex
	upstream net.Conn
	pending  [][]byte // answers ready to be read
	query    *dns.Msg
	deadline time.Time
}

var errConnClosed = errors.New("resolve: connection closed")

func (c *cachingConn) Write(p []byte) (int, error) {
	q := new(dns.Msg)
	if err := q.Unpack(p); err != nil {
		return 0, err
	}
	if m := c.cache.get(q); m != nil {
		out, err := m.Pack()
		if err != nil {
			return 0, err
		}
		c.mu.Lock()
		c.pending = append(c.pending, out)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.upstream == nil {
		up, err := c.dial()
		if err != nil {
			return 0, err
		}
		if !c.deadline.IsZero() {
			up.SetDeadline(c.deadline)
		}
		c.upstream = up
	}
	c.query = q
	return c.upstream.Write(p)
}

func (c *cachingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.pending) > 0 {
		out := c.pending[0]
		c.pending = c.pending[1:]
		c.mu.Unlock()
		return copy(p, out), nil
	}
	up, q := c.upstream, c.query
	c.mu.Unlock()
	if up == nil {
		return 0, errConnClosed
	}
	n, err := up.Read(p)
	if err != nil {
		return n, err
	}
	m := new(dns.Msg)
	if m.Unpack(p[:n]) == nil && q != nil && m.Id == q.Id && sameQuestion(m, q) {
		c.cache.put(m, p[:n])
	}
	return n, nil
}

func sameQuestion(a, b *dns.Msg) bool {
	ka, ok1 := keyOf(a)
	kb, ok2 := keyOf(b)
	return ok1 && ok2 && ka == kb
}

func (c *cachingConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.upstream != nil {
		return c.upstream.Close()
	}
	return nil
}

func (c *cachingConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.upstream != nil {
		return c.upstream.SetDeadline(t)
	}
	return nil
}

func (c *cachingConn) SetReadDeadline(t time.Time) error  { return c.SetDeadline(t) }
func (c *cachingConn) SetWriteDeadline(t time.Time) error { return c.SetDeadline(t) }
func (c *cachingConn) LocalAddr() net.Addr                { return cacheAddr{} }
func (c *cachingConn) RemoteAddr() net.Addr               { return cacheAddr{} }

// ReadFrom and WriteTo make it a net.PacketConn: the resolver's sign that
// messages go without the two-octet length prefix of TCP.
func (c *cachingConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, err := c.Read(p)
	return n, cacheAddr{}, err
}

func (c *cachingConn) WriteTo(p []byte, _ net.Addr) (int, error) { return c.Write(p) }

type cacheAddr struct{}

func (cacheAddr) Network() string { return "udp" }
func (cacheAddr) String() string  { return "resolve-cache" }

var _ net.PacketConn = (*cachingConn)(nil)
