package mda_test

import (
	"errors"
	"minimail/mta/delivery"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"minimail/mda"
	"minimail/mta/srs"
	"minimail/store"
)

var fwdNow = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// recordingQueue records the entries Deliver woke it for.
type recordingQueue struct{ entries []store.QueueEntry }

func (q *recordingQueue) Queued(e store.QueueEntry) { q.entries = append(q.entries, e) }

// forwardSite: users alice, bob@d.test; sales -> alice, bob,
// x@remote.test; fwd -> x@remote.test, y@remote.test; a catch-all to
// alice. SRS with a fixed clock.
func forwardSite(t *testing.T) (*store.Store, *mda.Agent, *recordingQueue) {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, u := range []string{"alice@d.test", "bob@d.test"} {
		if err := s.AddUser(u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	remote := func(a string) bool { return !strings.HasSuffix(a, "@d.test") }
	for _, a := range [][]string{{"sales@d.test", "alice@d.test", "bob@d.test", "x@remote.test"}, {"fwd@d.test", "x@remote.test", "y@remote.test"}, {"@d.test", "alice@d.test"}} {
		if _, err := s.AddAliasRemote(a[0], a[1:], remote); err != nil {
			t.Fatal(err)
		}
	}
	secret, err := s.SRSSecret()
	if err != nil {
		t.Fatal(err)
	}
	q := &recordingQueue{}
	clock := func() time.Time { return fwdNow }
	return s, &mda.Agent{Mailboxes: s, Delimiter: "+", Domains: []string{"d.test"}, Queue: q, Now: clock,
		SRS: &srs.Rewriter{Secret: secret, Now: clock}}, q
}

const fwdMsg = "Received: from x by y\r\nDKIM-Signature: v=1; d=remote.test; h=from; b=x\r\nFrom: carol@remote.test\r\nSubject: hi\r\n\r\nbody\r\n"

func TestForward_OneCopyPerMailboxAndPerRemoteAddress(t *testing.T) {
	s, a, q := forwardSite(t)
	errs := a.DeliverTraced(delivery.Trace{ID: "id1"}, "carol@remote.test", []string{"sales@d.test", "fwd@d.test", "bob@d.test"}, []byte(fwdMsg))
	for i, err := range errs {
		if err != nil {
			t.Fatalf("recipient %d: %v", i, err)
		}
	}
	got := deliveredTo(t, s, "alice@d.test", "bob@d.test")
	if !reflect.DeepEqual(got, map[string][]string{"alice@d.test": {"sales@d.test"}, "bob@d.test": {"sales@d.test"}}) {
		t.Fatalf("mailboxes: %v", got)
	}
	entries, _ := s.QueueEntries()
	if len(entries) != 1 || len(q.entries) != 1 || q.entries[0].ID != entries[0].ID {
		t.Fatalf("queue: %+v, woken for %+v", entries, q.entries)
	}
	e := entries[0]
	var rcpts []string
	for _, r := range e.Rcpts {
		rcpts = append(rcpts, r.Addr)
	}
	if e.MsgID != "id1" || !reflect.DeepEqual(rcpts, []string{"x@remote.test", "y@remote.test"}) {
		t.Fatalf("entry %+v", e)
	}
	if !strings.HasPrefix(e.From, "SRS0=") || !strings.HasSuffix(e.From, "=remote.test=carol@d.test") {
		t.Fatalf("forwarded sender %q, want SRS0=...=remote.test=carol@d.test", e.From)
	}
	// The forwarded copy is the message as it came: its DKIM signature
	// still covers it.
	if body, _ := s.QueueBody(e.ID); string(body) != fwdMsg {
		t.Fatalf("forwarded copy %q, want the message unchanged", body)
	}
}

func TestForward_Sender(t *testing.T) {
	for _, tt := range []struct{ from, want string }{
		{"", ""},                         // a bounce stays a bounce
		{"alice@d.test", "alice@d.test"}, // ours: SPF covers it already
		{"Carol@Remote.test", "SRS0="},   // anyone else: SRS
	} {
		s, a, _ := forwardSite(t)
		if err := a.Deliver(tt.from, []string{"fwd@d.test"}, []byte(fwdMsg))[0]; err != nil {
			t.Fatal(err)
		}
		entries, _ := s.QueueEntries()
		if len(entries) != 1 || !strings.HasPrefix(entries[0].From, tt.want) || (tt.want == "" && entries[0].From != "") {
			t.Errorf("from %q: forwarded as %+v, want %q", tt.from, entries, tt.want)
		}
	}
}

func TestForward_ResolveARemoteOnlyAlias(t *testing.T) {
	_, a, _ := forwardSite(t)
	if got, err := a.Resolve("fwd@d.test"); err != nil || got != "x@remote.test" {
		t.Fatalf("Resolve(fwd) = %q, %v", got, err)
	}
}

func TestForward_BounceToSRSIsReversed(t *testing.T) {
	s, a, _ := forwardSite(t)
	a.Deliver("carol@remote.test", []string{"fwd@d.test"}, []byte(fwdMsg))
	entries, _ := s.QueueEntries()
	srsAddr := entries[0].From
	s.DeleteQueueEntry(entries[0].ID)
	for _, spelled := range []string{srsAddr, strings.ToLower(srsAddr)} {
		if _, err := a.Resolve(spelled); err != nil {
			t.Fatalf("Resolve(%q): %v", spelled, err)
		}
	}
	a.SRS.Now = func() time.Time { return fwdNow.Add(20 * 24 * time.Hour) }
	if err := a.Deliver("", []string{strings.ToLower(srsAddr)}, []byte("Subject: bounce\r\n\r\nx\r\n"))[0]; err != nil {
		t.Fatal(err)
	}
	entries, _ = s.QueueEntries()
	if len(entries) != 1 || entries[0].From != "" || entries[0].Rcpts[0].Addr != "carol@remote.test" {
		t.Fatalf("reversed bounce queued as %+v, want from <> to carol@remote.test", entries)
	}
	if got := deliveredTo(t, s, "alice@d.test"); len(got["alice@d.test"]) != 0 {
		t.Fatalf("the catch-all took a copy: %v", got)
	}
}

func TestForward_BadSRSIsNoMailbox(t *testing.T) {
	_, a, _ := forwardSite(t)
	a.Deliver("carol@remote.test", []string{"fwd@d.test"}, []byte(fwdMsg))
	good, _ := a.SRS.Forward("carol@remote.test", "d.test")
	p, _ := srs.Parse(strings.TrimSuffix(good, "@d.test"))
	forged := "SRS0=" + strings.Repeat("A", 4) + "=" + p.Stamp + "=remote.test=carol@d.test"
	if p.Hash == "AAAA" {
		forged = strings.Replace(forged, "AAAA", "BBBB", 1)
	}
	other := "SRS0=" + p.Hash + "=" + p.Stamp + "=evil.test=carol@d.test"
	for name, addr := range map[string]string{"forged hash": forged, "another original": other, "malformed": "SRS0=xx@d.test"} {
		_, err := a.Resolve(addr)
		var me *mda.Error
		if !errors.Is(err, mda.ErrBadSRS) || !errors.As(err, &me) || me.Temporary() || me.Status() != "5.1.1" {
			t.Errorf("%s: Resolve(%q) = %v, want permanent 5.1.1 ErrBadSRS (not the catch-all)", name, addr, err)
		}
	}
	a.SRS.Now = func() time.Time { return fwdNow.Add(22 * 24 * time.Hour) }
	if _, err := a.Resolve(good); !errors.Is(err, srs.ErrExpired) {
		t.Errorf("expired: %v", err)
	}
}

func TestForward_LoopIsRefused(t *testing.T) {
	s, a, _ := forwardSite(t)
	a.MaxHops = 3
	msg := strings.Repeat("Received: from a by b\r\n", 4) + "Subject: loop\r\n\r\nx\r\n"
	err := a.Deliver("carol@remote.test", []string{"sales@d.test"}, []byte(msg))[0]
	var me *mda.Error
	if !errors.Is(err, mda.ErrLoop) || !errors.As(err, &me) || me.Temporary() || me.Status() != "5.4.6" {
		t.Fatalf("4 hops with MaxHops 3: %v, want permanent 5.4.6", err)
	}
	if entries, _ := s.QueueEntries(); len(entries) != 0 {
		t.Fatalf("queued %+v", entries)
	}
	// Three is still fine.
	if err := a.Deliver("carol@remote.test", []string{"sales@d.test"}, []byte(msg[len("Received: from a by b\r\n"):]))[0]; err != nil {
		t.Fatal(err)
	}
}

// TestForward_AFullMailboxDoesNotStopTheForward: with alice's mailbox
// too small, sales@ still gives bob his copy and queues the remote one;
// the recipient reports alice's 5.2.2 so the sender hears of her.
func TestForward_AFullMailboxDoesNotStopTheForward(t *testing.T) {
	s, a, q := forwardSite(t)
	if err := s.SetQuota("alice@d.test", 10); err != nil {
		t.Fatal(err)
	}
	err := a.Deliver("carol@remote.test", []string{"sales@d.test"}, []byte(fwdMsg))[0]
	var me *mda.Error
	if !errors.As(err, &me) || me.Status() != "5.2.2" {
		t.Fatalf("sales@ with alice full: %v, want 5.2.2", err)
	}
	if got := deliveredTo(t, s, "alice@d.test", "bob@d.test"); len(got["bob@d.test"]) != 1 || len(got["alice@d.test"]) != 0 {
		t.Fatalf("mailboxes: %v", got)
	}
	if entries, _ := s.QueueEntries(); len(entries) != 1 || len(q.entries) != 1 || entries[0].Rcpts[0].Addr != "x@remote.test" {
		t.Fatalf("queue %+v, woken %d times", entries, len(q.entries))
	}
}
