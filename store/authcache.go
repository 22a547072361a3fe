package store

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"
)

// authCache remembers passwords recently verified, so that a mail client
// that logs in every few minutes (POP3 polling, a submission per message)
// costs one bcrypt computation per TTL, not one per login; Dovecot's
// auth_cache is the same idea. It never answers "wrong": a password not in
// it is checked with bcrypt, so a guesser gains nothing.
//
// An entry is a keyed hash (HMAC-SHA-256 under a key drawn at open, never
// stored) of the user's stored bcrypt hash and the password, so the cache
// holds no password, and a new password, which changes the stored hash,
// matches no old entry: passwd and del need not tell the cache.
type authCache struct {
	key [32]byte
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[[32]byte]time.Time // -> verified at
	order   [][32]byte
}

const (
	authCacheTTL = 15 * time.Minute
	authCacheMax = 10000
)

func newAuthCache(now func() time.Time) *authCache {
	c := &authCache{ttl: authCacheTTL, max: authCacheMax, now: now, entries: map[[32]byte]time.Time{}}
	if c.now == nil {
		c.now = time.Now
	}
	rand.Read(c.key[:])
	return c
}

func (c *authCache) sum(hash []byte, password string) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write(hash)
	m.Write([]byte{0})
	m.Write([]byte(password))
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// verified reports whether password was checked against hash within the TTL.
func (c *authCache) verified(hash []byte, password string) bool {
	k := c.sum(hash, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.entries[k]
	return ok && c.now().Sub(at) < c.ttl
}

// remember records a successful check; the oldest entries go first.
func (c *authCache) remember(hash []byte, password string) {
	k := c.sum(hash, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok {
		for len(c.order) >= c.max {
			delete(c.entries, c.order[0])
			c.order = c.order[1:]
		}
		c.order = append(c.order, k)
	}
	c.entries[k] = c.now()
}
