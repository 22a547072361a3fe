package antispam

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"minimail/mta/guard"
)

// Greylisting defaults (Postgrey's, the reference implementation).
const (
	// DefaultGreylistKeep is how long a triplet that passed, and a domain
	// that delivered, are remembered after their last use.
	DefaultGreylistKeep = 30 * 24 * time.Hour
	// DefaultGreylistRetryWindow is how long a triplet that has not passed
	// yet waits for its retry; after it, the next attempt starts anew.
	DefaultGreylistRetryWindow = 48 * time.Hour
	// greylistPruneEvery spaces the sweeps of expired records.
	greylistPruneEvery = time.Hour
)

// GreylistStore keeps the greylist's records: small values under string
// keys (*store.Store implements it, in one bucket of the database).
// UpdateGreylist reads the values of keys (nil for none), passes them to
// update and stores what it returns in their place (nil deletes), all in
// one committed transaction; update may run more than once and must have
// no other effect. PruneGreylist deletes every record expired reports
// true for.
type GreylistStore interface {
	UpdateGreylist(keys []string, update func(vals [][]byte) [][]byte) error
	PruneGreylist(expired func(val []byte) bool) (int, error)
}

// Greylist defers the first attempt at each unknown (client network,
// envelope sender, recipient) triplet: a real MTA retries after a few
// minutes, most junk senders never do. The network is the client's /24
// (IPv4) or /64 (IPv6), since large senders retry from another address of
// their pool. A sender that authenticated (SPF or DKIM pass) for a domain
// that has delivered mail here before skips it altogether.
type Greylist struct {
	Delay       time.Duration // how long a new triplet waits
	Store       GreylistStore
	Now         func() time.Time // nil means time.Now
	Keep        time.Duration    // 0 = DefaultGreylistKeep
	RetryWindow time.Duration    // 0 = DefaultGreylistRetryWindow

	mu        sync.Mutex
	lastPrune time.Time
}

// record is a stored value: when the triplet was first seen and when it
// last passed (zero: not yet). A domain's record has both set to when it
// last delivered.
type record struct{ first, passed time.Time }

func decode(v []byte) (record, bool) {
	if len(v) != 16 {
		return record{}, false
	}
	r := record{first: time.Unix(0, int64(binary.BigEndian.Uint64(v)))}
	if p := int64(binary.BigEndian.Uint64(v[8:])); p != 0 {
		r.passed = time.Unix(0, p)
	}
	return r, true
}

func (r record) encode() []byte {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, uint64(r.first.UnixNano()))
	if !r.passed.IsZero() {
		binary.BigEndian.PutUint64(v[8:], uint64(r.passed.UnixNano()))
	}
	return v
}

func (g *Greylist) now() time.Time {
	if g.Now == nil {
		return time.Now()
	}
	return g.Now()
}

func (g *Greylist) keep() time.Duration {
	if g.Keep <= 0 {
		return DefaultGreylistKeep
	}
	return g.Keep
}

func (g *Greylist) retryWindow() time.Duration {
	if g.RetryWindow <= 0 {
		return DefaultGreylistRetryWindow
	}
	return max(g.RetryWindow, g.Delay)
}

// expired reports whether a record is past keeping at now.
func (g *Greylist) expired(r record, now time.Time) bool {
	if r.passed.IsZero() {
		return !now.Before(r.first.Add(g.retryWindow()))
	}
	return !now.Before(r.passed.Add(g.keep()))
}

// TripletKey is the key of one triplet: the client's network, the
// envelope sender ("<>" for the null sender) and the recipient, the
// addresses lower-cased.
func TripletKey(ip netip.Addr, from, rcpt string) string {
	if from == "" {
		from = "<>"
	}
	return "t\x00" + guard.Subnet(ip).String() + "\x00" + strings.ToLower(from) + "\x00" + strings.ToLower(rcpt)
}

func domainKey(domain string) string { return "d\x00" + strings.ToLower(domain) }

// Check decides one message from ip, from sender from, to rcpts, whose
// sender authenticated (SPF or DKIM pass) for the domains authenticated.
// It returns 0 when the message may pass, else how long until a retry is
// accepted; every triplet of the message is recorded either way, so the
// retry passes for all recipients at once.
func (g *Greylist) Check(ip netip.Addr, from string, rcpts, authenticated []string) (time.Duration, error) {
	now := g.now()
	g.maybePrune(now)
	keys := make([]string, 0, len(authenticated)+len(rcpts))
	for _, d := range authenticated {
		keys = append(keys, domainKey(d))
	}
	for _, rc := range rcpts {
		keys = append(keys, TripletKey(ip, from, rc))
	}
	var wait time.Duration
	err := g.Store.UpdateGreylist(keys, func(vals [][]byte) [][]byte {
		wait = 0
		out := make([][]byte, len(vals))
		copy(out, vals)
		for i := range authenticated {
			if r, ok := decode(vals[i]); ok && !g.expired(r, now) {
				return out // a known domain: nothing changes
			}
		}
		for i := len(authenticated); i < len(vals); i++ {
			r, ok := decode(vals[i])
			if !ok || g.expired(r, now) {
				r = record{first: now}
			}
			if left := r.first.Add(g.Delay).Sub(now); left > 0 && r.passed.IsZero() {
				wait = max(wait, left)
			} else {
				r.passed = now
			}
			out[i] = r.encode()
		}
		return out
	})
	if err != nil {
		return 0, fmt.Errorf("greylist: %w", err)
	}
	return wait, nil
}

// Delivered records that mail authenticated for domains was accepted, so
// that their next messages skip greylisting.
func (g *Greylist) Delivered(domains []string) error {
	if len(domains) == 0 {
		return nil
	}
	now := g.now()
	keys := make([]string, len(domains))
	for i, d := range domains {
		keys[i] = domainKey(d)
	}
	err := g.Store.UpdateGreylist(keys, func(vals [][]byte) [][]byte {
		out := make([][]byte, len(vals))
		for i := range out {
			out[i] = record{first: now, passed: now}.encode()
		}
		return out
	})
	if err != nil {
		return fmt.Errorf("greylist: %w", err)
	}
	return nil
}

// maybePrune sweeps the expired records once an hour, in the path of a
// check so that no timer is needed; a sweep that fails is tried at the
// next check.
func (g *Greylist) maybePrune(now time.Time) {
	g.mu.Lock()
	due := g.lastPrune.IsZero() || now.Sub(g.lastPrune) >= greylistPruneEvery
	if due {
		g.lastPrune = now
	}
	g.mu.Unlock()
	if due {
		g.Prune(now)
	}
}

// Prune deletes the records expired at now and reports how many.
func (g *Greylist) Prune(now time.Time) (int, error) {
	return g.Store.PruneGreylist(func(v []byte) bool {
		r, ok := decode(v)
		return !ok || g.expired(r, now)
	})
}
