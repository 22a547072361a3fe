// Package remote delivers mail to other servers over SMTP. One call to
// Client.Deliver carries all recipients of one destination domain over one
// connection and returns one result per recipient, so the queue can record
// each acceptance and retry or bounce each refusal on its own.
//
// The next hop is chosen in this order:
//
//  1. Routes: a fixed host:port per domain, like Postfix transport maps.
//  2. Smarthost: every remote domain goes there, authenticated with AUTH
//     PLAIN when credentials are set (only ever over verified TLS).
//  3. DNS: MX hosts in preference order; with no MX, the domain's own
//     address records (RFC 5321 5.1); a null MX (RFC 7505) fails at once.
//
// Addresses that DNS or a recipient's address literal lead to are dialled
// only when they are public (see isPublic): loopback, private, link-local
// and other internal addresses are skipped. Routes and the smarthost are
// the administrator's choice and may name any host.
//
// Every host name is resolved by the server at Client.DNS and every address
// dialled through Client.Dialer, so tests steer all traffic to loopback.
//
// STARTTLS is opportunistic (RFC 3207): used whenever offered, with the
// certificate checked and the result logged, but an unverifiable certificate
// does not stop delivery, since most MX hosts have no certificate a client
// could verify (RFC 7435), and a failed handshake is followed by a
// plain-text attempt. The exception is a smarthost with credentials: there
// TLS must be offered and verified, or the credentials are not sent.
//
// Whoever controls a recipient's DNS chooses our next hop, so every reply
// is read under bounds (see limit.go): a server that sends too much gets a
// temporary failure, not our memory.
//
// Each refused recipient gets an *Error that says whether to retry
// (Temporary: a 4xx, or no server reached) and what a delivery status
// notification reports; the queue reads those through methods, so it need
// not know this package.
//
// A message with 8-bit content goes out even to a server that does not
// offer 8BITMIME (see session); a message over the server's SIZE, or with
// a non-ASCII address for a server without SMTPUTF8, fails permanently.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"minimail/mta/delivery"
	"minimail/mta/mailaddr"
	"minimail/mta/resolve"
)

// Dialer opens connections; *net.Dialer satisfies it.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Client delivers to remote servers. The zero value (plus Hostname) is
// usable: system resolver, plain dialer, system roots. Its fields must not
// change once Deliver is in use.
type Client struct {
	// Hostname is our name in EHLO (RFC 5321 4.1.1.1).
	Hostname string
	// Routes maps a recipient domain to host:port. Domains match without
	// regard to case or a trailing dot (RFC 1035 2.3.3).
	Routes map[string]string
	// Smarthost, as host:port, takes all mail not covered by Routes.
	Smarthost string
	// SmarthostUsername and SmarthostPassword, when set, are sent with AUTH
	// PLAIN, and only over STARTTLS with a verified certificate.
	SmarthostUsername string
	SmarthostPassword string
	// DNS is the host:port of the server that answers every MX and
	// address lookup; "" is the system resolver. DNS errors name it.
	DNS string
	// DNSCache, when set, keeps answers for their TTL (shared with the
	// inbound checks).
	DNSCache *resolve.Cache
	// Dialer opens TCP connections; nil is a net.Dialer with Timeout.
	Dialer Dialer
	// TLSConfig is the base for STARTTLS (RootCAs, for instance); nil
	// means system roots.
	TLSConfig *tls.Config
	// Timeout bounds the connection set-up and each SMTP command; the end
	// of DATA gets twice as long. 0 means 5 minutes (RFC 5321 4.5.3.2).
	Timeout time.Duration
	// AllowInternal lets DNS answers and address literals lead to
	// loopback, private and other non-public addresses. It exists for
	// tests, whose MX hosts live on 127.0.0.1 or at documentation
	// addresses; a server names its internal next hops in Routes.
	AllowInternal bool
	// Logger gets one line per SMTP session; nil discards.
	Logger *slog.Logger
	// Transcript, when set, gives a writer for each session's conversation
	// with host (both directions, as go-smtp's DebugWriter writes them).
	// `minimail demo` prints it; servers leave it nil.
	Transcript func(host string) io.Writer

	setUp    sync.Once
	routes   map[string]string // Routes by normalized domain
	resolver *net.Resolver
}

// smtpPort is where MX hosts listen (RFC 5321 4.5.4, port 25).
const smtpPort = "25"

