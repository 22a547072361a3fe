package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// hashRecorder stands in for bcrypt's comparison: it counts the calls
// running at once and holds each until the test lets it go.
type hashRecorder struct {
	mu           sync.Mutex
	inside, most int
	calls        int
	entered      chan struct{}
	release      chan struct{}
}

func newHashRecorder(capacity int) *hashRecorder {
	return &hashRecorder{entered: make(chan struct{}, capacity), release: make(chan struct{})}
}

func (r *hashRecorder) compare(hash, password []byte) error {
	r.mu.Lock()
	r.inside++
	r.calls++
	r.most = max(r.most, r.inside)
	r.mu.Unlock()
	r.entered <- struct{}{}
	<-r.release
	r.mu.Lock()
	r.inside--
	r.mu.Unlock()
	return bcrypt.CompareHashAndPassword(hash, password)
}

func TestAuthenticate_AtMostMaxConcurrentHashesAtOnce(t *testing.T) {
	const slots, logins = 2, 12
	rec := newHashRecorder(logins)
	s, err := Open(t.TempDir(), Options{BcryptCost: bcrypt.MinCost, MaxConcurrentHashes: slots, compareHash: rec.compare})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AddUser("alice@example.org", "right"); err != nil {
		t.Fatal(err)
	}
	// Right and wrong passwords, and a user that does not exist.
	attempts := []struct{ login, password string }{
		{"alice@example.org", "right"}, {"alice@example.org", "wrong"}, {"nobody@example.org", "right"},
	}
	var wg sync.WaitGroup
	errs := make([]error, logins)
	for i := range logins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := attempts[i%len(attempts)]
			_, errs[i] = s.Authenticate("", a.login, a.password)
		}()
	}
	// The first slots logins hash at once, and no other starts while they
	// run (the wait only gives the others time to try: passing never
	// depends on it).
	for range slots {
		<-rec.entered
	}
	select {
	case <-rec.entered:
		close(rec.release)
		wg.Wait()
		t.Fatalf("a hash started while %d ran", slots)
	case <-time.After(100 * time.Millisecond):
	}
	// Each one that ends lets one more in.
	for range logins - slots {
		rec.release <- struct{}{}
		<-rec.entered
	}
	close(rec.release)
	wg.Wait()
	if rec.most != slots {
		t.Errorf("%d hashes ran at once, want %d", rec.most, slots)
	}
	for i, err := range errs {
		a := attempts[i%len(attempts)]
		if wantOK := a.login == "alice@example.org" && a.password == "right"; wantOK != (err == nil) {
			t.Errorf("Authenticate(%s, %s) = %v", a.login, a.password, err)
		}
	}
}

func TestAuthenticate_UnknownUserHashesLikeAWrongPassword(t *testing.T) {
	for _, tc := range []struct{ login, password string }{
		{"alice@example.org", "right"},
		{"alice@example.org", "wrong"},
		{"nobody@example.org", "right"},
		{"NOBODY@example.org", ""},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.login, tc.password), func(t *testing.T) {
			rec := newHashRecorder(1)
			close(rec.release)
			s, err := Open(t.TempDir(), Options{BcryptCost: bcrypt.MinCost, compareHash: rec.compare})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.AddUser("alice@example.org", "right"); err != nil {
				t.Fatal(err)
			}
			_, err = s.Authenticate("", tc.login, tc.password)
			if tc.password != "right" || tc.login != "alice@example.org" {
				if !errors.Is(err, ErrBadPassword) {
					t.Errorf("err = %v, want ErrBadPassword", err)
				}
			}
			if rec.calls != 1 {
				t.Errorf("%d password comparisons, want 1 as for every login", rec.calls)
			}
		})
	}
}

func TestDefaultHashSlots_HalfTheCoresRoundedUp(t *testing.T) {
	for procs, want := range map[int]int{1: 1, 2: 1, 3: 2, 4: 2, 8: 4} {
		if got := defaultHashSlots(procs); got != want {
			t.Errorf("defaultHashSlots(%d) = %d, want %d", procs, got, want)
		}
	}
}
