package store

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// hammer runs fn over and over in n goroutines of wg until stop is closed;
// a goroutine whose fn fails reports the error and stops.
func hammer(t *testing.T, wg *sync.WaitGroup, stop <-chan struct{}, n int, fn func() error) {
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := fn(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
}

// openInternal opens a store for the tests that look at its insides.
func openInternal(t testing.TB, opts Options) *Store {
	t.Helper()
	opts.BcryptCost = bcrypt.MinCost
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The committer's wait is driven by the announcements, not by the clock:
// the tests give it a linger no test run reaches, so a wait that should not
// happen hangs the test, and one that should is not cut short by a slow
// machine.
const testLinger = time.Hour

func TestAwaitExpected(t *testing.T) {
	tests := []struct {
		name     string
		expected int // announced writes
		inGroup  int // writes already in the group
		arriving int // writes sent while it waits
		size     int // octets of each write
		want     int // group size when it returns
	}{
		{"a lone writer never waits", 1, 1, 0, 0, 1},
		{"nothing announced", 0, 1, 0, 0, 1},
		{"waits for two thirds of eight, rounded up", 8, 1, 5, 0, 6},
		{"and then for the rest of eight", 8, 1, 7, 0, 8},
		{"two thirds of eight already there", 8, 6, 0, 0, 6},
		{"waits for two thirds of three", 3, 1, 1, 0, 2},
		{"waits for both of two", 2, 1, 1, 0, 2},
		{"takes no more than it waits for", 4, 1, 2, 0, 3},
		{"big mail: no more than maxGroupBytes", 32, 1, 20, 1 << 20, 8},
		{"big mail: one over it is enough", 8, 1, 5, 3 << 20, 3},
		{"a group that is full already", 8, 1, 5, maxGroupBytes, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Where the rest never come, the wait for them ends soon; where
			// they come, it never ends before they are there.
			straggle := 10 * time.Millisecond
			if tt.inGroup+tt.arriving >= tt.expected {
				straggle = testLinger
			}
			s := &Store{writes: make(chan *writeReq), expectEnded: make(chan struct{}, 1), opts: Options{linger: testLinger, straggle: straggle}}
			s.expected.Store(int64(tt.expected))
			group := make([]*writeReq, tt.inGroup)
			for i := range group {
				group[i] = &writeReq{size: tt.size}
			}
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for range tt.arriving {
					select {
					case s.writes <- &writeReq{size: tt.size}:
					case <-stop:
						return
					}
				}
			}()
			done := make(chan struct{})
			go func() { s.awaitExpected(&group); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("awaitExpected still waiting with %d in the group", len(group))
			}
			if len(group) != tt.want {
				t.Errorf("group of %d, want %d", len(group), tt.want)
			}
		})
	}
}

// fill takes what is waiting up to maxGroup writes, or maxGroupBytes.
func TestFill_BoundsTheGroup(t *testing.T) {
	tests := []struct {
		name    string
		waiting int
		size    int
		want    int
	}{
		{"small records", 200, 100, maxGroup},
		{"big mail", 20, 1 << 20, 8},
		{"all that waits", 3, 1 << 20, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Store{writes: make(chan *writeReq, tt.waiting)}
			for range tt.waiting {
				s.writes <- &writeReq{size: tt.size}
			}
			group := []*writeReq{{size: tt.size}}
			s.fill(&group)
			if len(group) != min(tt.want, tt.waiting+1) {
				t.Errorf("group of %d, want %d", len(group), min(tt.want, tt.waiting+1))
			}
		})
	}
}

func TestAwaitExpected_GivesUpAfterTheLinger(t *testing.T) {
	s := &Store{writes: make(chan *writeReq), expectEnded: make(chan struct{}, 1), opts: Options{linger: 5 * time.Millisecond}}
	s.expected.Store(8) // announced, but never written
	group := []*writeReq{{}}
	start := time.Now()
	s.awaitExpected(&group)
	if len(group) != 1 {
		t.Errorf("group of %d", len(group))
	}
	if d := time.Since(start); d < 5*time.Millisecond {
		t.Errorf("returned after %v, before the linger", d)
	}
}

