package antispam

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"minimail/mta/dnstest"
	"minimail/mta/resolve"
)

func TestQueryName_ReversesOctetsAndNibbles(t *testing.T) {
	for _, c := range []struct{ ip, zone, want string }{
		{"192.0.2.99", "zen.test", "99.2.0.192.zen.test."},
		{"127.0.0.2", "zen.test.", "2.0.0.127.zen.test."},
		{"::ffff:192.0.2.1", "zen.test", "1.2.0.192.zen.test."},
		// RFC 5782 2.4's example.
		{"2001:db8:1:2:3:4:567:89ab", "ugly.example.com",
			"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com."},
	} {
		if got := QueryName(netip.MustParseAddr(c.ip), c.zone); got != c.want {
			t.Errorf("QueryName(%s, %s) = %s, want %s", c.ip, c.zone, got, c.want)
		}
	}
}

func TestClassifyAnswer_Only127000xLists(t *testing.T) {
	for _, c := range []struct {
		addrs []string
		want  Answer
	}{
		{nil, NotListed},
		{[]string{"127.0.0.2"}, Listed},
		{[]string{"127.0.0.10", "127.0.0.4"}, Listed},
		{[]string{"127.255.255.254"}, Refused}, // Spamhaus: query via a public resolver
		{[]string{"127.255.255.252"}, Refused},
		{[]string{"127.255.255.254", "127.0.0.2"}, Listed},
		{[]string{"127.0.1.2"}, NotListed},     // a domain list's code
		{[]string{"192.0.2.1"}, NotListed},     // a resolver that answers every name
		{[]string{"::ffff:127.0.0.2"}, Listed}, // the same address
	} {
		var addrs []netip.Addr
		for _, a := range c.addrs {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		if got := ClassifyAnswer(addrs); got != c.want {
			t.Errorf("ClassifyAnswer(%v) = %v, want %v", c.addrs, got, c.want)
		}
	}
}

func TestReplyText_OneSafeLine(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"Listed, see https://bl.test/q?ip=127.0.0.2", "Listed, see https://bl.test/q?ip=127.0.0.2"},
		{"  a\r\n250 OK injected\t b ", "a 250 OK injected b"},
		{"caf\u00e9 \x00x", "caf x"},
		{strings.Repeat("x", 500), strings.Repeat("x", maxReplyText)},
		{"", ""},
	} {
		if got := ReplyText(c.in); got != c.want {
			t.Errorf("ReplyText(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// blocklistZone serves zone on a loopback DNS server: 127.0.0.2 listed with
// a TXT reason, 127.0.0.4 "refused" as Spamhaus answers open resolvers,
// 127.0.0.5 SERVFAIL, 127.0.0.6 no answer at all.
func blocklistZone(t *testing.T, zone string) *dnstest.Server {
	dns := dnstest.Start(t,
		zone+". 300 IN SOA ns."+zone+". hostmaster."+zone+". 1 3600 600 86400 60",
		"2.0.0.127."+zone+". 300 IN A 127.0.0.2",
		"2.0.0.127."+zone+`. 300 IN TXT "Listed for testing, see https://`+zone+`/2"`,
		"4.0.0.127."+zone+". 300 IN A 127.255.255.254",
	)
	dns.Fail("5.0.0.127." + zone)
	dns.Hang("6.0.0.127." + zone)
	return dns
}

func TestDNSBL_Lookup(t *testing.T) {
	dns := blocklistZone(t, "bl.test")
	var logs bytes.Buffer
	d := &DNSBL{Zones: []string{"none.test", "bl.test"}, Resolver: dns.Resolver(), Timeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx := context.Background()
	for _, c := range []struct {
		ip, zone, reason string
		listed           bool
		log              string
	}{
		{"127.0.0.2", "bl.test", "Listed for testing, see https://bl.test/2", true, ""},
		{"127.0.0.3", "", "", false, ""},                        // NXDOMAIN
		{"127.0.0.4", "", "", false, "dnsbl refused the query"}, // 127.255.255.254
		{"127.0.0.5", "", "", false, "dnsbl lookup failed"},     // SERVFAIL
		{"127.0.0.6", "", "", false, "dnsbl lookup failed"},     // timeout
		{"2001:db8::1", "", "", false, ""},                      // IPv6, NXDOMAIN
	} {
		logs.Reset()
		zone, reason, listed := d.Lookup(ctx, netip.MustParseAddr(c.ip))
		if zone != c.zone || reason != c.reason || listed != c.listed {
			t.Errorf("Lookup(%s) = %q, %q, %v; want %q, %q, %v", c.ip, zone, reason, listed, c.zone, c.reason, c.listed)
		}
		if c.log != "" && !strings.Contains(logs.String(), c.log) {
			t.Errorf("Lookup(%s) logged %q, want %q", c.ip, logs.String(), c.log)
		}
	}
}

// The lookups go through the resolve cache: a listing is asked once for
// its TTL, and so is a "not listed" for the SOA's negative TTL.
func TestDNSBL_CachedForTheTTL(t *testing.T) {
	dns := blocklistZone(t, "bl.test")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cache := resolve.NewCache(resolve.CacheOptions{Now: func() time.Time { return now }})
	d := &DNSBL{Zones: []string{"bl.test"}, Resolver: cache.Resolver(dns.Addr)}
	ctx := context.Background()
	lookup := func(ip string) {
		t.Helper()
		d.Lookup(ctx, netip.MustParseAddr(ip))
	}
	lookup("127.0.0.2")
	lookup("127.0.0.3")
	asked := dns.Queries()
	lookup("127.0.0.2")
	lookup("127.0.0.3")
	if n := dns.Queries(); n != asked {
		t.Fatalf("second lookups asked the server %d more times, want 0", n-asked)
	}
	now = now.Add(61 * time.Second) // past the negative TTL (SOA minimum 60), within the A record's 300
	lookup("127.0.0.2")
	if n := dns.Queries(); n != asked {
		t.Fatalf("a listing within its TTL was asked again")
	}
	lookup("127.0.0.3")
	if n := dns.Queries(); n != asked+1 {
		t.Fatalf("an expired negative answer: %d queries, want 1", n-asked)
	}
}
