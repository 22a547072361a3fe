package antispam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// DefaultDNSBLTimeout bounds the lookups of one client in all zones when
// DNSBL.Timeout is zero. Blocklists answer from anycast servers within
// milliseconds; a zone that takes seconds is down, and must not hold up
// mail.
const DefaultDNSBLTimeout = 5 * time.Second

// DNSBL looks client addresses up in DNS blocklists (RFC 5782). Lookups go
// through Resolver, which for minimail is relay.dns behind the caching
// resolver of mta/resolve: an answer is kept for its TTL, and NXDOMAIN
// ("not listed") for its SOA's negative TTL (RFC 2308), so a client that
// connects a hundred times costs one query per zone.
type DNSBL struct {
	Zones    []string      // e.g. "zen.spamhaus.org"
	Resolver *net.Resolver // nil means net.DefaultResolver
	Timeout  time.Duration // for all zones of one client; 0 = DefaultDNSBLTimeout
	Logger   *slog.Logger  // lookups that fail; nil discards
}

// listing is one zone's answer that lists the address.
type listing struct {
	zone   string
	reason string // the zone's TXT record, made fit for a reply line; "" when it has none
}

// Lookup returns the first zone, in Zones order, that lists ip, with its
// TXT reason made fit for a reply line ("" when it has none). A zone that does not
// answer, answers SERVFAIL or refuses the query (Spamhaus's 127.255.255.x)
// counts as not listing it: a failed lookup never blocks mail.
func (d *DNSBL) Lookup(ctx context.Context, ip netip.Addr) (zone, reason string, listed bool) {
	if len(d.Zones) == 0 || !ip.IsValid() {
		return "", "", false
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultDNSBLTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// All zones at once: the slowest, not the sum, bounds the wait.
	found := make([]*listing, len(d.Zones))
	var wg sync.WaitGroup
	for i, zone := range d.Zones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			found[i] = d.lookupZone(ctx, ip, zone)
		}()
	}
	wg.Wait()
	for _, l := range found {
		if l != nil {
			return l.zone, l.reason, true
		}
	}
	return "", "", false
}

func (d *DNSBL) lookupZone(ctx context.Context, ip netip.Addr, zone string) *listing {
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	name := QueryName(ip, zone)
	addrs, err := r.LookupNetIP(ctx, "ip4", name)
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return nil // NXDOMAIN: not listed
	case err != nil:
		d.logger().Warn("dnsbl lookup failed", "zone", zone, "client", ip.String(), "err", err)
		return nil
	}
	switch ClassifyAnswer(addrs) {
	case Listed:
	case Refused:
		d.logger().Warn("dnsbl refused the query", "zone", zone, "client", ip.String(), "answer", fmt.Sprint(addrs),
			"hint", "the list refuses queries from this resolver (public resolvers, or over its free use limit): set relay.dns to a resolver of your own")
		return nil
	default:
		return nil
	}
	l := &listing{zone: zone}
	if txts, err := r.LookupTXT(ctx, name); err == nil {
		l.reason = ReplyText(strings.Join(txts, " "))
	}
	return l
}

func (d *DNSBL) logger() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger
}

// QueryName is the name RFC 5782 2.1 and 2.4 look ip up under in zone:
// an IPv4 address's octets reversed, an IPv6 address's 32 nibbles
// reversed, in front of the zone, as an absolute name (so that no search
// domain of resolv.conf is ever tried).
func QueryName(ip netip.Addr, zone string) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.", a[3], a[2], a[1], a[0])
	} else {
		a := ip.As16()
		const hex = "0123456789abcdef"
		for i := len(a) - 1; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(strings.TrimSuffix(zone, "."))
	b.WriteByte('.')
	return b.String()
}

// Answer is what the A records of a DNSBL answer mean.
type Answer int

const (
	NotListed Answer = iota
	// Listed: an address in 127.0.0.0/24 (RFC 5782 2.3), the return codes
	// of every IP blocklist.
	Listed
	// Refused: 127.255.255.0/24, Spamhaus's codes for a query it will not
	// answer (from an open resolver, or over the free use limit). Taking
	// them for listings would refuse all mail.
	Refused
)

// ClassifyAnswer reads the A records of a DNSBL answer. Anything outside
// 127.0.0.0/24 (including the 127.0.1.x of domain lists, and addresses a
// hijacking resolver returns for every name) is not a listing.
func ClassifyAnswer(addrs []netip.Addr) Answer {
	out := NotListed
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		b := a.As4()
		switch {
		case b[0] == 127 && b[1] == 255 && b[2] == 255:
			if out == NotListed {
				out = Refused
			}
		case b[0] == 127 && b[1] == 0 && b[2] == 0:
			return Listed
		}
	}
	return out
}

// maxReplyText bounds a text from outside (a TXT record, rspamd's message)
// quoted in a reply line, well within RFC 5321 4.5.3.1.5's 512 octets.
const maxReplyText = 200

// ReplyText makes s, text from a DNS record or another server, fit for an
// SMTP reply line: printable ASCII only (a CR or LF would end the reply and
// start another), runs of space as one, at most maxReplyText octets.
func ReplyText(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if b.Len() >= maxReplyText {
			break
		}
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > maxReplyText {
		out = out[:maxReplyText]
	}
	return out
}
