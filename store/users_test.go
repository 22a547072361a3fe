package store_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"minimail/store"
)

func TestAddUser(t *testing.T) {
	s := storeWithUsers(t, "alice@example.org")
	tests := []struct {
		name     string
		addr, pw string
		wantIs   error  // sentinel the error must wrap, if any
		wantSub  string // text the error must contain, if any
		wantAddr string // canonical address stored, on success
	}{
		{name: "plain", addr: "bob@example.org", pw: "pw", wantAddr: "bob@example.org"},
		{name: "domain lower-cased, local part kept", addr: "Carol.Smith@Example.ORG", pw: "pw", wantAddr: "Carol.Smith@example.org"},
		{name: "duplicate", addr: "alice@example.org", pw: "pw", wantIs: store.ErrUserExists},
		{name: "duplicate differing in case", addr: "ALICE@EXAMPLE.ORG", pw: "pw", wantIs: store.ErrUserExists},
		{name: "no @", addr: "alice.example.org", pw: "pw", wantSub: "want local@domain"},
		{name: "empty local part", addr: "@example.org", pw: "pw", wantSub: "want local@domain"},
		{name: "empty domain", addr: "dave@", pw: "pw", wantSub: "want local@domain"},
		{name: "empty", addr: "", pw: "pw", wantSub: "want local@domain"},
		{name: "just @", addr: "@", pw: "pw", wantSub: "want local@domain"},
		{name: "two @", addr: "dave@evil.test@example.org", pw: "pw", wantSub: "want local@domain"},
		{name: "space", addr: "da ve@example.org", pw: "pw", wantSub: "spaces"},
		{name: "angle brackets", addr: "<dave@example.org>", pw: "pw", wantSub: "brackets"},
		{name: "newline", addr: "dave@example.org\r\nBcc: x", pw: "pw", wantSub: "spaces"},
		{name: "NUL", addr: "dave@example.org\x00", pw: "pw", wantSub: "control"},
		{name: "control byte in the local part", addr: "da\x01ve@example.org", pw: "pw", wantSub: "control"},
		{name: "DEL", addr: "dave\x7f@example.org", pw: "pw", wantSub: "control"},
		{name: "invalid UTF-8", addr: "dave\xff@example.org", pw: "pw", wantSub: "UTF-8"},
		{name: "longer than a path allows", addr: strings.Repeat("d", 243) + "@example.org", pw: "pw", wantSub: "longer than 254"},
		{name: "empty password", addr: "erin@example.org", pw: "", wantIs: store.ErrEmptyPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := s.Users()
			err := s.AddUser(tt.addr, tt.pw)
			if tt.wantAddr != "" {
				if err != nil {
					t.Fatalf("AddUser(%q): %v", tt.addr, err)
				}
				got, err := s.LookupUser(strings.ToLower(tt.addr))
				if err != nil || got != tt.wantAddr {
					t.Errorf("LookupUser = %q, %v; want %q", got, err, tt.wantAddr)
				}
				if msgs, err := s.List(tt.addr); err != nil || len(msgs) != 0 {
					t.Errorf("new mailbox: List = %v, %v; want empty", msgs, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("AddUser(%q, %q) succeeded", tt.addr, tt.pw)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantIs)
			}
			if tt.wantSub != "" && !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantSub)
			}
			if after, _ := s.Users(); len(after) != len(before) {
				t.Errorf("refused AddUser changed the user list: %v -> %v", before, after)
			}
		})
	}
}

