package store

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

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
		want     int // group size when it returns
	}{
		{"a lone writer never waits", 1, 1, 0, 1},
		{"nothing announced", 0, 1, 0, 1},
		{"waits for half of eight", 8, 1, 3, 4},
		{"half of eight already there", 8, 4, 0, 4},
		{"waits for half of three, rounded up", 3, 1, 1, 2},
		{"takes no more than it waits for", 4, 1, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Store{writes: make(chan *writeReq), opts: Options{linger: testLinger}}
			s.expected.Store(int64(tt.expected))
			group := make([]*writeReq, tt.inGroup)
			go func() {
				for range tt.arriving {
					s.writes <- &writeReq{}
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

func TestAwaitExpected_GivesUpAfterTheLinger(t *testing.T) {
	s := &Store{writes: make(chan *writeReq), opts: Options{linger: 5 * time.Millisecond}}
	s.expected.Store(8) // announced, but never written
	group := make([]*writeReq, 1)
	start := time.Now()
	s.awaitExpected(&group)
	if len(group) != 1 {
		t.Errorf("group of %d", len(group))
	}
	if d := time.Since(start); d < 5*time.Millisecond {
		t.Errorf("returned after %v, before the linger", d)
	}
}

func TestExpect_DoneCountsOnce(t *testing.T) {
	s := &Store{}
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
	// Four wait for one another, two of the other four, and the last two
	// (each half of what is left) go alone: four commits at most.
	if c := s.Commits() - before; c > n/2 {
		t.Errorf("%d deliveries took %d commits, want at most %d", n, c, n/2)
	}
}