// hop is one candidate next-hop host.
type hop struct {
	name string // host name or IP literal, for TLS and logs
	port string
	// auth says to authenticate with the smarthost credentials, which
	// also makes verified TLS mandatory.
	auth bool
	// fqdn says name came from DNS and is looked up as an absolute name,
	// so no search domain is ever appended.
	fqdn bool
	// implicit marks the domain itself standing in for a missing MX: if
	// it has no address, the domain does not exist for mail.
	implicit bool
	// configured marks a route or the smarthost: any address it has is
	// dialled, internal or not.
	configured bool
	// literal marks a recipient's address literal (RFC 5321 4.1.3).
	literal bool
}

// Deliver sends msg from the envelope sender from ("" for the null sender)
// to rcpts, which must share one domain. It returns one entry per recipient,
// in order: nil when the next hop accepted it with a 2xx after DATA, else an
// *Error that says whether to retry.
func (c *Client) Deliver(ctx context.Context, from string, rcpts []string, msg []byte) []error {
	results, _ := c.DeliverDSN(ctx, from, rcpts, msg, delivery.DSN{})
	return results
}

// DeliverDSN is Deliver passing p on to a next hop that offers DSN (RFC
// 3461 5.2.1: that hop then reports); go-smtp leaves the parameters out
// for one that does not. offered reports whether the server that gave the
// verdicts offered DSN, so that the caller owes a NOTIFY=SUCCESS
// recipient the "relayed" notice (RFC 3461 5.2.2) when it did not.
func (c *Client) DeliverDSN(ctx context.Context, from string, rcpts []string, msg []byte, p delivery.DSN) (results []error, offered bool) {
	results = make([]error, len(rcpts))
	if len(rcpts) == 0 {
		return results, false
	}
	c.setUp.Do(func() {
		c.routes = normalizeRoutes(c.Routes)
		c.resolver = resolve.New(c.DNS)
		if c.DNSCache != nil {
			c.resolver = c.DNSCache.Resolver(c.DNS)
		}
	})
	fail := func(err error) ([]error, bool) {
		for i := range results {
			results[i] = err
		}
		return results, false
	}
	// go-smtp refuses CR and LF in addresses as a local error; say plainly
	// that such an address can never work.
	if strings.ContainsAny(from, "\r\n") {
		return fail(errPermanent("", "5.1.7", "bad sender address"))
	}
	for _, r := range rcpts {
		if strings.ContainsAny(r, "\r\n") {
			return fail(errPermanent("", "5.1.3", "bad recipient address"))
		}
	}
	domain := mailaddr.Domain(rcpts[0])
	for _, r := range rcpts[1:] {
		if mailaddr.Domain(r) != domain {
			return fail(errPermanent("", "5.1.3", "recipients of one delivery must share a domain"))
		}
	}
	hops, err := c.route(ctx, domain)
	if err != nil {
		return fail(err)
	}
	var last error = errNoAnswer("", errors.New("no host to try"))
	for _, h := range hops {
		addrs, err := c.addresses(ctx, h)
		if err != nil {
			last = err
			continue
		}
		env := envelope{from: from, rcpts: rcpts, msg: msg, dsn: p}
		for _, addr := range addrs {
			res, offered, err := c.session(ctx, target{hop: h, addr: addr}, env)
			if res == nil && !h.auth && errors.Is(err, errHandshake) && ctx.Err() == nil {
				// RFC 7435: opportunistic TLS must not leave mail less
				// deliverable than plain text would. Try again without.
				res, offered, err = c.session(ctx, target{hop: h, addr: addr, plainText: true}, env)
			}
			if res != nil {
				return res, offered
			}
			last = err
			if ctx.Err() != nil {
				return fail(last)
			}
		}
	}
	return fail(last)
}