func TestLookupUser(t *testing.T) {
	s := storeWithUsers(t, "Alice@Example.org")
	tests := []struct {
		query  string
		want   string
		wantIs error
	}{
		{query: "Alice@example.org", want: "Alice@example.org"},
		{query: "alice@example.org", want: "Alice@example.org"},
		{query: "ALICE@EXAMPLE.ORG", want: "Alice@example.org"},
		{query: "aLiCe@eXaMpLe.OrG", want: "Alice@example.org"},
		{query: "bob@example.org", wantIs: store.ErrNoUser},
		{query: "alice@example.net", wantIs: store.ErrNoUser},
		{query: "alice", wantIs: store.ErrNoUser},
		{query: "", wantIs: store.ErrNoUser},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			got, err := s.LookupUser(tt.query)
			if tt.wantIs != nil {
				if !errors.Is(err, tt.wantIs) {
					t.Errorf("LookupUser(%q) = %q, %v; want %v", tt.query, got, err, tt.wantIs)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("LookupUser(%q) = %q, %v; want %q", tt.query, got, err, tt.want)
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	s := storeWithUsers(t)
	if err := s.AddUser("alice@example.org", "open sesame"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name            string
		authz, addr, pw string
		want            string
		wantErr         error
	}{
		{"good", "", "alice@example.org", "open sesame", "alice@example.org", nil},
		{"good, address in other case", "", "ALICE@Example.Org", "open sesame", "alice@example.org", nil},
		{"wrong password", "", "alice@example.org", "open sesame!", "", store.ErrBadPassword},
		{"password case matters", "", "alice@example.org", "Open Sesame", "", store.ErrBadPassword},
		{"empty password", "", "alice@example.org", "", "", store.ErrBadPassword},
		{"unknown user", "", "mallory@example.org", "open sesame", "", store.ErrBadPassword},
		{"not an address", "", "alice", "open sesame", "", store.ErrBadPassword},
		// The right password under a name no user can have: refused as a
		// wrong password is, so that spaces and case cannot spell a real
		// name anew for every guess.
		{"leading space", "", " alice@example.org", "open sesame", "", store.ErrBadPassword},
		{"trailing tab", "", "alice@example.org\t", "open sesame", "", store.ErrBadPassword},
		{"spaces and other case", "", " ALICE@EXAMPLE.ORG\t", "open sesame", "", store.ErrBadPassword},
		{"trailing NUL", "", "alice@example.org\x00", "open sesame", "", store.ErrBadPassword},
		{"trailing CRLF", "", "alice@example.org\r\n", "open sesame", "", store.ErrBadPassword},
		{"leading no-break space", "", "\u00a0alice@example.org", "open sesame", "", store.ErrBadPassword},
		{"trailing ideographic space", "", "alice@example.org\u3000", "open sesame", "", store.ErrBadPassword},
		// The authorization identity (SASL PLAIN): only the login itself,
		// spelled as it may be looked up.
		{"authz is the login", "alice@example.org", "alice@example.org", "open sesame", "alice@example.org", nil},
		{"authz is the login in other case", "Alice@EXAMPLE.org", "aLiCe@example.org", "open sesame", "alice@example.org", nil},
		{"authz is another user", "bob@example.org", "alice@example.org", "open sesame", "", store.ErrNotAuthorized},
		{"authz is another user, wrong password", "bob@example.org", "alice@example.org", "wrong", "", store.ErrNotAuthorized},
		{"authz is the login with a space", "alice@example.org ", "alice@example.org", "open sesame", "", store.ErrNotAuthorized},
		{"authz is no address", "alice", "alice@example.org", "open sesame", "", store.ErrNotAuthorized},
		{"authz for a login that is no address", "alice", "alice", "open sesame", "", store.ErrBadPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Authenticate(tt.authz, tt.addr, tt.pw)
			if err != tt.wantErr || got != tt.want {
				// Exact error: an unknown user must be indistinguishable
				// from a wrong password.
				t.Errorf("Authenticate(%q, %q, %q) = %q, %v; want %q, %v", tt.authz, tt.addr, tt.pw, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestLoginName(t *testing.T) {
	tests := []struct {
		name, want string // want "" = refused
	}{
		{"alice@example.org", "alice@example.org"},
		{"Alice@Example.ORG", "alice@example.org"},
		{"bücher@exämple.test", "bücher@exämple.test"},
		{strings.Repeat("a", 64) + "@" + strings.Repeat("b", 189), strings.Repeat("a", 64) + "@" + strings.Repeat("b", 189)},
		{strings.Repeat("a", 64) + "@" + strings.Repeat("b", 190), ""},
		{" alice@example.org", ""},
		{"alice@example.org ", ""},
		{"\talice@example.org", ""},
		{"\u00a0alice@example.org", ""},
		{"alice@example.org\u2028", ""},
		{"alice@example.org\n", ""},
		{"alice@example.org\x00", ""},
		{"al\x00ice@example.org", ""},
		{"alice@exa\x1bmple.org", ""},
		{"alice\xc3@example.org", ""},
		{"alice", ""},
		{"alice@", ""},
		{"@example.org", ""},
		{"", ""},
		{"a@b@example.org", ""},
		{"<alice@example.org>", ""},
		{`"alice"@example.org`, ""},
	}
	for _, tt := range tests {
		got, err := store.LoginName(tt.name)
		if tt.want == "" {
			if err == nil {
				t.Errorf("LoginName(%q) = %q, want an error", tt.name, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("LoginName(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

// TestAuthenticate_UnknownUserCostsAsMuch: refusing an unknown user must take
// about as long as checking a real password, or response times tell an
// attacker which addresses exist.
func TestAuthenticate_UnknownUserCostsAsMuch(t *testing.T) {
	opts := testOptions
	opts.BcryptCost = bcrypt.MinCost + 3 // 8 times the cheapest, fast enough under -race
	s, err := store.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AddUser("alice@example.org", "right"); err != nil {
		t.Fatal(err)
	}
	fastest := func(addr string) time.Duration {
		best := time.Hour
		for i := 0; i < 3; i++ {
			start := time.Now()
			if _, err := s.Authenticate("", addr, "wrong"); !errors.Is(err, store.ErrBadPassword) {
				t.Fatalf("Authenticate(%s): %v", addr, err)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := fastest("alice@example.org"), fastest("nobody@example.org")
	// The same bcrypt cost takes the same time; a cheaper dummy hash is
	// 2^(cost difference) times faster. Allow a generous factor for noise.
	if unknown < known/4 {
		t.Errorf("unknown user refused in %v, wrong password in %v: timing reveals which users exist", unknown, known)
	}
}

func TestSetPassword(t *testing.T) {
	s := storeWithUsers(t, "alice@example.org")
	old := "pw-alice@example.org"

	if err := s.SetPassword("ALICE@example.org", "new secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate("", "alice@example.org", old); err != store.ErrBadPassword {
		t.Errorf("old password after change: %v, want ErrBadPassword", err)
	}
	if got, err := s.Authenticate("", "alice@example.org", "new secret"); err != nil || got != "alice@example.org" {
		t.Errorf("new password: %q, %v", got, err)
	}

	tests := []struct {
		name, addr, pw string
		wantIs         error
	}{
		{"empty password", "alice@example.org", "", store.ErrEmptyPassword},
		{"unknown user", "bob@example.org", "x", store.ErrNoUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.SetPassword(tt.addr, tt.pw); !errors.Is(err, tt.wantIs) {
				t.Errorf("SetPassword(%q, %q) = %v, want %v", tt.addr, tt.pw, err, tt.wantIs)
			}
			if _, err := s.Authenticate("", "alice@example.org", "new secret"); err != nil {
				t.Errorf("refused SetPassword changed the password: %v", err)
			}
		})
	}
	if _, err := s.LookupUser("bob@example.org"); !errors.Is(err, store.ErrNoUser) {
		t.Errorf("SetPassword of an unknown user created it: %v", err)
	}
}

func TestDeleteUser_RemovesMailbox(t *testing.T) {
	s := storeWithUsers(t, "alice@example.org", "bob@example.org")
	id, err := s.Append("alice@example.org", []byte("old mail\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append("bob@example.org", []byte("bob's\r\n")); err != nil {
		t.Fatal(err)
	}

	if err := s.DeleteUser("Alice@Example.org"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser("alice@example.org"); !errors.Is(err, store.ErrNoUser) {
		t.Errorf("second DeleteUser = %v, want ErrNoUser", err)
	}
	if _, err := s.LookupUser("alice@example.org"); !errors.Is(err, store.ErrNoUser) {
		t.Errorf("LookupUser after delete = %v", err)
	}
	if _, err := s.List("alice@example.org"); !errors.Is(err, store.ErrNoUser) {
		t.Errorf("List after delete = %v, want ErrNoUser", err)
	}
	if _, err := s.Read("alice@example.org", id); err == nil {
		t.Error("Read of a deleted user's message succeeded")
	}
	if _, err := s.Append("alice@example.org", []byte("x\r\n")); !errors.Is(err, store.ErrNoUser) {
		t.Errorf("Append after delete = %v, want ErrNoUser", err)
	}
	if _, err := s.Authenticate("", "alice@example.org", "pw-alice@example.org"); err != store.ErrBadPassword {
		t.Errorf("Authenticate after delete = %v", err)
	}
	if users, _ := s.Users(); len(users) != 1 || users[0].Address != "bob@example.org" {
		t.Errorf("Users after delete = %v", users)
	}
	if msgs, err := s.List("bob@example.org"); err != nil || len(msgs) != 1 {
		t.Errorf("other mailbox after delete: %v, %v", msgs, err)
	}

	// A new user of the same name starts empty, and ids go on rising.
	if err := s.AddUser("alice@example.org", "again"); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := s.List("alice@example.org"); len(msgs) != 0 {
		t.Errorf("re-created mailbox holds the old mail: %v", msgs)
	}
	if id2, err := s.Append("alice@example.org", []byte("new\r\n")); err != nil || id2 <= id {
		t.Errorf("Append after re-create = %d, %v; want an id above %d", id2, err, id)
	}
}

func TestUsers_SortedWithCreationTime(t *testing.T) {
	before := time.Now().Add(-time.Second)
	s := storeWithUsers(t, "carol@example.org", "Alice@example.org", "bob@example.net")
	users, err := s.Users()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range users {
		got = append(got, u.Address)
		if u.Created.Before(before) || u.Created.After(time.Now()) {
			t.Errorf("%s created %v", u.Address, u.Created)
		}
	}
	if want := "Alice@example.org bob@example.net carol@example.org"; strings.Join(got, " ") != want {
		t.Errorf("Users = %v, want %s", got, want)
	}
}

// TestPasswordNeverStoredInPlaintext reads the raw database file.
func TestPasswordNeverStoredInPlaintext(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	const pw1, pw2 = "Plaintext-Canary-One-4711", "Plaintext-Canary-Two-0815"
	if err := s.AddUser("alice@example.org", pw1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser("bob@example.org", "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword("bob@example.org", pw2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw := readFile(t, filepath.Join(dir, store.FileName))
	if !bytes.Contains(raw, []byte("alice@example.org")) {
		t.Fatal("sanity: the user's address is not in the file; wrong file?")
	}
	for _, pw := range []string{pw1, pw2} {
		for _, enc := range []string{pw, base64.StdEncoding.EncodeToString([]byte(pw)), strings.ToLower(pw)} {
			if bytes.Contains(raw, []byte(enc)) {
				t.Errorf("database file contains the password %q as %q", pw, enc)
			}
		}
	}
}
