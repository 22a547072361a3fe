package mda_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"minimail/mda"
	"minimail/store"
)

// aliasSite is a real store with users alice, bob, carol@d.test and
// aliases sales -> alice, bob; team -> sales, carol; @d.test -> carol.
func aliasSite(t *testing.T) (*store.Store, *mda.Agent) {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, u := range []string{"alice@d.test", "bob@d.test", "carol@d.test", "sales+x@d.test"} {
		if err := s.AddUser(u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range [][]string{{"sales@d.test", "alice@d.test", "bob@d.test"}, {"team@d.test", "sales@d.test", "carol@d.test"}, {"@d.test", "carol@d.test"}, {"al+ias@d.test", "bob@d.test"}} {
		if _, err := s.AddAlias(a[0], a[1:]); err != nil {
			t.Fatal(err)
		}
	}
	return s, &mda.Agent{Mailboxes: s, Delimiter: "+"}
}

// deliveredTo returns, per mailbox, the Delivered-To of each copy.
func deliveredTo(t *testing.T, s *store.Store, boxes ...string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, b := range boxes {
		infos, err := s.List(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range infos {
			msg, err := s.Read(b, info.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(msg), "\r\n") {
				if v, ok := strings.CutPrefix(line, "Delivered-To: "); ok {
					out[b] = append(out[b], v)
				}
			}
		}
	}
	return out
}

func TestDeliver_Aliases(t *testing.T) {
	boxes := []string{"alice@d.test", "bob@d.test", "carol@d.test", "sales+x@d.test"}
	for _, c := range []struct {
		name  string
		rcpts []string
		want  map[string][]string
	}{
		{"alias to two users", []string{"Sales@d.test"}, map[string][]string{"alice@d.test": {"Sales@d.test"}, "bob@d.test": {"Sales@d.test"}}},
		{"nested alias", []string{"team@d.test"}, map[string][]string{"alice@d.test": {"team@d.test"}, "bob@d.test": {"team@d.test"}, "carol@d.test": {"team@d.test"}}},
		{"one copy per mailbox", []string{"sales@d.test", "team@d.test", "alice@d.test"}, map[string][]string{"alice@d.test": {"sales@d.test"}, "bob@d.test": {"sales@d.test"}, "carol@d.test": {"team@d.test"}}},
		{"user before alias", []string{"alice@d.test", "sales@d.test"}, map[string][]string{"alice@d.test": {"alice@d.test"}, "bob@d.test": {"sales@d.test"}}},
		{"delimiter reaches alias", []string{"sales+news@d.test"}, map[string][]string{"alice@d.test": {"sales+news@d.test"}, "bob@d.test": {"sales+news@d.test"}}},
		{"exact user before alias without extension", []string{"sales+x@d.test"}, map[string][]string{"sales+x@d.test": {"sales+x@d.test"}}},
		{"exact alias before user without extension", []string{"al+ias@d.test"}, map[string][]string{"bob@d.test": {"al+ias@d.test"}}},
		{"user extension before catch-all", []string{"bob+z@d.test"}, map[string][]string{"bob@d.test": {"bob+z@d.test"}}},
		{"catch-all", []string{"Whoever@d.test"}, map[string][]string{"carol@d.test": {"Whoever@d.test"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, a := aliasSite(t)
			for i, err := range a.Deliver("x@y.test", c.rcpts, []byte("Subject: hi\r\n\r\nhello\r\n")) {
				if err != nil {
					t.Fatalf("rcpt %s: %v", c.rcpts[i], err)
				}
			}
			if got := deliveredTo(t, s, boxes...); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Delivered-To per mailbox = %v, want %v", got, c.want)
			}
		})
	}
}

func TestResolve_Aliases(t *testing.T) {
	s, a := aliasSite(t)
	for rcpt, want := range map[string]string{"sales@d.test": "alice@d.test", "sales+q@d.test": "alice@d.test", "nobody@d.test": "carol@d.test", "team@d.test": "alice@d.test"} {
		if got, err := a.Resolve(rcpt); err != nil || got != want {
			t.Errorf("Resolve(%s) = %q, %v; want %q", rcpt, got, err, want)
		}
	}
	if _, err := a.Resolve("x@other.test"); !errors.Is(err, mda.ErrUnknownUser) {
		t.Errorf("Resolve other domain: %v", err)
	}
	// An alias to a full mailbox is that mailbox: 4.2.2 at Resolve.
	if err := s.SetQuota("carol@d.test", 1); err != nil {
		t.Fatal(err)
	}
	if errs := a.Deliver("x@y.test", []string{"carol@d.test"}, []byte("Subject: a\r\n\r\nb\r\n")); errs[0] != nil {
		// Over quota from the first byte: the store refuses it.
		if !errors.Is(errs[0], mda.ErrMailboxFull) {
			t.Fatal(errs[0])
		}
	}
	if err := s.SetQuota("carol@d.test", 0); err != nil {
		t.Fatal(err)
	}
	a.Deliver("x@y.test", []string{"carol@d.test"}, []byte("Subject: a\r\n\r\nb\r\n"))
	if err := s.SetQuota("carol@d.test", 1); err != nil {
		t.Fatal(err)
	}
	var e *mda.Error
	if _, err := a.Resolve("anyone@d.test"); !errors.As(err, &e) || e.Status() != "4.2.2" {
		t.Fatalf("Resolve catch-all to full mailbox: %v", err)
	}
	if errs := a.Deliver("x@y.test", []string{"anyone@d.test"}, []byte("Subject: a\r\n\r\nb\r\n")); !errors.As(errs[0], &e) || e.Status() != "5.2.2" {
		t.Fatalf("Deliver catch-all to full mailbox: %v", errs[0])
	}
}

func TestMaySendAs(t *testing.T) {
	_, a := aliasSite(t)
	for _, c := range []struct {
		user, addr string
		want       bool
	}{
		{"alice@d.test", "alice@d.test", true},
		{"alice@d.test", "Alice+list@d.test", true},
		{"alice@d.test", "sales@d.test", true},
		{"alice@d.test", "sales+x@d.test", false}, // a user of its own
		{"alice@d.test", "sales+y@d.test", true},
		{"alice@d.test", "team@d.test", true},
		{"carol@d.test", "team@d.test", true},
		{"carol@d.test", "sales@d.test", false},
		{"carol@d.test", "whoever@d.test", false}, // catch-all
		{"carol@d.test", "@d.test", false},
		{"alice@d.test", "bob@d.test", false},
		{"bob@d.test", "al+ias@d.test", true},
	} {
		if got := a.MaySendAs(c.user, c.addr); got != c.want {
			t.Errorf("MaySendAs(%s, %s) = %v, want %v", c.user, c.addr, got, c.want)
		}
	}
}
