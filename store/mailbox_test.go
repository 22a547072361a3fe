package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"minimail/store"
)

const alice, bob = "alice@example.org", "bob@example.org"

// listIDs returns the ids in addr's mailbox, in listed order.
func listIDs(t testing.TB, s *store.Store, addr string) []uint64 {
	t.Helper()
	infos, err := s.List(addr)
	if err != nil {
		t.Fatalf("List(%s): %v", addr, err)
	}
	ids := make([]uint64, len(infos))
	for i, in := range infos {
		ids[i] = in.ID
	}
	return ids
}

func TestAppendListRead(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
	}{
		{"ordinary", []byte("Subject: hi\r\n\r\nhello\r\n")},
		{"empty", []byte{}},
		{"one byte", []byte("x")},
		{"dot lines kept as stored", []byte("a\r\n.\r\n..b\r\n")},
		{"binary", []byte{0, 1, 2, 0xff, '\r', '\n'}},
		{"1 MiB", bytes.Repeat([]byte("0123456789abcdef"), 1<<16)},
	}
	s := storeWithUsers(t, alice)
	var prev uint64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			id, err := s.Append(alice, tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if id <= prev {
				t.Errorf("id %d not above previous %d", id, prev)
			}
			prev = id
			got, err := s.Read(alice, id)
			if err != nil {
				t.Fatalf("Read(%d): %v", id, err)
			}
			if !bytes.Equal(got, tt.msg) {
				t.Errorf("Read = %d bytes, want the %d stored", len(got), len(tt.msg))
			}
			infos, err := s.List(alice)
			if err != nil {
				t.Fatal(err)
			}
			last := infos[len(infos)-1]
			if last.ID != id || last.Size != int64(len(tt.msg)) {
				t.Errorf("List last = %+v, want id %d size %d", last, id, len(tt.msg))
			}
			if last.Arrived.Before(before.Add(-time.Second)) || last.Arrived.After(time.Now().Add(time.Second)) {
				t.Errorf("Arrived %v, want about now", last.Arrived)
			}
		})
	}
}

