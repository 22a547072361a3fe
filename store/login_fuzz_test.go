package store_test

import (
	"strings"
	"testing"

	"minimail/store"
)

// FuzzLoginName: a name LoginName takes is an address a user could have
// been created with, in the one spelling the store and the login throttle
// key on.
func FuzzLoginName(f *testing.F) {
	for _, s := range []string{
		"alice@example.org", " ALICE@EXAMPLE.ORG\t", "alice@example.org\x00", "a@b@c", "<a@b>",
		"bücher@exämple.test", "alice\xff@example.org", strings.Repeat("a", 250) + "@x.test",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		key, err := store.LoginName(name)
		if err != nil {
			return
		}
		if _, err := store.CanonicalAddress(name); err != nil {
			t.Fatalf("LoginName took %q, which AddUser refuses: %v", name, err)
		}
		if key != strings.ToLower(name) || key != store.Key(name) || len(key) > 254 {
			t.Fatalf("LoginName(%q) = %q", name, key)
		}
		if again, err := store.LoginName(key); err != nil || again != key {
			t.Fatalf("LoginName(%q) = %q, %v; not stable", key, again, err)
		}
		if strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '\ufffd' }) {
			t.Fatalf("LoginName(%q) = %q holds a space or control character", name, key)
		}
	})
}