// Once two thirds are there, the rest are waited for only groupStraggle:
// an open transaction that is slow must not hold up every commit for the
// whole linger.
func TestAwaitExpected_WaitsForTheRestOnlyAMoment(t *testing.T) {
	s := &Store{writes: make(chan *writeReq), expectEnded: make(chan struct{}, 1),
		opts: Options{linger: testLinger, straggle: 5 * time.Millisecond}}
	s.expected.Store(8) // two never come
	group := make([]*writeReq, 6)
	for i := range group {
		group[i] = &writeReq{}
	}
	start := time.Now()
	returned := make(chan struct{})
	go func() { s.awaitExpected(&group); close(returned) }()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting for the last two after 10 s: the wait for the rest is not bounded")
	}
	if d := time.Since(start); d < 5*time.Millisecond {
		t.Errorf("returned after %v, without waiting for the rest", d)
	}
	if len(group) != 6 {
		t.Errorf("group of %d, want 6", len(group))
	}
}

// A committer waiting for announced writes stops waiting for those that
// are done without writing (a transaction refused or abandoned).
func TestAwaitExpected_StopsWaitingForAbandonedWrites(t *testing.T) {
	s := &Store{writes: make(chan *writeReq), expectEnded: make(chan struct{}, 1), opts: Options{linger: testLinger}}
	dones := make([]func(), 8)
	for i := range dones {
		dones[i] = s.Expect()
	}
	group := []*writeReq{{}}
	returned := make(chan struct{})
	go func() { s.awaitExpected(&group); close(returned) }()
	for _, done := range dones[1:] { // seven give up; the one in the group is left
		done()
	}
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting for writes that were abandoned")
	}
}

func TestExpect_DoneCountsOnce(t *testing.T) {
	s := &Store{expectEnded: make(chan struct{}, 1)}
	done := s.Expect()
	s.Expect()
	done()
	done()
	if n := s.expected.Load(); n != 1 {
		t.Errorf("expected = %d after one of two was done twice, want 1", n)
	}
}

// Eight deliveries announced together share their commits, though they
// arrive one by one, further apart than a commit takes: the committer waits
// for the ones on their way. Without the wait each would commit alone.
func TestExpect_StaggeredDeliveriesShareCommits(t *testing.T) {
	s := openInternal(t, Options{linger: testLinger})
	const n = 8
	for i := range n {
		if err := s.AddUser(fmt.Sprintf("u%d@example.test", i), "password-12345"); err != nil {
			t.Fatal(err)
		}
	}
	dones := make([]func(), n)
	for i := range n {
		dones[i] = s.Expect()
	}
	before := s.Commits()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer dones[i]()
			if _, err := s.Append(fmt.Sprintf("u%d@example.test", i), bytes.Repeat([]byte("x"), 4096)); err != nil {
				t.Error(err)
			}
		}()
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	// Six wait for one another, then the last two (both of what is left):
	// two commits, three if the first six are still announced when the
	// seventh comes (it then waits for five more, and the linger is long).
	if c := s.Commits() - before; c > n/2 {
		t.Errorf("%d deliveries took %d commits, want at most %d", n, c, n/2)
	}
}

// BenchmarkAppendExpected is eight concurrent writers that announce their
// deliveries, as SMTP sessions do: it reports the commits (each two
// fsyncs) a message costs.
func BenchmarkAppendExpected(b *testing.B) {
	s := openInternal(b, Options{})
	const writers = 8
	for i := range writers {
		if err := s.AddUser(fmt.Sprintf("u%d@example.test", i), "password-12345"); err != nil {
			b.Fatal(err)
		}
	}
	body := bytes.Repeat([]byte("x"), 4096)
	before := s.Commits()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				done := s.Expect()
				_, err := s.Append(fmt.Sprintf("u%d@example.test", i), body)
				done()
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(s.Commits()-before)/float64(b.N), "commits/msg")
}

