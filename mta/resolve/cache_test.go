package resolve_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"minimail/mta/dnstest"
	"minimail/mta/resolve"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestCache(t *testing.T) {
	srv := dnstest.Start(t,
		"test. 60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30",
		`a.test. 300 IN TXT "v=spf1 -all"`,
		"a.test. 120 IN MX 10 mx.a.test.",
		"mx.a.test. 60 IN A 192.0.2.1",
	)
	srv.Fail("broken.test.")
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cache := resolve.NewCache(resolve.CacheOptions{Now: clk.Now, MaxEntries: 3})
	r := cache.Resolver(srv.Addr)
	ctx := context.Background()
	queries := func() int { return srv.Queries() }

	lookupTXT := func() []string {
		t.Helper()
		txt, err := r.LookupTXT(ctx, "a.test")
		if err != nil {
			t.Fatal(err)
		}
		return txt
	}
	t.Run("an answer is kept for its TTL", func(t *testing.T) {
		before := queries()
		for range 5 {
			if txt := lookupTXT(); len(txt) != 1 || txt[0] != "v=spf1 -all" {
				t.Fatalf("TXT %q", txt)
			}
		}
		if n := queries() - before; n != 1 {
			t.Fatalf("%d queries for 5 lookups", n)
		}
		clk.add(299 * time.Second)
		lookupTXT()
		if n := queries() - before; n != 1 {
			t.Fatalf("asked again before the TTL ran out (%d queries)", n)
		}
		clk.add(2 * time.Second)
		lookupTXT()
		if n := queries() - before; n != 2 {
			t.Fatalf("not asked again after the TTL (%d queries)", n)
		}
	})
	t.Run("NXDOMAIN is kept for the SOA minimum", func(t *testing.T) {
		before := queries()
		for range 3 {
			_, err := r.LookupTXT(ctx, "nothing.test")
			var de *net.DNSError
			if !errorsAs(err, &de) || !de.IsNotFound {
				t.Fatalf("err %v", err)
			}
		}
		if n := queries() - before; n != 1 {
			t.Fatalf("%d queries", n)
		}
		clk.add(31 * time.Second)
		r.LookupTXT(ctx, "nothing.test")
		if n := queries() - before; n != 2 {
			t.Fatalf("negative answer kept past the SOA minimum (%d queries)", n)
		}
	})
	t.Run("SERVFAIL is never kept", func(t *testing.T) {
		before := queries()
		for range 2 {
			if _, err := r.LookupTXT(ctx, "broken.test"); err == nil {
				t.Fatal("no error")
			}
		}
		if queries()-before < 2 {
			t.Fatal("SERVFAIL answered from the cache")
		}
	})
	t.Run("the cache is bounded", func(t *testing.T) {
		for _, name := range []string{"a.test", "mx.a.test", "x1.test", "x2.test", "x3.test"} {
			r.LookupTXT(ctx, name)
		}
		before := queries()
		lookupTXT() // evicted by the later names
		if queries() == before {
			t.Fatal("an entry past MaxEntries is still answered")
		}
	})
	t.Run("MX and the host's address", func(t *testing.T) {
		mx, err := r.LookupMX(ctx, "a.test")
		if err != nil || len(mx) != 1 || mx[0].Host != "mx.a.test." {
			t.Fatalf("MX %v %v", mx, err)
		}
		before := queries()
		if _, err := r.LookupMX(ctx, "a.test"); err != nil {
			t.Fatal(err)
		}
		if queries() != before {
			t.Fatal("MX asked twice")
		}
	})
	if hits, misses := cache.Stats(); hits == 0 || misses == 0 {
		t.Fatalf("stats %d hits, %d misses", hits, misses)
	}
}

// A server that sends NXDOMAIN without an SOA (the zone here has none)
// gives no negative TTL; the cache keeps the answer a few seconds anyway,
// so a burst of messages from a domain without DMARC asks once.
func TestCache_NegativeWithoutSOA(t *testing.T) {
	srv := dnstest.Start(t, `a.test. 300 IN TXT "v=spf1 -all"`)
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := resolve.NewCache(resolve.CacheOptions{Now: clk.Now}).Resolver(srv.Addr)
	ctx := context.Background()
	before := srv.Queries()
	for range 3 {
		_, err := r.LookupTXT(ctx, "_dmarc.nothing.test")
		var de *net.DNSError
		if !errorsAs(err, &de) || !de.IsNotFound {
			t.Fatalf("err %v", err)
		}
	}
	if n := srv.Queries() - before; n != 1 {
		t.Fatalf("%d queries for 3 lookups", n)
	}
	clk.add(4 * time.Second)
	r.LookupTXT(ctx, "_dmarc.nothing.test")
	if n := srv.Queries() - before; n != 1 {
		t.Fatalf("asked again within a few seconds (%d queries)", n)
	}
	clk.add(2 * time.Second)
	r.LookupTXT(ctx, "_dmarc.nothing.test")
	if n := srv.Queries() - before; n != 2 {
		t.Fatalf("not asked again after %d queries: kept too long", n)
	}
}

