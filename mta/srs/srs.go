// Package srs implements the Sender Rewriting Scheme in its SRS0 form, as
// libsrs2 and postsrsd write it, so that mail forwarded to another domain
// carries an envelope sender in one of ours (SPF passes at the next hop)
// and a bounce to it finds its way back to the original sender:
//
//	SRS0=HHHH=TT=orig-domain=orig-local@forwarding-domain
//
// HHHH is the first HashLength characters of the base64 HMAC-SHA1, keyed
// with the secret, of the lower-cased timestamp, original domain and
// original local part (libsrs2's srs_hash_create); TT is the day number
// (Unix time / 86400) modulo 1024 in two base32 characters (RFC 4648
// alphabet), valid for MaxAge days. Both are compared case-insensitively,
// as libsrs2 does, because some MTAs change the case of local parts. The
// separator after "SRS0" may be "=", "+" or "-" on input (libsrs2 accepts
// all three); we write "=".
//
// With the same secret, Forward writes what postsrsd writes and each
// reverses the other's addresses (TestInteropWithPostsrsd runs postsrsd).
//
// A sender that is already an SRS0 address of another forwarder is
// wrapped again as a plain address (not SRS1): its reversal gives back
// that forwarder's address, which it reverses in turn.
package srs

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

const (
	// HashLength is libsrs2's and postsrsd's default: 4 base64 characters.
	HashLength = 4
	// DefaultMaxAge is libsrs2's default validity, in days.
	DefaultMaxAge = 21

	timeChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	timeSlots = 1024 // two base32 characters
	day       = 24 * 60 * 60
)

var (
	// ErrNotSRS means the address does not start with SRS0.
	ErrNotSRS = errors.New("not an SRS0 address")
	// ErrSyntax means an SRS0 address lacks one of its parts.
	ErrSyntax = errors.New("malformed SRS0 address")
	// ErrBadHash means the hash does not match: forged or damaged.
	ErrBadHash = errors.New("SRS hash does not match")
	// ErrExpired means the timestamp is older than MaxAge days (or in
	// the future, which reads as older still).
	ErrExpired = errors.New("SRS timestamp expired")
)

// Address is an SRS0 local part taken apart (Parse).
type Address struct {
	Hash, Stamp, Domain, Local string
}

// Original is the address the SRS0 address stands for.
func (a Address) Original() string { return a.Local + "@" + a.Domain }

// IsSRS reports whether local (a local part) is in SRS0 form, correct or
// not: such an address is either reversed or refused, never delivered
// elsewhere (a catch-all must not take a forged one).
func IsSRS(local string) bool {
	return len(local) >= 5 && strings.EqualFold(local[:4], "SRS0") && strings.IndexByte("=+-", local[4]) >= 0
}

// Parse takes an SRS0 local part apart, checking its syntax only.
func Parse(local string) (Address, error) {
	if !IsSRS(local) {
		return Address{}, ErrNotSRS
	}
	// HHHH=TT=domain=local: the original local part may itself hold '='.
	parts := strings.SplitN(local[5:], "=", 4)
	if len(parts) != 4 {
		return Address{}, fmt.Errorf("%w: want SRS0=hash=stamp=domain=local", ErrSyntax)
	}
	a := Address{Hash: parts[0], Stamp: parts[1], Domain: parts[2], Local: parts[3]}
	switch {
	case a.Hash == "":
		return Address{}, fmt.Errorf("%w: empty hash", ErrSyntax)
	case len(a.Stamp) != 2 || stampValue(a.Stamp) < 0:
		return Address{}, fmt.Errorf("%w: timestamp %q is not two base32 characters", ErrSyntax, a.Stamp)
	case a.Domain == "" || strings.ContainsAny(a.Domain, "@ "):
		return Address{}, fmt.Errorf("%w: bad original domain %q", ErrSyntax, a.Domain)
	case a.Local == "" || strings.ContainsAny(a.Local, "@ "):
		return Address{}, fmt.Errorf("%w: bad original local part %q", ErrSyntax, a.Local)
	}
	return a, nil
}

// Rewriter makes and checks SRS0 addresses with one secret.
type Rewriter struct {
	Secret []byte
	// MaxAge is how many days an address stays valid; 0 = DefaultMaxAge.
	MaxAge int
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

func (r *Rewriter) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

func (r *Rewriter) maxAge() int {
	if r.MaxAge <= 0 {
		return DefaultMaxAge
	}
	return r.MaxAge
}

// Forward returns the SRS0 address for sender (local@domain) at domain.
func (r *Rewriter) Forward(sender, domain string) (string, error) {
	at := strings.LastIndexByte(sender, '@')
	if at <= 0 || at == len(sender)-1 {
		return "", fmt.Errorf("srs: sender %q is not local@domain", sender)
	}
	if len(r.Secret) == 0 {
		return "", errors.New("srs: no secret")
	}
	local, host := sender[:at], sender[at+1:]
	stamp := stampFor(r.now())
	return "SRS0=" + r.hash(stamp, host, local) + "=" + stamp + "=" + host + "=" + local + "@" + domain, nil
}

// Reverse checks an SRS0 local part (hash, then age) and returns the
// original address. The errors wrap ErrNotSRS, ErrSyntax, ErrBadHash or
// ErrExpired.
func (r *Rewriter) Reverse(local string) (string, error) {
	a, err := Parse(local)
	if err != nil {
		return "", err
	}
	if len(r.Secret) == 0 {
		return "", errors.New("srs: no secret")
	}
	want := r.hash(strings.ToUpper(a.Stamp), a.Domain, a.Local)
	if len(a.Hash) != HashLength ||
		subtle.ConstantTimeCompare([]byte(strings.ToLower(a.Hash)), []byte(strings.ToLower(want))) != 1 {
		return "", ErrBadHash
	}
	then := stampValue(a.Stamp)
	now := int(r.now().Unix()/day) % timeSlots
	if now < then {
		now += timeSlots
	}
	if now-then > r.maxAge() {
		return "", ErrExpired
	}
	return a.Original(), nil
}

// hash is libsrs2's: HMAC-SHA1 of the lower-cased parts, base64, cut to
// HashLength.
func (r *Rewriter) hash(stamp, domain, local string) string {
	m := hmac.New(sha1.New, r.Secret)
	m.Write([]byte(strings.ToLower(stamp)))
	m.Write([]byte(strings.ToLower(domain)))
	m.Write([]byte(strings.ToLower(local)))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))[:HashLength]
}

// stampFor is t's day number modulo 1024 in two base32 characters.
func stampFor(t time.Time) string {
	n := int(t.Unix()/day) % timeSlots
	return string([]byte{timeChars[n>>5], timeChars[n&31]})
}

// stampValue decodes a two-character stamp, any case; -1 if it is none.
func stampValue(s string) int {
	if len(s) != 2 {
		return -1
	}
	v := 0
	for i := 0; i < 2; i++ {
		j := strings.IndexByte(timeChars, upper(s[i]))
		if j < 0 {
			return -1
		}
		v = v<<5 | j
	}
	return v
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}
