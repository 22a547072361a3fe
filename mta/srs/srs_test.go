package srs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var day0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func rewriter(now time.Time) *Rewriter {
	return &Rewriter{Secret: []byte("0123456789abcdef0123456789abcdef"), Now: func() time.Time { return now }}
}

func TestForwardThenReverseGivesTheOriginalBack(t *testing.T) {
	for _, sender := range []string{"bob@remote.test", "Bob.Smith@Remote.Test", "a=b@x.test", "x+tag@sub.x.test"} {
		r := rewriter(day0)
		addr, err := r.Forward(sender, "example.org")
		if err != nil {
			t.Fatal(err)
		}
		local, domain, _ := strings.Cut(addr, "@")
		if domain != "example.org" || !strings.HasPrefix(local, "SRS0=") {
			t.Fatalf("Forward(%q) = %q, want SRS0=...@example.org", sender, addr)
		}
		for _, l := range []string{local, strings.ToLower(local), strings.ToUpper(local)} {
			got, err := rewriter(day0.Add(20 * 24 * time.Hour)).Reverse(l)
			if err != nil {
				t.Fatalf("Reverse(%q): %v", l, err)
			}
			if !strings.EqualFold(got, sender) {
				t.Errorf("Reverse(%q) = %q, want %q", l, got, sender)
			}
		}
	}
}

func TestForwardWritesLibsrs2Layout(t *testing.T) {
	addr, _ := rewriter(day0).Forward("bob@remote.test", "example.org")
	// 2026-12-02 is day 20789; 20789 % 1024 = 309 = 9*32+21: "JV".
	parts := strings.Split(strings.TrimSuffix(addr, "@example.org"), "=")
	if len(parts) != 5 || parts[0] != "SRS0" || len(parts[1]) != HashLength || parts[2] != "JV" || parts[3] != "remote.test" || parts[4] != "bob" {
		t.Fatalf("Forward = %q, want SRS0=HHHH=JV=remote.test=bob@example.org", addr)
	}
}

func TestReverseRefuses(t *testing.T) {
	r := rewriter(day0)
	good, _ := r.Forward("bob@remote.test", "example.org")
	good = strings.TrimSuffix(good, "@example.org")
	p, _ := Parse(good)
	flip := func(s string) string {
		b := []byte(s)
		if b[0] == 'A' {
			b[0] = 'B'
		} else {
			b[0] = 'A'
		}
		return string(b)
	}
	for _, tt := range []struct {
		name  string
		local string
		now   time.Time
		want  error
	}{
		{"a plain address", "bob", day0, ErrNotSRS},
		{"SRS1 is not ours", "SRS1=x=y.test==HHHH=TT=d=l", day0, ErrNotSRS},
		{"missing parts", "SRS0=abcd=JV=remote.test", day0, ErrSyntax},
		{"a bad timestamp character", "SRS0=" + p.Hash + "=J1=remote.test=bob", day0, ErrSyntax},
		{"a forged hash", "SRS0=" + flip(p.Hash) + "=" + p.Stamp + "=remote.test=bob", day0, ErrBadHash},
		{"a short hash", "SRS0=" + p.Hash[:3] + "=" + p.Stamp + "=remote.test=bob", day0, ErrBadHash},
		{"another original sender under the same hash", "SRS0=" + p.Hash + "=" + p.Stamp + "=remote.test=eve", day0, ErrBadHash},
		{"another secret", good, day0, ErrBadHash},
		{"22 days later", good, day0.Add(22 * 24 * time.Hour), ErrExpired},
		{"from the future", good, day0.Add(-2 * 24 * time.Hour), ErrExpired},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rr := rewriter(tt.now)
			if tt.name == "another secret" {
				rr.Secret = []byte("another secret entirely")
			}
			_, err := rr.Reverse(tt.local)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Reverse(%q) = %v, want %v", tt.local, err, tt.want)
			}
		})
	}
}

func TestTimestampWrapsAround1024Days(t *testing.T) {
	// Day 1023 of a cycle, reversed on day 2 of the next: 3 days old.
	start := time.Unix(int64((1024*20+1023)*day), 0)
	addr, _ := rewriter(start).Forward("bob@remote.test", "example.org")
	local := strings.TrimSuffix(addr, "@example.org")
	if _, err := rewriter(start.Add(3 * 24 * time.Hour)).Reverse(local); err != nil {
		t.Fatalf("across the wrap: %v", err)
	}
}

func TestIsSRSSeparators(t *testing.T) {
	for local, want := range map[string]bool{"SRS0=x": true, "srs0+x": true, "SRS0-x": true, "SRS0x": false, "SRS": false, "bob": false} {
		if got := IsSRS(local); got != want {
			t.Errorf("IsSRS(%q) = %v, want %v", local, got, want)
		}
	}
}