func errorsAs(err error, target **net.DNSError) bool {
	de, ok := err.(*net.DNSError)
	if ok {
		*target = de
	}
	return ok
}

func BenchmarkCachedLookup(b *testing.B) {
	srv := dnstest.Start(b, `a.test. 300 IN TXT "v=spf1 -all"`)
	r := resolve.NewCache(resolve.CacheOptions{}).Resolver(srv.Addr)
	ctx := context.Background()
	r.LookupTXT(ctx, "a.test")
	b.ReportAllocs()
	for range b.N {
		if _, err := r.LookupTXT(ctx, "a.test"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUncachedLookup(b *testing.B) {
	srv := dnstest.Start(b, `a.test. 300 IN TXT "v=spf1 -all"`)
	r := resolve.New(srv.Addr)
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		if _, err := r.LookupTXT(ctx, "a.test"); err != nil {
			b.Fatal(err)
		}
	}
}

// The cache answers a TXT lookup it holds itself, and what it answers is
// what the standard resolver returns for the same answer: strings of one
// record joined, raw octets (no zone-file escapes), every record, and
// "not found" for a name or a type that does not exist.
func TestCache_LookupTXTAnswersAsTheResolverDoes(t *testing.T) {
	srv := dnstest.Start(t,
		"test. 60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30",
		`multi.test. 300 IN TXT "v=spf1 " "ip4:192.0.2.0/24 -all"`,
		`two.test. 300 IN TXT "first"`,
		`two.test. 300 IN TXT "second"`,
		`quote.test. 300 IN TXT "say \"hi\"; a\\b \255"`,
		"mxonly.test. 300 IN MX 10 mx.test.",
	)
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cache := resolve.NewCache(resolve.CacheOptions{Now: clk.Now})
	r := cache.Resolver(srv.Addr)
	ctx := context.Background()
	for _, name := range []string{"multi.test", "two.test", "quote.test", "mxonly.test", "none.test", "Multi.Test."} {
		t.Run(name, func(t *testing.T) {
			if _, hit, _ := cache.LookupTXT(name); hit && name != "Multi.Test." {
				t.Fatal("a hit before any lookup")
			}
			want, wantErr := r.LookupTXT(ctx, name)
			before := srv.Queries()
			got, hit, err := cache.LookupTXT(name)
			if !hit {
				t.Fatal("no hit after the resolver's lookup")
			}
			if srv.Queries() != before {
				t.Error("a hit asked the server")
			}
			if !slices.Equal(got, want) {
				t.Errorf("TXT %q, resolver %q", got, want)
			}
			var de, wantDE *net.DNSError
			if errors.As(wantErr, &wantDE) != errors.As(err, &de) || (de != nil && de.IsNotFound != wantDE.IsNotFound) {
				t.Errorf("error %#v, resolver %#v", err, wantErr)
			}
		})
	}
	if got := mustTXT(t, cache, "quote.test"); got != "say \"hi\"; a\\b \xff" {
		t.Errorf("escaped record read as %q", got)
	}
	if got := mustTXT(t, cache, "multi.test"); got != "v=spf1 ip4:192.0.2.0/24 -all" {
		t.Errorf("two strings read as %q", got)
	}
	clk.add(301 * time.Second)
	if _, hit, _ := cache.LookupTXT("multi.test"); hit {
		t.Error("a hit after the TTL")
	}
}

func mustTXT(t *testing.T, c *resolve.Cache, name string) string {
	t.Helper()
	txts, hit, err := c.LookupTXT(name)
	if !hit || err != nil || len(txts) != 1 {
		t.Fatalf("LookupTXT(%s) = %q, %v, %v", name, txts, hit, err)
	}
	return txts[0]
}

func BenchmarkCacheLookupTXT(b *testing.B) {
	srv := dnstest.Start(b, `a.test. 300 IN TXT "v=spf1 -all"`)
	cache := resolve.NewCache(resolve.CacheOptions{})
	if _, err := cache.Resolver(srv.Addr).LookupTXT(context.Background(), "a.test"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for range b.N {
		if _, hit, err := cache.LookupTXT("a.test"); !hit || err != nil {
			b.Fatal(hit, err)
		}
	}
}
