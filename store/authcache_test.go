package store

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestAuthenticate_VerifiedPasswordsAreCachedNotGuesses: a client logging
// in again with the right password costs no second bcrypt within the TTL;
// a wrong password is always checked; a changed password, or a deleted
// and re-created user, never matches what was cached.
func TestAuthenticate_VerifiedPasswordsAreCachedNotGuesses(t *testing.T) {
	var compares atomic.Int32
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, err := Open(t.TempDir(), Options{
		BcryptCost: bcrypt.MinCost,
		compareHash: func(h, p []byte) error {
			compares.Add(1)
			return bcrypt.CompareHashAndPassword(h, p)
		},
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.AddUser("alice@example.org", "first password"); err != nil {
		t.Fatal(err)
	}
	login := func(pw string, wantOK bool, wantCompares int32) {
		t.Helper()
		before := compares.Load()
		_, err := st.Authenticate("", "alice@example.org", pw)
		if (err == nil) != wantOK {
			t.Fatalf("Authenticate(%q): %v", pw, err)
		}
		if n := compares.Load() - before; n != wantCompares {
			t.Fatalf("Authenticate(%q): %d bcrypt compares, want %d", pw, n, wantCompares)
		}
	}
	login("first password", true, 1)
	login("first password", true, 0)
	login("Alice's guess", false, 1)
	login("Alice's guess", false, 1)

	mu.Lock()
	now = now.Add(authCacheTTL)
	mu.Unlock()
	login("first password", true, 1) // the TTL ran out
	login("first password", true, 0)

	if err := st.SetPassword("alice@example.org", "second password"); err != nil {
		t.Fatal(err)
	}
	login("first password", false, 1)
	login("second password", true, 1)

	if err := st.DeleteUser("alice@example.org"); err != nil {
		t.Fatal(err)
	}
	login("second password", false, 1) // the dummy hash
	if err := st.AddUser("alice@example.org", "second password"); err != nil {
		t.Fatal(err)
	}
	login("second password", true, 1) // a new salt: a new stored hash
}

func TestAuthCache_Bounded(t *testing.T) {
	c := newAuthCache(nil)
	c.max = 3
	for _, pw := range []string{"a", "b", "c", "d"} {
		c.remember([]byte("hash"), pw)
	}
	if c.verified([]byte("hash"), "a") {
		t.Fatal("the oldest entry was kept past max")
	}
	if !c.verified([]byte("hash"), "d") || len(c.entries) != 3 {
		t.Fatalf("entries %d", len(c.entries))
	}
}
