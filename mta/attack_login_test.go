package mta

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"minimail/mta/guard"
)

// delays records what an AuthThrottle is asked to wait, instead of waiting.
type delays struct {
	mu  sync.Mutex
	got []time.Duration
}

func (d *delays) sleep(w time.Duration, _ <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, w)
}

func (d *delays) list() []time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Duration(nil), d.got...)
}

// dialTLSFrom connects to the submissions port from a chosen loopback
// address, so a test can play many clients; it skips where the host
// cannot bind 127.0.0.x.
func dialTLSFrom(t *testing.T, e *env, ip net.IP) *client {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: ip}}
	c, err := tls.DialWithDialer(d, "tcp", e.subsAddr, e.clientTLS)
	if err != nil {
		t.Skipf("cannot dial from %v: %v", ip, err)
	}
	cl := newClient(t, c)
	cl.expect("220 " + testHost)
	cl.cmd("EHLO client.test", "250 ")
	return cl
}

// TestAttack_LoginNameSpellings: a login name is an address as the store
// holds it, in any case. Surrounding spaces, control bytes and other
// non-addresses fail with the right password exactly as a wrong password
// fails, so they neither log in nor tell which names exist. (A name with
// no @ at all gets a hint instead: TestAuth_LoginWithoutDomain.)
func TestAttack_LoginNameSpellings(t *testing.T) {
	var d delays
	e := newEnv(t, func(o *Options, _ *Local) {
		o.AuthThrottle = &guard.AuthThrottle{MaxPerIP: 1000, Sleep: d.sleep}
	})
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	// auth logs in with LOGIN, whose user name may hold any byte (PLAIN
	// would split it at a NUL), and returns the final reply.
	auth := func(t *testing.T, user, pass string) string {
		cl := dialTLSFrom(t, e, net.IPv4(127, 0, 0, 1))
		cl.cmd("AUTH LOGIN "+b64(user), "334 ")
		cl.write(b64(pass) + "\r\n")
		lines, err := cl.reply()
		if err != nil {
			t.Fatalf("AUTH as %q: %v", user, err)
		}
		return lines[len(lines)-1]
	}
	wrong := auth(t, "alice@example.org", "wrong")
	if !strings.HasPrefix(wrong, "535 5.7.8 ") {
		t.Fatalf("wrong password: %q", wrong)
	}
	for _, tc := range []struct{ name, user string }{
		{"leading space", " alice@example.org"},
		{"trailing tab", "alice@example.org\t"},
		{"spaces and upper case", " ALICE@EXAMPLE.ORG\t"},
		{"no-break space, which Unicode trimming would drop", "\u00a0alice@example.org"},
		{"trailing NUL", "alice@example.org\x00"},
		{"control byte inside", "ali\x01ce@example.org"},
		{"trailing CR", "alice@example.org\r"},
		{"angle brackets", "<alice@example.org>"},
		{"longer than any address", strings.Repeat("a", 250) + "@example.org"},
		{"unknown user", "mallory@example.org"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := auth(t, tc.user, testPass); got != wrong {
				t.Fatalf("AUTH as %q with alice's password: %q, want %q as for a wrong password", tc.user, got, wrong)
			}
		})
	}
	t.Run("the address in any case logs in", func(t *testing.T) {
		if got := auth(t, "ALICE@Example.Org", testPass); !strings.HasPrefix(got, "235 ") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("the log gives the reason and no control byte", func(t *testing.T) {
		if strings.Contains(e.logs.String(), "ali\x01ce") {
			t.Fatal("a control byte of a login name reached the log")
		}
		if !strings.Contains(e.logs.String(), `"reason":"login name is not an address"`) {
			t.Fatalf("no reason logged for a refused name:\n%s", e.logs)
		}
	})
}

// TestAttack_LoginNameSpellingsGetNoFreshDelay: the per-user slowdown
// counts one name however it is spelled. Guessers spread over many
// addresses once got a fresh delay for " bob@...", "bob@...\t" and so on;
// now such spellings share one count, and none of them logs in.
func TestAttack_LoginNameSpellingsGetNoFreshDelay(t *testing.T) {
	var d delays
	base := 10 * time.Millisecond
	e := newEnv(t, func(o *Options, _ *Local) {
		o.AuthThrottle = &guard.AuthThrottle{MaxPerIP: 2, MaxPerSubnet: 1000, Sleep: d.sleep}
		o.AuthFailDelay = base
	})
	from := func(host byte) *client { return dialTLSFrom(t, e, net.IPv4(127, 0, 0, host)) }
	// Each client stays within its own per-IP allowance of two.
	a := from(1)
	a.cmd("AUTH PLAIN "+plain("", "alice@example.org", "guess1"), "535 5.7.8")
	a.cmd("AUTH PLAIN "+plain("", "ALICE@example.org", "guess2"), "535 5.7.8")
	b := from(2)
	b.cmd("AUTH PLAIN "+plain("", " alice@example.org", "guess3"), "535 5.7.8")
	b.cmd("AUTH PLAIN "+plain("", "alice@example.org\t", "guess4"), "535 5.7.8")
	c := from(3)
	c.cmd("AUTH PLAIN "+plain("", "\talice@example.org", "guess5"), "535 5.7.8")
	c.cmd("AUTH PLAIN "+plain("", " ALICE@EXAMPLE.ORG\t", testPass), "535 5.7.8")
	want := []time.Duration{base, base, base, base, time.Second, 2 * time.Second}
	if got := d.list(); !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v: each spelling must not start afresh", got, want)
	}
	// The owner is never slowed down by any of it.
	from(4).cmd("AUTH PLAIN "+plain("", "alice@example.org", testPass), "235 2.0.0")
	if got := d.list(); len(got) != len(want) {
		t.Fatalf("the right password was delayed: %v", got[len(want):])
	}
}
