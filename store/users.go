package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

var (
	// ErrNoUser means the address has no mailbox here.
	ErrNoUser = errors.New("no such user")
	// ErrUserExists means the address already has a mailbox.
	ErrUserExists = errors.New("user already exists")
	// ErrBadPassword means the password did not match.
	ErrBadPassword = errors.New("wrong password")
	// ErrNotAuthorized means a login asked to act as another user: a SASL
	// authorization identity that is not the login name (Authenticate).
	ErrNotAuthorized = errors.New("authorization identity is not the login name")
	// ErrEmptyPassword refuses empty passwords at creation.
	ErrEmptyPassword = errors.New("empty password")
)

// User is a mailbox owner as listed by Users.
type User struct {
	Address string    `json:"address"`
	Created time.Time `json:"created"`
	// Used is the mailbox's size in octets (Usage); Quota the user's own
	// quota, 0 for none of its own (the server's default applies).
	Used  int64 `json:"used"`
	Quota int64 `json:"quota"`
}

// userRecord is the users bucket's JSON value. Quota came after schema 2
// was fixed and needs no migration: a record written without it decodes
// with Quota 0, which means "no quota of its own", what such a user had;
// and a minimail without the field ignores it when it reads the record.
type userRecord struct {
	Address string    `json:"address"`
	Hash    []byte    `json:"hash"`
	Created time.Time `json:"created"`
	Quota   int64     `json:"quota,omitempty"`
}

// Key returns the lookup key for addr: the whole address lower-cased, so the
// local part matches case-insensitively as users expect (RFC 5321 allows
// case-sensitive local parts, but no self-hoster wants Alice and alice to be
// two people).
func Key(addr string) string { return strings.ToLower(strings.TrimSpace(addr)) }

// maxAddress is the longest address a path can carry (RFC 5321 4.5.3.1.3:
// 256 octets with the angle brackets).
const maxAddress = 254

// CanonicalAddress validates addr as local@domain and lower-cases the domain.
// It is the one rule for user names: what it refuses can be neither created
// nor logged in with (LoginName).
func CanonicalAddress(addr string) (string, error) {
	if len(addr) > maxAddress {
		return "", fmt.Errorf("address %.40q...: longer than %d octets", addr, maxAddress)
	}
	at := strings.LastIndexByte(addr, '@')
	// A second @ is only valid inside a quoted local part (RFC 5321 4.1.2),
	// and quotes are refused below.
	if at <= 0 || at == len(addr)-1 || strings.IndexByte(addr, '@') != at {
		return "", fmt.Errorf("address %q: want local@domain", addr)
	}
	if strings.ContainsAny(addr, " \t\r\n<>\"") {
		return "", fmt.Errorf("address %q: contains spaces, quotes or brackets", addr)
	}
	if strings.ContainsFunc(addr, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }) {
		return "", fmt.Errorf("address %q: contains control characters or invalid UTF-8", addr)
	}
	// Key trims Unicode spaces as well: a name holding one (U+00A0, say)
	// would be looked up as another.
	if strings.ContainsFunc(addr, unicode.IsSpace) {
		return "", fmt.Errorf("address %q: contains spaces, quotes or brackets", addr)
	}
	return addr[:at] + "@" + strings.ToLower(addr[at+1:]), nil
}

// LoginName returns the form in which a login name (SMTP AUTH, POP3 USER)
// is looked up and counted: the address lower-cased, as Key has it. A name
// that CanonicalAddress refuses, surrounding spaces included, is an error:
// no user can have it, so callers answer it as they answer a wrong
// password, and guessers get no fresh spelling of a real name.
func LoginName(name string) (string, error) {
	if _, err := CanonicalAddress(name); err != nil {
		return "", fmt.Errorf("login name: %w", err)
	}
	return Key(name), nil
}

// withHashSlot runs fn, one bcrypt computation, once fewer than
// Options.MaxConcurrentHashes others are running. bcrypt is made to be slow
// (75 ms a login at the default cost): unbounded, a burst of logins would
// take every core from deliveries. A login that waits for a slot waits the
// same whether the user exists or not.
func (s *Store) withHashSlot(fn func() error) error {
	s.hashSlots <- struct{}{}
	defer func() { <-s.hashSlots }()
	return fn()
}

// compareHash checks password against hash in a hash slot.
func (s *Store) compareHash(hash []byte, password string) error {
	compare := bcrypt.CompareHashAndPassword
	if s.opts.compareHash != nil {
		compare = s.opts.compareHash
	}
	return s.withHashSlot(func() error { return compare(hash, []byte(password)) })
}

func (s *Store) hash(password string) ([]byte, error) {
	if password == "" {
		return nil, ErrEmptyPassword
	}
	cost := s.opts.BcryptCost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	var h []byte
	err := s.withHashSlot(func() (err error) {
		h, err = bcrypt.GenerateFromPassword([]byte(password), cost)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}

// AddUser creates a user and an empty mailbox.
func (s *Store) AddUser(addr, password string) error {
	addr, err := CanonicalAddress(addr)
	if err != nil {
		return err
	}
	h, err := s.hash(password)
	if err != nil {
		return err
	}
	rec, _ := json.Marshal(userRecord{Address: addr, Hash: h, Created: time.Now().UTC()})
	key := []byte(Key(addr))
	return s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		if users.Get(key) != nil {
			return fmt.Errorf("%s: %w", addr, ErrUserExists)
		}
		if tx.Bucket(bucketAliases).Get(key) != nil {
			return fmt.Errorf("%s: %w", addr, ErrIsAlias)
		}
		if err := users.Put(key, rec); err != nil {
			return err
		}
		mb, err := tx.Bucket(bucketMailboxes).CreateBucketIfNotExists(key)
		if err != nil {
			return err
		}
		if _, err := mb.CreateBucketIfNotExists(bucketIndex); err != nil {
			return err
		}
		_, err = mb.CreateBucketIfNotExists(bucketHead)
		return err
	})
}

