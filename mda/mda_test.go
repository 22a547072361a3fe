package mda_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"minimail/mda"
	"minimail/mta/delivery"
	"minimail/store"
)

// fakeMailboxes is a recording Mailboxes that can be told to fail.
type fakeMailboxes struct {
	users     map[string]string // lower-cased address -> canonical
	lookupErr error             // returned by every LookupUser
	appendErr error             // returned by every AppendMany
	vanished  map[string]bool   // deleted after Resolve: AppendMany refuses them
	calls     [][]store.Delivery
	nextID    uint64
}

func newFake(users ...string) *fakeMailboxes {
	f := &fakeMailboxes{users: map[string]string{}, vanished: map[string]bool{}}
	for _, u := range users {
		f.users[strings.ToLower(u)] = u
	}
	return f
}

func (f *fakeMailboxes) LookupUser(addr string) (string, error) {
	if f.lookupErr != nil {
		return "", f.lookupErr
	}
	if u, ok := f.users[strings.ToLower(addr)]; ok {
		return u, nil
	}
	return "", fmt.Errorf("%s: %w", addr, store.ErrNoUser)
}

// Expand knows no aliases (alias_test.go uses the real store).
func (f *fakeMailboxes) Expand(addr string) (store.Expansion, error) {
	return store.Expansion{}, fmt.Errorf("%s: %w", addr, store.ErrNoAlias)
}

// AppendAndEnqueue is AppendMany: the fake knows no aliases, so nothing
// is forwarded.
func (f *fakeMailboxes) AppendAndEnqueue(ds []store.Delivery, out []store.Outgoing) ([]uint64, []store.QueueEntry, error) {
	if len(out) > 0 {
		return nil, nil, fmt.Errorf("fake: unexpected forwarding")
	}
	ids, err := f.AppendMany(ds)
	return ids, nil, err
}

// LookupRecipient is LookupUser: every mailbox empty, without a quota.
func (f *fakeMailboxes) LookupRecipient(addr string, _ int64) (store.Recipient, error) {
	u, err := f.LookupUser(addr)
	return store.Recipient{Address: u}, err
}

// AppendMany is all-or-nothing, like the real store.
func (f *fakeMailboxes) AppendMany(ds []store.Delivery) ([]uint64, error) {
	f.calls = append(f.calls, append([]store.Delivery(nil), ds...))
	if f.appendErr != nil {
		return nil, f.appendErr
	}
	for _, d := range ds {
		if f.vanished[d.Address] {
			return nil, fmt.Errorf("append: %s: %w", d.Address, store.ErrNoUser)
		}
	}
	ids := make([]uint64, len(ds))
	for i := range ids {
		f.nextID++
		ids[i] = f.nextID
	}
	return ids, nil
}

// stored returns every copy a successful AppendMany call stored, as
// "address|message".
func (f *fakeMailboxes) stored() []string {
	var out []string
	for _, call := range f.calls {
		ok := f.appendErr == nil
		for _, d := range call {
			if f.vanished[d.Address] {
				ok = false
			}
		}
		if !ok {
			continue
		}
		for _, d := range call {
			out = append(out, d.Address+"|"+string(d.Header)+string(d.Message))
		}
	}
	return out
}

// outcome names a per-recipient result: "ok", "unknown" (permanent, 5.1.1)
// or "temporary".
func outcome(t *testing.T, rcpt string, err error) string {
	t.Helper()
	if err == nil {
		return "ok"
	}
	var me *mda.Error
	if !errors.As(err, &me) || me.Rcpt != rcpt {
		t.Errorf("error for %s is %T %v, want an *mda.Error naming it", rcpt, err, err)
	}
	switch {
	case delivery.Temporary(err) && errors.Is(err, mda.ErrUnknownUser):
		return "temporary but unknown user"
	case delivery.Temporary(err):
		return "temporary"
	case errors.Is(err, mda.ErrUnknownUser):
		return "unknown"
	}
	return "permanent: " + err.Error()
}

