package store_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"minimail/store"
)

func usageOf(t testing.TB, s *store.Store, addr string) (used, quota int64) {
	t.Helper()
	used, quota, err := s.Usage(addr)
	if err != nil {
		t.Fatalf("Usage(%s): %v", addr, err)
	}
	return used, quota
}

func TestUsage_SumsHeadsAndBodiesAndFallsWithDelete(t *testing.T) {
	s := storeWithUsers(t, "a@example.org", "b@example.org")
	msg := []byte("Subject: x\r\n\r\nbody\r\n")
	ids, err := s.AppendMany([]store.Delivery{
		{Address: "a@example.org", Header: []byte("Delivered-To: a@example.org\r\n"), Message: msg},
		{Address: "b@example.org", Message: msg},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append("a@example.org", msg); err != nil {
		t.Fatal(err)
	}
	want := int64(len("Delivered-To: a@example.org\r\n") + 2*len(msg))
	if used, quota := usageOf(t, s, "a@example.org"); used != want || quota != 0 {
		t.Errorf("a: used %d quota %d, want %d 0", used, quota, want)
	}
	if used, _ := usageOf(t, s, "b@example.org"); used != int64(len(msg)) {
		t.Errorf("b: used %d, want %d (a shared body counts in every mailbox)", used, len(msg))
	}
	if err := s.Delete("a@example.org", ids[:1]); err != nil {
		t.Fatal(err)
	}
	if used, _ := usageOf(t, s, "a@example.org"); used != int64(len(msg)) {
		t.Errorf("a after delete: used %d, want %d", used, len(msg))
	}
	if _, _, err := s.Usage("nobody@example.org"); !errors.Is(err, store.ErrNoUser) {
		t.Errorf("Usage(unknown) = %v, want ErrNoUser", err)
	}
}

func TestAppendMany_Quota(t *testing.T) {
	msg := []byte(strings.Repeat("x", 100))
	t.Run("the user's own quota refuses the copy that would pass it", func(t *testing.T) {
		s := storeWithUsers(t, "a@example.org")
		if err := s.SetQuota("a@example.org", 250); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if _, err := s.Append("a@example.org", msg); err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
		}
		_, err := s.Append("a@example.org", msg)
		if !errors.Is(err, store.ErrOverQuota) {
			t.Fatalf("third append: %v, want ErrOverQuota", err)
		}
		if used, quota := usageOf(t, s, "a@example.org"); used != 200 || quota != 250 {
			t.Errorf("used %d quota %d, want 200 250", used, quota)
		}
	})
	t.Run("exactly at the quota fits; one more octet does not", func(t *testing.T) {
		s := storeWithUsers(t, "a@example.org")
		d := store.Delivery{Address: "a@example.org", Message: msg, DefaultQuota: 100}
		if _, err := s.AppendMany([]store.Delivery{d}); err != nil {
			t.Fatalf("message of exactly the quota: %v", err)
		}
		d.Message = []byte("y")
		if _, err := s.AppendMany([]store.Delivery{d}); !errors.Is(err, store.ErrOverQuota) {
			t.Fatalf("one octet at a full mailbox: %v, want ErrOverQuota", err)
		}
	})
	t.Run("the default applies only without a quota of the user's own", func(t *testing.T) {
		s := storeWithUsers(t, "a@example.org")
		if err := s.SetQuota("a@example.org", 1000); err != nil {
			t.Fatal(err)
		}
		d := store.Delivery{Address: "a@example.org", Message: msg, DefaultQuota: 50}
		if _, err := s.AppendMany([]store.Delivery{d}); err != nil {
			t.Fatalf("own quota 1000, default 50: %v", err)
		}
		if err := s.SetQuota("a@example.org", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendMany([]store.Delivery{d}); !errors.Is(err, store.ErrOverQuota) {
			t.Fatalf("own quota removed, default 50: %v, want ErrOverQuota", err)
		}
	})
	t.Run("copies in one call count against each other", func(t *testing.T) {
		s := storeWithUsers(t, "a@example.org")
		d := store.Delivery{Address: "a@example.org", Message: msg, DefaultQuota: 150}
		if _, err := s.AppendMany([]store.Delivery{d, d}); !errors.Is(err, store.ErrOverQuota) {
			t.Fatalf("two copies of 100 in 150: %v, want ErrOverQuota", err)
		}
		if used, _ := usageOf(t, s, "a@example.org"); used != 0 {
			t.Errorf("used %d after a refused call, want 0 (all or nothing)", used)
		}
	})
	t.Run("IgnoreQuota stores past it", func(t *testing.T) {
		s := storeWithUsers(t, "a@example.org")
		d := store.Delivery{Address: "a@example.org", Message: msg, DefaultQuota: 10, IgnoreQuota: true}
		if _, err := s.AppendMany([]store.Delivery{d}); err != nil {
			t.Fatal(err)
		}
		if used, _ := usageOf(t, s, "a@example.org"); used != 100 {
			t.Errorf("used %d, want 100", used)
		}
	})
	t.Run("a negative quota is refused", func(t *testing.T) {
		s := storeWithUsers(t, "a@example.org")
		if err := s.SetQuota("a@example.org", -1); !errors.Is(err, store.ErrBadQuota) {
			t.Errorf("SetQuota(-1) = %v, want ErrBadQuota", err)
		}
		if err := s.SetQuota("nobody@example.org", 1); !errors.Is(err, store.ErrNoUser) {
			t.Errorf("SetQuota(unknown) = %v, want ErrNoUser", err)
		}
	})
}

func TestUsers_ShowUseAndQuota(t *testing.T) {
	s := storeWithUsers(t, "a@example.org", "b@example.org")
	if err := s.SetQuota("b@example.org", 5000); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append("a@example.org", []byte("12345")); err != nil {
		t.Fatal(err)
	}
	us, err := s.Users()
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %d %d %s %d %d", us[0].Address, us[0].Used, us[0].Quota, us[1].Address, us[1].Used, us[1].Quota)
	if want := "a@example.org 5 0 b@example.org 0 5000"; got != want {
		t.Errorf("Users: %s, want %s", got, want)
	}
}

// A user record written before quotas has no "quota" field: it reads as
// quota 0 (none of its own) with no migration, and setting one keeps the
// password.
func TestUserRecordWithoutQuotaField_ReadsAsZero(t *testing.T) {
	dir := t.TempDir()
	func() {
		s := openStore(t, dir)
		if err := s.AddUser("a@example.org", "pw"); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}()
	boltFile(t, minimailDB(t, dir), nil, func(tx *bolt.Tx) error {
		old := `{"address":"a@example.org","hash":"` + hashOf(t, tx) + `","created":"2024-01-01T00:00:00Z"}`
		return tx.Bucket([]byte("users")).Put([]byte("a@example.org"), []byte(old))
	})
	s := openStore(t, dir)
	if _, quota := usageOf(t, s, "a@example.org"); quota != 0 {
		t.Errorf("quota %d from a record without the field, want 0", quota)
	}
	if err := s.SetQuota("a@example.org", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate("", "a@example.org", "pw"); err != nil {
		t.Errorf("password after SetQuota: %v", err)
	}

	// The schema 1 fixture's records predate the field too.
	s1 := openStore(t, schema1Dir(t))
	if used, quota := usageOf(t, s1, alice); used == 0 || quota != 0 {
		t.Errorf("schema 1 alice: used %d quota %d, want >0 and 0", used, quota)
	}
}

// hashOf returns the JSON (base64) of a@example.org's stored hash.
func hashOf(t *testing.T, tx *bolt.Tx) string {
	v := string(tx.Bucket([]byte("users")).Get([]byte("a@example.org")))
	i := strings.Index(v, `"hash":"`) + len(`"hash":"`)
	return v[i : i+strings.IndexByte(v[i:], '"')]
}

// BenchmarkUsage is the check at RCPT of a 10,000-message mailbox with a
// quota; BenchmarkAppendUnderQuota the delivery's write into it, which
// checks the quota again in the single writer.
func BenchmarkUsage(b *testing.B) {
	s, _ := mailboxOf10000(b)
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := s.Usage("a@example.org"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendUnderQuota(b *testing.B) {
	s, ds := mailboxOf10000(b)
	if err := s.SetQuota("a@example.org", 1<<40); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.AppendMany(ds[:1]); err != nil {
			b.Fatal(err)
		}
	}
}

// mailboxOf10000 is a store whose a@example.org holds 10,000 small
// messages, and the deliveries that put them there.
func mailboxOf10000(b *testing.B) (*store.Store, []store.Delivery) {
	s := storeWithUsers(b, "a@example.org")
	msg := []byte("Subject: x\r\n\r\nbody\r\n")
	ds := make([]store.Delivery, 10000)
	for i := range ds {
		ds[i] = store.Delivery{Address: "a@example.org", Message: msg}
	}
	if _, err := s.AppendMany(ds); err != nil {
		b.Fatal(err)
	}
	return s, ds
}

// LookupRecipient: the user's address, the quota that applies (the user's
// own over the default) and the use, read only when there is a quota.
func TestLookupRecipient_ReadsUseOnlyWhereAQuotaApplies(t *testing.T) {
	s := storeWithUsers(t, "a@example.org")
	msg := []byte("Subject: x\r\n\r\nbody\r\n")
	if _, err := s.AppendMany([]store.Delivery{{Address: "a@example.org", Message: msg}}); err != nil {
		t.Fatal(err)
	}
	size := int64(len(msg))
	for _, tc := range []struct {
		own, def, wantUsed, wantQuota int64
	}{
		{0, 0, 0, 0},           // no quota at all: not read
		{0, 1000, size, 1000},  // the default
		{500, 1000, size, 500}, // the user's own wins
		{500, 0, size, 500},
	} {
		if err := s.SetQuota("a@example.org", tc.own); err != nil {
			t.Fatal(err)
		}
		r, err := s.LookupRecipient("A@Example.org", tc.def)
		want := store.Recipient{Address: "a@example.org", Used: tc.wantUsed, Quota: tc.wantQuota}
		if err != nil || r != want {
			t.Errorf("own %d, default %d: LookupRecipient = %+v, %v; want %+v", tc.own, tc.def, r, err, want)
		}
	}
	if _, err := s.LookupRecipient("nobody@example.org", 0); !errors.Is(err, store.ErrNoUser) {
		t.Errorf("LookupRecipient of an unknown user: %v", err)
	}
}
