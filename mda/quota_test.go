package mda_test

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"minimail/mda"
	"minimail/mta/delivery"
	"minimail/store"
)

func quotaStore(t *testing.T, users ...string) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, u := range users {
		if err := s.AddUser(u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func count(t *testing.T, s *store.Store, addr string) int {
	t.Helper()
	infos, err := s.List(addr)
	if err != nil {
		t.Fatal(err)
	}
	return len(infos)
}

func status(err error) string {
	var e interface{ Status() string }
	if errors.As(err, &e) {
		return e.Status()
	}
	return ""
}

// TestDeliver_QuotaJudgedPerMailbox: the copy that would not fit fails its
// recipient alone (permanent, 5.2.2); the others are stored.
func TestDeliver_QuotaJudgedPerMailbox(t *testing.T) {
	s := quotaStore(t, "alice@example.org", "bob@example.org", "carol@example.org")
	if err := s.SetQuota("bob@example.org", 100); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuota("carol@example.org", 1<<20); err != nil {
		t.Fatal(err)
	}
	a := &mda.Agent{Mailboxes: s, DefaultQuota: 1 << 20}
	msg := []byte("Subject: big\r\n\r\n" + strings.Repeat("x", 200) + "\r\n")
	errs := a.Deliver("sender@b.test", []string{"alice@example.org", "bob@example.org", "carol@example.org"}, msg)
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("alice, carol: %v, %v; want stored", errs[0], errs[2])
	}
	if !errors.Is(errs[1], mda.ErrMailboxFull) || delivery.Temporary(errs[1]) || status(errs[1]) != "5.2.2" {
		t.Fatalf("bob: %v (temporary %v, status %q), want permanent ErrMailboxFull 5.2.2", errs[1], delivery.Temporary(errs[1]), status(errs[1]))
	}
	if n := count(t, s, "alice@example.org") + count(t, s, "carol@example.org"); n != 2 {
		t.Errorf("alice and carol hold %d messages, want 2", n)
	}
	if n := count(t, s, "bob@example.org"); n != 0 {
		t.Errorf("bob holds %d messages, want 0", n)
	}
}

// TestResolve_MailboxAtQuotaIsTemporarilyFull: RCPT learns of a mailbox
// already at its quota (the default one here) as temporary 4.2.2, and of
// one with room as a recipient.
func TestResolve_MailboxAtQuotaIsTemporarilyFull(t *testing.T) {
	s := quotaStore(t, "alice@example.org")
	a := &mda.Agent{Mailboxes: s, DefaultQuota: 10, Delimiter: "+"}
	if _, err := a.Resolve("alice@example.org"); err != nil {
		t.Fatalf("empty mailbox: %v", err)
	}
	if _, err := s.Append("alice@example.org", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	for _, rcpt := range []string{"alice@example.org", "alice+tag@example.org"} {
		_, err := a.Resolve(rcpt)
		if !errors.Is(err, mda.ErrMailboxFull) || !delivery.Temporary(err) || status(err) != "4.2.2" {
			t.Errorf("Resolve(%s) at quota: %v (status %q), want temporary ErrMailboxFull 4.2.2", rcpt, err, status(err))
		}
	}
	if err := s.SetQuota("alice@example.org", 11); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Resolve("alice@example.org"); err != nil {
		t.Errorf("own quota 11 over the default 10: %v", err)
	}
}

// TestResolve_AliasTakesItsFirstMailboxWithRoom: RCPT to an alias names
// the first of its mailboxes that is not at its quota, and is temporarily
// refused only when all are: the mailboxes an alias reaches are looked up
// by Resolve itself, those of a user by lookup.
func TestResolve_AliasTakesItsFirstMailboxWithRoom(t *testing.T) {
	s := quotaStore(t, "alice@example.org", "bob@example.org")
	if _, err := s.AddAlias("team@example.org", []string{"alice@example.org", "bob@example.org"}); err != nil {
		t.Fatal(err)
	}
	a := &mda.Agent{Mailboxes: s, DefaultQuota: 10}
	if got, err := a.Resolve("team@example.org"); err != nil || got != "alice@example.org" {
		t.Fatalf("Resolve(team) with room everywhere = %q, %v; want alice", got, err)
	}
	if _, err := s.Append("alice@example.org", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Resolve("team@example.org"); err != nil || got != "bob@example.org" {
		t.Fatalf("Resolve(team) with alice full = %q, %v; want bob", got, err)
	}
	if _, err := s.Append("bob@example.org", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Resolve("team@example.org"); !errors.Is(err, mda.ErrMailboxFull) || !delivery.Temporary(err) || status(err) != "4.2.2" {
		t.Fatalf("Resolve(team) with both full: %v (status %q), want temporary ErrMailboxFull 4.2.2", err, status(err))
	}
}

// TestDeliverTraced_NoticeStoredPastQuota: a bounce to a full mailbox is not
// lost; it exceeds the quota by its size.
func TestDeliverTraced_NoticeStoredPastQuota(t *testing.T) {
	s := quotaStore(t, "alice@example.org")
	if err := s.SetQuota("alice@example.org", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append("alice@example.org", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	a := &mda.Agent{Mailboxes: s}
	notice := []byte("Subject: Undelivered Mail\r\n\r\nsorry\r\n")
	if err := a.Deliver("", []string{"alice@example.org"}, notice)[0]; !errors.Is(err, mda.ErrMailboxFull) {
		t.Fatalf("Deliver to the full mailbox: %v, want ErrMailboxFull", err)
	}
	if err := a.DeliverTraced(delivery.Trace{Notice: true}, "", []string{"alice@example.org"}, notice)[0]; err != nil {
		t.Fatalf("the notice to the full mailbox: %v", err)
	}
	if n := count(t, s, "alice@example.org"); n != 2 {
		t.Errorf("alice holds %d messages, want 2", n)
	}
}