func TestDeliver(t *testing.T) {
	const msg = "Received: from b.test\r\nSubject: hi\r\n\r\nhello\r\n"
	diskFull := errors.New("disk full")
	tests := []struct {
		name     string
		setup    func(*fakeMailboxes)
		from     string
		rcpts    []string
		msg      string
		want     []string // outcome per recipient
		wantCopy []string // "address|message" stored, in order
		// AppendMany calls: all copies go in one transaction, none when
		// nobody can receive; -1 for don't care.
		wantCalls int
	}{
		{
			name:      "known",
			from:      "bob@b.test",
			rcpts:     []string{"alice@example.org"},
			msg:       msg,
			want:      []string{"ok"},
			wantCalls: 1,
			wantCopy: []string{"alice@example.org|Return-Path: <bob@b.test>\r\n" +
				"Delivered-To: alice@example.org\r\n" + msg},
		},
		{
			name:      "unknown",
			from:      "bob@b.test",
			rcpts:     []string{"nobody@example.org"},
			msg:       msg,
			want:      []string{"unknown"},
			wantCalls: 0,
		},
		{
			name:      "mixed: one copy per known recipient, each with its own Delivered-To",
			from:      "bob@b.test",
			rcpts:     []string{"alice@example.org", "nobody@example.org", "Carol@example.org"},
			msg:       msg,
			want:      []string{"ok", "unknown", "ok"},
			wantCalls: 1,
			wantCopy: []string{
				"alice@example.org|Return-Path: <bob@b.test>\r\nDelivered-To: alice@example.org\r\n" + msg,
				"carol@example.org|Return-Path: <bob@b.test>\r\nDelivered-To: carol@example.org\r\n" + msg,
			},
		},
		{
			name:      "null sender",
			from:      "",
			rcpts:     []string{"alice@example.org"},
			msg:       msg,
			want:      []string{"ok"},
			wantCalls: 1,
			wantCopy:  []string{"alice@example.org|Return-Path: <>\r\nDelivered-To: alice@example.org\r\n" + msg},
		},
		{
			name:      "recipient in other case gets the canonical Delivered-To",
			from:      "bob@b.test",
			rcpts:     []string{"ALICE@Example.ORG"},
			msg:       msg,
			want:      []string{"ok"},
			wantCalls: 1,
			wantCopy:  []string{"alice@example.org|Return-Path: <bob@b.test>\r\nDelivered-To: alice@example.org\r\n" + msg},
		},
		{
			name:      "no recipients",
			from:      "bob@b.test",
			rcpts:     nil,
			msg:       msg,
			want:      nil,
			wantCalls: 0,
		},
		{
			name:      "store failure is temporary for every known recipient",
			setup:     func(f *fakeMailboxes) { f.appendErr = diskFull },
			from:      "bob@b.test",
			rcpts:     []string{"alice@example.org", "nobody@example.org", "carol@example.org"},
			msg:       msg,
			want:      []string{"temporary", "unknown", "temporary"},
			wantCalls: 1,
		},
		{
			name:      "lookup failure is temporary",
			setup:     func(f *fakeMailboxes) { f.lookupErr = diskFull },
			from:      "bob@b.test",
			rcpts:     []string{"alice@example.org", "nobody@example.org"},
			msg:       msg,
			want:      []string{"temporary", "temporary"},
			wantCalls: 0,
		},
		{
			// Deleted between Resolve and AppendMany: only that recipient
			// fails, and permanently; the others still get their copy.
			name:      "user deleted during delivery",
			setup:     func(f *fakeMailboxes) { f.vanished["carol@example.org"] = true },
			from:      "bob@b.test",
			rcpts:     []string{"alice@example.org", "carol@example.org"},
			msg:       msg,
			want:      []string{"ok", "unknown"},
			wantCalls: -1,
			wantCopy: []string{
				"alice@example.org|Return-Path: <bob@b.test>\r\nDelivered-To: alice@example.org\r\n" + msg,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake("alice@example.org", "carol@example.org")
			if tt.setup != nil {
				tt.setup(f)
			}
			a := &mda.Agent{Mailboxes: f}
			errs := a.Deliver(tt.from, tt.rcpts, []byte(tt.msg))
			if len(errs) != len(tt.rcpts) {
				t.Fatalf("Deliver returned %d results for %d recipients", len(errs), len(tt.rcpts))
			}
			var got []string
			for i, err := range errs {
				got = append(got, outcome(t, tt.rcpts[i], err))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("outcomes = %v, want %v", got, tt.want)
			}
			if copies := f.stored(); strings.Join(copies, "\n---\n") != strings.Join(tt.wantCopy, "\n---\n") {
				t.Errorf("stored:\n%q\nwant:\n%q", copies, tt.wantCopy)
			}
			if tt.wantCalls >= 0 && len(f.calls) != tt.wantCalls {
				t.Errorf("%d AppendMany calls, want %d", len(f.calls), tt.wantCalls)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	f := newFake("alice@example.org")
	a := &mda.Agent{Mailboxes: f}
	if got, err := a.Resolve("Alice@EXAMPLE.org"); err != nil || got != "alice@example.org" {
		t.Errorf("Resolve = %q, %v", got, err)
	}
	_, err := a.Resolve("nobody@example.org")
	if !errors.Is(err, mda.ErrUnknownUser) || delivery.Temporary(err) {
		t.Errorf("Resolve(unknown) = %v, temporary %v; want permanent ErrUnknownUser", err, delivery.Temporary(err))
	}
	f.lookupErr = errors.New("database is in use")
	if _, err := a.Resolve("alice@example.org"); !delivery.Temporary(err) || errors.Is(err, mda.ErrUnknownUser) {
		t.Errorf("Resolve with a broken store = %v, want temporary", err)
	}
}

// TestError_CarriesItsVerdict: callers read the verdict and the DSN status
// from the error itself, never from a sentinel of this package.
func TestError_CarriesItsVerdict(t *testing.T) {
	f := newFake("alice@example.org")
	a := &mda.Agent{Mailboxes: f}
	_, unknown := a.Resolve("nobody@example.org")
	f.lookupErr = errors.New("database is in use")
	_, storage := a.Resolve("alice@example.org")
	for _, tt := range []struct {
		name      string
		err       error
		temporary bool
		status    string
	}{
		{"unknown user", unknown, false, "5.1.1"},
		{"storage trouble", storage, true, "4.0.0"},
		{"wrapped storage trouble", fmt.Errorf("queue: %w", storage), true, "4.0.0"},
	} {
		var st interface{ Status() string }
		if !errors.As(tt.err, &st) || st.Status() != tt.status || delivery.Temporary(tt.err) != tt.temporary {
			t.Errorf("%s: %v: temporary %v, want %v, status %v", tt.name, tt.err, delivery.Temporary(tt.err), tt.temporary, tt.status)
		}
	}
}

// TestDeliver_RealStore runs the agent on a real store: each recipient reads
// back exactly its own copy.
func TestDeliver_RealStore(t *testing.T) {
	s, err := store.Open(t.TempDir(), store.Options{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, u := range []string{"alice@example.org", "Carol@example.org"} {
		if err := s.AddUser(u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	a := &mda.Agent{Mailboxes: s}
	errs := a.Deliver("bob@b.test", []string{"alice@example.org", "nobody@example.org", "carol@EXAMPLE.org"},
		[]byte("Subject: hi\r\n\r\nhello\r\n"))
	if errs[0] != nil || !errors.Is(errs[1], mda.ErrUnknownUser) || errs[2] != nil {
		t.Fatalf("Deliver = %v", errs)
	}
	for _, u := range []string{"alice@example.org", "Carol@example.org"} {
		infos, err := s.List(u)
		if err != nil || len(infos) != 1 {
			t.Fatalf("List(%s) = %v, %v", u, infos, err)
		}
		body, err := s.Read(u, infos[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		want := "Return-Path: <bob@b.test>\r\nDelivered-To: " + u + "\r\nSubject: hi\r\n\r\nhello\r\n"
		if string(body) != want || infos[0].Size != int64(len(want)) {
			t.Errorf("%s got %q (size %d), want %q", u, body, infos[0].Size, want)
		}
	}
}

// TestDeliver_AddressExtensions: with a delimiter, bob+shop@ reaches bob@
// (Postfix's recipient_delimiter) and Delivered-To keeps the extension; a
// user with the whole address wins; two extensions of one message give one
// copy; without a delimiter the extension is part of the address.
func TestDeliver_AddressExtensions(t *testing.T) {
	s, err := store.Open(t.TempDir(), store.Options{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, u := range []string{"bob@example.org", "bob+list@example.org"} {
		if err := s.AddUser(u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	msg := []byte("Subject: hi\r\n\r\nhello\r\n")
	deliveredTo := func(addr string) []string {
		t.Helper()
		infos, err := s.List(addr)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, in := range infos {
			m, _ := s.Read(addr, in.ID)
			for _, line := range strings.Split(string(m), "\r\n") {
				if v, ok := strings.CutPrefix(line, "Delivered-To: "); ok {
					out = append(out, v)
				}
			}
		}
		return out
	}

	a := &mda.Agent{Mailboxes: s, Delimiter: "+-"}
	for _, c := range []struct {
		rcpt, want string
		known      bool
	}{
		{"bob+Shop@example.org", "bob@example.org", true},
		{"Bob-news@Example.org", "bob@example.org", true},
		{"bob+list@example.org", "bob+list@example.org", true},
		{"+bob@example.org", "", false},
		{"carol+x@example.org", "", false},
	} {
		got, err := a.Resolve(c.rcpt)
		if (err == nil) != c.known || got != c.want {
			t.Errorf("Resolve(%q) = %q, %v", c.rcpt, got, err)
		}
	}
	errs := a.Deliver("x@b.test", []string{"bob+Shop@example.org", "bob+other@example.org", "bob+list@example.org"}, msg)
	if errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("Deliver = %v", errs)
	}
	if got := deliveredTo("bob@example.org"); len(got) != 1 || got[0] != "bob+Shop@example.org" {
		t.Errorf("bob's copies have Delivered-To %q, want one, bob+Shop@example.org", got)
	}
	if got := deliveredTo("bob+list@example.org"); len(got) != 1 || got[0] != "bob+list@example.org" {
		t.Errorf("bob+list has %q", got)
	}

	off := &mda.Agent{Mailboxes: s}
	if _, err := off.Resolve("bob+Shop@example.org"); !errors.Is(err, mda.ErrUnknownUser) {
		t.Errorf("without a delimiter bob+Shop@ resolved: %v", err)
	}
}