// SetPassword replaces a user's password.
func (s *Store) SetPassword(addr, password string) error {
	h, err := s.hash(password)
	if err != nil {
		return err
	}
	return s.changeUser(addr, func(rec *userRecord) { rec.Hash = h })
}

// changeUser rewrites addr's user record with change applied, in one
// transaction.
func (s *Store) changeUser(addr string, change func(*userRecord)) error {
	key := []byte(Key(addr))
	return s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		v := users.Get(key)
		if v == nil {
			return fmt.Errorf("%s: %w", addr, ErrNoUser)
		}
		rec, err := decodeUserRecord(key, v)
		if err != nil {
			return err
		}
		change(&rec)
		b, _ := json.Marshal(rec)
		return users.Put(key, b)
	})
}

// ErrBadQuota refuses a negative quota.
var ErrBadQuota = errors.New("quota must be 0 or more bytes")

// SetQuota sets a user's own quota in octets; 0 removes it, so the
// server's default (mda.Agent.DefaultQuota) applies.
func (s *Store) SetQuota(addr string, bytes int64) error {
	if bytes < 0 {
		return fmt.Errorf("%s: %d: %w", addr, bytes, ErrBadQuota)
	}
	return s.changeUser(addr, func(rec *userRecord) { rec.Quota = bytes })
}

// DeleteUser removes a user and their mailbox with all its messages, and
// every shared body no other mailbox refers to.
func (s *Store) DeleteUser(addr string) error {
	key := []byte(Key(addr))
	return s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		if users.Get(key) == nil {
			return fmt.Errorf("%s: %w", addr, ErrNoUser)
		}
		if names, err := pointingTo(tx, string(key)); err != nil {
			return err
		} else if len(names) > 0 {
			return fmt.Errorf("user %s: %w: %s (alias del them first)", addr, ErrAliasInUse, strings.Join(names, ", "))
		}
		if err := users.Delete(key); err != nil {
			return err
		}
		mailboxes := tx.Bucket(bucketMailboxes)
		if mailboxes.Bucket(key) == nil {
			return nil
		}
		mb, err := mailbox(tx, addr)
		if err != nil {
			return err
		}
		if err := releaseMailbox(tx, mb); err != nil {
			return err
		}
		return mailboxes.DeleteBucket(key)
	})
}

// Users lists every user, sorted by address.
func (s *Store) Users() ([]User, error) {
	var out []User
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			rec, err := decodeUserRecord(k, v)
			if err != nil {
				return err
			}
			u := User{Address: rec.Address, Created: rec.Created, Quota: rec.Quota}
			if mb, err := mailbox(tx, rec.Address); err == nil {
				if u.Used, err = usage(mb); err != nil {
					return err
				}
			}
			out = append(out, u)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, err
}

// LookupUser returns the canonical address of an existing user, or ErrNoUser.
func (s *Store) LookupUser(addr string) (string, error) {
	rec, err := s.userRecord(addr)
	if err != nil {
		return "", err
	}
	return rec.Address, nil
}

func (s *Store) userRecord(addr string) (userRecord, error) {
	var rec userRecord
	err := s.view(func(tx *bolt.Tx) error {
		k := []byte(Key(addr))
		v := tx.Bucket(bucketUsers).Get(k)
		if v == nil {
			return fmt.Errorf("%s: %w", addr, ErrNoUser)
		}
		var err error
		rec, err = decodeUserRecord(k, v)
		return err
	})
	return rec, err
}

// dummyHash returns a hash at the store's own cost: checking a password
// against it makes a login for an unknown user cost as much as a real one, so
// response timing does not reveal which addresses exist.
func (s *Store) dummyHash() []byte {
	s.dummyOnce.Do(func() {
		h, err := s.hash("minimail-dummy")
		if err != nil {
			// Cannot happen for this password; fall back to the cheapest
			// hash rather than none.
			h, _ = bcrypt.GenerateFromPassword([]byte("minimail-dummy"), bcrypt.MinCost)
		}
		s.dummy = h
	})
	return s.dummy
}

// Authenticate checks a login and returns the user's canonical address.
// An unknown user, a login name that is no address (LoginName) and a wrong
// password all give ErrBadPassword.
//
// authz is the SASL authorization identity (RFC 4616 section 2), "" when
// the client gave none and for logins that have none (SMTP AUTH LOGIN,
// POP3 USER/PASS). A login acts only as itself: authz must be empty or the
// login name itself, compared as users are looked up (LoginName: case does
// not matter), or the login is refused with ErrNotAuthorized before the
// password is checked. A server that let the credentials of one user act
// as another this way was CVE-2023-27582. Every login of SMTP and POP3
// alike comes through here, so this is the one place the rule lives.
func (s *Store) Authenticate(authz, login, password string) (string, error) {
	key, err := LoginName(login)
	if err != nil {
		return "", ErrBadPassword
	}
	if authz != "" {
		if as, err := LoginName(authz); err != nil || as != key {
			return "", ErrNotAuthorized
		}
	}
	rec, err := s.userRecord(key)
	if errors.Is(err, ErrNoUser) {
		s.compareHash(s.dummyHash(), password)
		return "", ErrBadPassword
	}
	if err != nil {
		return "", err
	}
	if s.auths.verified(rec.Hash, password) {
		return rec.Address, nil
	}
	if s.compareHash(rec.Hash, password) != nil {
		return "", ErrBadPassword
	}
	s.auths.remember(rec.Hash, password)
	return rec.Address, nil
}