func TestRead_ReturnsACopy(t *testing.T) {
	s := storeWithUsers(t, alice)
	id, err := s.Append(alice, []byte("original\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.Read(alice, id)
	copy(got, "XXXXXXXX")
	if again, _ := s.Read(alice, id); string(again) != "original\r\n" {
		t.Errorf("changing a Read result changed the store: %q", again)
	}
}

// TestIDs_UniqueRisingNeverReused: POP3 UIDL relies on ids that are unique
// across mailboxes, rise in arrival order and are never handed out again,
// after deletes or a restart.
func TestIDs_UniqueRisingNeverReused(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{alice, bob} {
		if err := s.AddUser(a, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint64]bool{}
	var last uint64
	add := func(s *store.Store, addr string) uint64 {
		t.Helper()
		id, err := s.Append(addr, []byte("m\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		if seen[id] || id <= last {
			t.Fatalf("id %d handed out again or not rising (last %d)", id, last)
		}
		seen[id], last = true, id
		return id
	}
	for i := 0; i < 10; i++ {
		add(s, []string{alice, bob}[i%2])
	}
	// Delete the newest: a sequence kept as "max id + 1" would reuse it.
	ids := listIDs(t, s, alice)
	if err := s.Delete(alice, ids[len(ids)-1:]); err != nil {
		t.Fatal(err)
	}
	add(s, alice)
	// Empty a mailbox entirely.
	if err := s.Delete(bob, listIDs(t, s, bob)); err != nil {
		t.Fatal(err)
	}
	add(s, bob)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	// Delete everything before the restart's first append.
	for _, a := range []string{alice, bob} {
		if err := s.Delete(a, listIDs(t, s, a)); err != nil {
			t.Fatal(err)
		}
	}
	add(s, alice)
	add(s, bob)
	if got := listIDs(t, s, alice); len(got) != 1 {
		t.Errorf("alice after restart: %v", got)
	}
}

func TestList_InArrivalOrder(t *testing.T) {
	s := storeWithUsers(t, alice, bob)
	var want []uint64
	for i := 0; i < 300; i++ {
		addr := []string{alice, bob}[i%3%2]
		id, err := s.Append(addr, []byte(fmt.Sprintf("m%d\r\n", i)))
		if err != nil {
			t.Fatal(err)
		}
		if addr == alice {
			want = append(want, id)
		}
	}
	if got := listIDs(t, s, alice); !slices.Equal(got, want) {
		t.Errorf("List order = %v..., want %v...", got[:5], want[:5])
	}
}

func TestMailbox_UnknownUserAndMessage(t *testing.T) {
	s := storeWithUsers(t, alice, bob)
	aliceID, _ := s.Append(alice, []byte("for alice\r\n"))
	bobID, _ := s.Append(bob, []byte("for bob\r\n"))
	if err := s.Delete(alice, []uint64{aliceID}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		op     func() error
		wantIs error
	}{
		{"List of unknown user", func() error { _, err := s.List("nobody@example.org"); return err }, store.ErrNoUser},
		{"Read of unknown user", func() error { _, err := s.Read("nobody@example.org", bobID); return err }, store.ErrNoUser},
		{"Append to unknown user", func() error { _, err := s.Append("nobody@example.org", []byte("x")); return err }, store.ErrNoUser},
		{"Delete in unknown mailbox", func() error { return s.Delete("nobody@example.org", []uint64{bobID}) }, store.ErrNoUser},
		{"Read of a deleted id", func() error { _, err := s.Read(alice, aliceID); return err }, store.ErrNoMessage},
		{"Read of an id never handed out", func() error { _, err := s.Read(alice, 1<<60); return err }, store.ErrNoMessage},
		{"Read of id 0", func() error { _, err := s.Read(alice, 0); return err }, store.ErrNoMessage},
		{"Read of another user's message", func() error { _, err := s.Read(alice, bobID); return err }, store.ErrNoMessage},
		{"Delete of an id already gone", func() error { return s.Delete(alice, []uint64{aliceID, aliceID}) }, nil},
		{"Delete of nothing", func() error { return s.Delete(alice, nil) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if tt.wantIs == nil && err != nil || tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want %v", err, tt.wantIs)
			}
		})
	}
	if _, err := s.List("nobody@example.org"); err == nil {
		t.Error("an operation on an unknown user created a mailbox")
	}
}

func TestDelete_OtherMailboxUntouched(t *testing.T) {
	s := storeWithUsers(t, alice, bob)
	bobID, _ := s.Append(bob, []byte("for bob\r\n"))
	if err := s.Delete(alice, []uint64{bobID}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(bob, bobID); err != nil || string(got) != "for bob\r\n" {
		t.Errorf("alice's Delete reached bob's mailbox: %q, %v", got, err)
	}
}

// TestDelete_SetIsOneTransaction: POP3 QUIT removes every marked message in
// one commit, so a crash deletes all of them or none.
func TestDelete_SetIsOneTransaction(t *testing.T) {
	s := storeWithUsers(t, alice)
	var ids []uint64
	for i := 0; i < 10; i++ {
		id, err := s.Append(alice, []byte(fmt.Sprintf("m%d\r\n", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	gone := []uint64{ids[1], ids[3], ids[4], ids[8], ids[9]}
	before := s.Commits()
	if err := s.Delete(alice, gone); err != nil {
		t.Fatal(err)
	}
	if n := s.Commits() - before; n != 1 {
		t.Errorf("Delete of %d ids took %d commits, want 1", len(gone), n)
	}
	want := []uint64{ids[0], ids[2], ids[5], ids[6], ids[7]}
	if got := listIDs(t, s, alice); !slices.Equal(got, want) {
		t.Errorf("after Delete List = %v, want %v", got, want)
	}
	for _, id := range gone {
		if _, err := s.Read(alice, id); !errors.Is(err, store.ErrNoMessage) {
			t.Errorf("Read(%d) after Delete = %v, want ErrNoMessage", id, err)
		}
	}
}

// TestAppendMany_AllOrNothing: one unknown mailbox fails the whole batch.
func TestAppendMany_AllOrNothing(t *testing.T) {
	s := storeWithUsers(t, alice, bob)
	ids, err := s.AppendMany([]store.Delivery{
		{Address: alice, Message: []byte("a\r\n")},
		{Address: "nobody@example.org", Message: []byte("n\r\n")},
		{Address: bob, Message: []byte("b\r\n")},
	})
	if !errors.Is(err, store.ErrNoUser) || ids != nil {
		t.Fatalf("AppendMany = %v, %v; want ErrNoUser", ids, err)
	}
	for _, a := range []string{alice, bob} {
		if got := listIDs(t, s, a); len(got) != 0 {
			t.Errorf("%s holds %v after a failed batch", a, got)
		}
	}

	ids, err = s.AppendMany([]store.Delivery{
		{Address: alice, Message: []byte("a\r\n")},
		{Address: "BOB@example.org", Message: []byte("b\r\n")},
	})
	if err != nil || len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("AppendMany = %v, %v", ids, err)
	}
	if got, _ := s.Read(bob, ids[1]); string(got) != "b\r\n" {
		t.Errorf("bob's copy = %q", got)
	}
}

// TestConcurrentAppendDelete: many writers and deleters at once lose no
// acknowledged message, duplicate none, and never hand out an id twice.
func TestConcurrentAppendDelete(t *testing.T) {
	const writers, perWriter, deleters = 32, 15, 4
	users := []string{alice, bob}
	s := storeWithUsers(t, users...)

	type acked struct {
		addr string
		body string
	}
	var (
		mu      sync.Mutex
		byID    = map[uint64]acked{}
		deleted = map[uint64]bool{}
		errs    []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}

	start := make(chan struct{})
	var wg, dwg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for m := 0; m < perWriter; m++ {
				addr := users[(w+m)%2]
				body := fmt.Sprintf("From: w%d\r\n\r\nmessage %d of writer %d\r\n", w, m, w)
				id, err := s.Append(addr, []byte(body))
				if err != nil {
					fail(err)
					return
				}
				mu.Lock()
				if prev, dup := byID[id]; dup {
					errs = append(errs, fmt.Errorf("id %d acknowledged twice: %q and %q", id, prev.body, body))
				}
				byID[id] = acked{addr, body}
				mu.Unlock()
			}
		}()
	}
	writersDone := make(chan struct{})
	for d := 0; d < deleters; d++ {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			<-start
			addr := users[d%2]
			for round := 0; ; round++ {
				select {
				case <-writersDone:
					return
				default:
				}
				infos, err := s.List(addr)
				if err != nil {
					fail(err)
					return
				}
				// Delete every other listed message, a different half
				// each round.
				var ids []uint64
				for i, in := range infos {
					if (i+round)%2 == 0 {
						ids = append(ids, in.ID)
					}
				}
				if err := s.Delete(addr, ids); err != nil {
					fail(err)
					return
				}
				mu.Lock()
				for _, id := range ids {
					deleted[id] = true
				}
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	close(writersDone)
	dwg.Wait()
	for _, err := range errs {
		t.Error(err)
	}

	if len(byID) != writers*perWriter {
		t.Fatalf("%d distinct ids acknowledged for %d appends", len(byID), writers*perWriter)
	}
	if len(deleted) == 0 {
		t.Error("deleters deleted nothing: the test did not exercise concurrent deletes")
	}
	remaining := 0
	for _, addr := range users {
		listed := map[uint64]bool{}
		infos, err := s.List(addr)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range infos {
			if listed[in.ID] {
				t.Errorf("%s: id %d listed twice", addr, in.ID)
			}
			listed[in.ID] = true
			a, ok := byID[in.ID]
			switch {
			case !ok:
				t.Errorf("%s: id %d listed but never acknowledged", addr, in.ID)
			case a.addr != addr:
				t.Errorf("id %d for %s listed in %s", in.ID, a.addr, addr)
			case deleted[in.ID]:
				t.Errorf("%s: id %d deleted but still listed", addr, in.ID)
			}
			body, err := s.Read(addr, in.ID)
			if err != nil || string(body) != a.body || in.Size != int64(len(body)) {
				t.Errorf("%s: id %d reads %q (size %d), %v; want %q", addr, in.ID, body, in.Size, err, a.body)
			}
		}
		for id, a := range byID {
			if a.addr == addr && !deleted[id] && !listed[id] {
				t.Errorf("%s: acknowledged message %d lost", addr, id)
			}
		}
		remaining += len(infos)
	}
	for id := range deleted {
		if _, ok := byID[id]; !ok {
			t.Errorf("deleted id %d was never acknowledged", id)
		}
	}
	if want := len(byID) - len(deleted); remaining != want {
		t.Errorf("%d messages remain, want %d acknowledged - %d deleted = %d", remaining, len(byID), len(deleted), want)
	}
	t.Logf("%d appends, %d deleted, %d remain, %d commits", len(byID), len(deleted), remaining, s.Commits())
}

// TestGroupCommit: 32 concurrent deliveries share commits (and so fsyncs).
func TestGroupCommit(t *testing.T) {
	const n = 32
	s := storeWithUsers(t, alice)
	msg := bytes.Repeat([]byte("x"), 4096)
	start := make(chan struct{})
	var ready, wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-start
			_, err := s.Append(alice, msg)
			errs <- err
		}()
	}
	ready.Wait()
	before := s.Commits()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	commits := s.Commits() - before
	t.Logf("%d concurrent appends took %d commits", n, commits)
	if commits > n/4 {
		t.Errorf("%d concurrent appends took %d commits, want at most %d", n, commits, n/4)
	}
	if got := len(listIDs(t, s, alice)); got != n {
		t.Errorf("%d messages stored, want %d", got, n)
	}
}