// route returns the hosts to try for domain, best first.
func (c *Client) route(ctx context.Context, domain string) ([]hop, error) {
	if hp, ok := c.routes[domain]; ok {
		h, err := splitHop(hp)
		h.configured = true
		return []hop{h}, err
	}
	if c.Smarthost != "" {
		h, err := splitHop(c.Smarthost)
		h.auth = c.SmarthostUsername != ""
		h.configured = true
		return []hop{h}, err
	}
	// RFC 5321 4.1.3: an address literal names the host itself.
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		lit := strings.TrimPrefix(domain[1:len(domain)-1], "ipv6:")
		if ip, err := netip.ParseAddr(lit); err == nil {
			return []hop{{name: ip.String(), port: smtpPort, literal: true}}, nil
		}
		return nil, errPermanent("", "5.1.2", "bad address literal "+domain)
	}
	if domain == "" {
		return nil, errPermanent("", "5.1.3", "recipient without a domain")
	}
	mxs, err := c.resolver.LookupMX(ctx, domain+".")
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		// RFC 5321 5.1: no MX records, so the domain is its own implicit
		// MX. If it has no address either, addresses reports it.
		return []hop{{name: domain, port: smtpPort, fqdn: true, implicit: true}}, nil
	case err != nil && len(mxs) == 0:
		return nil, c.errDNS(domain, err)
	}
	// RFC 7505 3: a single MX of "." says the domain takes no mail.
	if len(mxs) == 1 && mxs[0].Host == "." {
		return nil, errPermanent("", "5.1.10", "domain "+domain+" accepts no mail (null MX, RFC 7505)")
	}
	// The resolver has sorted by preference and shuffled equal ones
	// (RFC 5321 5.1).
	var hops []hop
	for _, mx := range mxs {
		if mx.Host == "." {
			continue
		}
		hops = append(hops, hop{name: strings.TrimSuffix(mx.Host, "."), port: smtpPort, fqdn: true})
	}
	if len(hops) == 0 {
		return nil, c.errDNS(domain, errors.New("no usable MX host"))
	}
	return hops, nil
}

// addresses resolves a hop to dialable host:port strings, leaving out the
// internal addresses of a hop that DNS or an address literal chose.
func (c *Client) addresses(ctx context.Context, h hop) ([]string, error) {
	ips, err := c.lookupHop(ctx, h)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ips))
	var skipped []string
	for _, ip := range ips {
		ip = ip.Unmap()
		if !h.configured && !c.AllowInternal && !isPublic(ip) {
			c.logger().Warn("internal address skipped", "host", h.name, "addr", ip.String())
			skipped = append(skipped, ip.String())
			continue
		}
		out = append(out, net.JoinHostPort(ip.String(), h.port))
	}
	if len(out) > 0 {
		return out, nil
	}
	if h.literal {
		// The literal is the whole destination and will never change:
		// say so at once rather than after days of retries.
		return nil, errPermanent("", "5.4.4", "address literal ["+h.name+"] is an internal address; not dialled")
	}
	// A temporary error, not a bounce: DNS that points at internal
	// addresses is a mistake its owner may fix, or an answer that is
	// wrong for a while (a spoofed or rebinding reply). Deferring keeps
	// the mail; the sender still hears of the delay and, after the
	// queue's maximum age, gets the bounce.
	return nil, &Error{Enhanced: "4.4.4", Host: h.name,
		Message: "host " + h.name + " has only internal addresses (" + strings.Join(skipped, " ") + "); not dialled"}
}

// lookupHop returns the addresses of a hop: its own, when its name is an
// IP address, else what DNS says.
func (c *Client) lookupHop(ctx context.Context, h hop) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(h.name); err == nil {
		return []netip.Addr{ip}, nil
	}
	name := h.name
	if h.fqdn {
		name += "."
	}
	ips, err := c.resolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		var dnsErr *net.DNSError
		if h.implicit && errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, errPermanent("", "5.1.2", "domain "+h.name+" has no MX and no address")
		}
		// An MX or route naming a missing host is a DNS mistake someone
		// may fix: keep retrying.
		return nil, c.errDNS(h.name, err)
	}
	return ips, nil
}

func (c *Client) dialer() Dialer {
	if c.Dialer != nil {
		return c.Dialer
	}
	return &net.Dialer{Timeout: c.timeout()}
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 5 * time.Minute
}

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// splitHop parses a configured host:port.
func splitHop(hp string) (hop, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil || host == "" || port == "" {
		// A configuration mistake: keep the mail and say why.
		return hop{}, &Error{Enhanced: "4.3.5", Message: "bad next hop " + hp, Err: err}
	}
	return hop{name: host, port: port}, nil
}

// normalizeRoutes keys routes by normalized domain. Should two keys name
// the same domain (configuration validation refuses that), the one already
// normalized wins, else the first in sorted order, so the choice is stable.
func normalizeRoutes(routes map[string]string) map[string]string {
	keys := make([]string, 0, len(routes))
	for k := range routes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]string, len(routes))
	for _, k := range keys {
		d := mailaddr.NormalDomain(k)
		if _, taken := out[d]; taken && k != d {
			continue
		}
		out[d] = routes[k]
	}
	return out
}