// A committed message is not kept alive by the store: its memory goes once
// the caller lets go of it.
func TestCommittedMessageIsNotRetained(t *testing.T) {
	s := openInternal(t, Options{})
	if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
		t.Fatal(err)
	}
	freed := make(chan struct{})
	msg := bytes.Repeat([]byte("x"), 1<<20)
	runtime.SetFinalizer(&msg[0], func(*byte) { close(freed) })
	if _, err := s.Append("alice@example.test", msg); err != nil {
		t.Fatal(err)
	}
	msg = nil
	for range 20 {
		runtime.GC()
		select {
		case <-freed:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("the message's memory is still held after its commit")
}

// A delivery counts against maxGroupBytes once, however many recipients
// share its body, and a forward's queued copy is the same message.
func TestWriteSize(t *testing.T) {
	body := make([]byte, 3<<20)
	head := []byte("Received: x\r\n")
	tests := []struct {
		name string
		ds   []Delivery
		out  []Outgoing
		want int
	}{
		{"nothing", nil, nil, 0},
		{"one copy", []Delivery{{Header: head, Message: body}}, nil, len(head) + len(body)},
		{"ten copies of one body", slices.Repeat([]Delivery{{Header: head, Message: body}}, 10), nil, len(head) + len(body)},
		{"a forward only", nil, []Outgoing{{Body: body}}, len(body)},
		{"copies and a forward", []Delivery{{Header: head, Message: body}}, []Outgoing{{Body: body}}, len(head) + len(body)},
	}
	for _, tt := range tests {
		if got := writeSize(tt.ds, tt.out); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}

// The cap on a group's octets holds through each write path that stores a
// message: 24 concurrent 1 MiB writes, all announced, would otherwise be
// taken two thirds at a time (16 MiB that bbolt copies until the commit is
// done). With the cap they take at least three commits.
func TestGroupCap_ThroughTheWritePaths(t *testing.T) {
	const n = 24
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	entry := func() QueueEntry {
		return QueueEntry{From: "bob@a.test", Rcpts: []QueueRcpt{{Addr: "x@b.test", State: RcptPending}}, Created: now, NextAttempt: now}
	}
	var reported []uint64 // the entries the notices report on
	tests := []struct {
		name  string
		setup func(t *testing.T, s *Store) // before the announcements
		write func(s *Store, i int) error
	}{
		{"AppendAndEnqueue", nil, func(s *Store, i int) error {
			_, _, err := s.AppendAndEnqueue([]Delivery{{Address: "alice@example.test", Header: []byte("Received: x\r\n"), Message: body}}, nil)
			return err
		}},
		{"EnqueueMessage", nil, func(s *Store, i int) error {
			_, err := s.EnqueueMessage(entry(), body)
			return err
		}},
		{"EnqueueNotice", func(t *testing.T, s *Store) {
			for range n {
				id, err := s.EnqueueMessage(entry(), []byte("Subject: x\r\n\r\nx\r\n"))
				if err != nil {
					t.Fatal(err)
				}
				reported = append(reported, id)
			}
		}, func(s *Store, i int) error {
			e := entry()
			e.ID = reported[i]
			e.Rcpts[0].State = RcptFailed
			_, err := s.EnqueueNotice(e, entry(), body)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openInternal(t, Options{linger: 5 * time.Second, NoOnlineCompaction: true})
			if err := s.AddUser("alice@example.test", "password-12345"); err != nil {
				t.Fatal(err)
			}
			if tt.setup != nil {
				tt.setup(t, s)
			}
			before := s.commits.Load()
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				done := s.Expect()
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer done()
					errs <- tt.write(s, i)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			// 24 MiB at most 8 MiB a group (maxGroupBytes).
			if got, want := s.commits.Load()-before, int64(3); got < want {
				t.Errorf("%d MiB in %d commits, want at least %d", n*len(body)>>20, got, want)
			}
		})
	}
}
