package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Aliases live in the aliases bucket: lower-cased alias (local@domain, or
// @domain for a domain's catch-all) -> JSON aliasRecord. The bucket came
// after schema 2 was fixed and needs no migration: initSchema creates it
// when missing at every read-write Open (CreateBucketIfNotExists), an older
// file simply has no aliases yet, and a minimail without aliases never
// looks at it. Backup copies the whole file, aliases included.
//
// The store keeps three rules at every change, so that delivery never has
// to judge: an alias never shadows a user (nor a user an alias), every
// local target is an existing user or alias, and no alias reaches itself
// through its targets. Whether a domain is local is the caller's to judge:
// the store does not know the configuration, so AddAliasRemote is told
// which targets are remote addresses (forwarding); they are kept in the
// record's remote list and never looked up.

var (
	// ErrNoAlias means the address is not an alias.
	ErrNoAlias = errors.New("no such alias")
	// ErrAliasExists refuses a second alias add for one address.
	ErrAliasExists = errors.New("alias already exists (alias del it first)")
	// ErrAliasShadowsUser refuses an alias with a user's address, and a
	// user with an alias's.
	ErrAliasShadowsUser = errors.New("address is a user's mailbox")
	// ErrIsAlias refuses a user with the address of an alias.
	ErrIsAlias = errors.New("address is an alias (alias del it first)")
	// ErrNoTarget refuses a target that is neither a user nor an alias.
	ErrNoTarget = errors.New("target is neither a user nor an alias")
	// ErrAliasLoop refuses an alias that would reach itself.
	ErrAliasLoop = errors.New("alias would loop")
	// ErrAliasInUse refuses deleting a user or alias that aliases point to.
	ErrAliasInUse = errors.New("aliases point to it")
	// ErrBadAlias refuses an alias or target that is no address.
	ErrBadAlias = errors.New("bad alias")
)

var bucketAliases = []byte("aliases")

// Alias is an alias as listed by Aliases.
type Alias struct {
	Address string   `json:"address"` // local@domain, or @domain (catch-all)
	Targets []string `json:"targets"`
	// Remote lists the targets that are remote addresses (forwarded
	// through the queue); empty for an alias without.
	Remote  []string  `json:"remote,omitempty"`
	Created time.Time `json:"created"`
}

// CatchAll reports whether the alias is a domain's catch-all.
func (a Alias) CatchAll() bool { return strings.HasPrefix(a.Address, "@") }

// aliasRecord is the aliases bucket's JSON value.
type aliasRecord struct {
	Address string    `json:"address"`
	Targets []string  `json:"targets"`
	Remote  []string  `json:"remote,omitempty"` // the targets that are remote addresses
	Created time.Time `json:"created"`
}

// isRemote reports whether target is one of rec's remote targets.
func (rec aliasRecord) isRemote(target string) bool {
	for _, r := range rec.Remote {
		if Key(r) == Key(target) {
			return true
		}
	}
	return false
}

// decodeAliasRecord reads the aliases bucket's value for key k.
func decodeAliasRecord(k, v []byte) (aliasRecord, error) {
	var rec aliasRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return aliasRecord{}, fmt.Errorf("alias record %q: %w", k, err)
	}
	if rec.Address == "" || Key(rec.Address) != string(k) {
		return aliasRecord{}, fmt.Errorf("alias record %q: address %q does not match its key: corrupt", k, rec.Address)
	}
	if len(rec.Targets) == 0 {
		return aliasRecord{}, fmt.Errorf("alias record %q: no targets: corrupt", k)
	}
	for _, t := range rec.Targets {
		if _, err := CanonicalAddress(t); err != nil {
			return aliasRecord{}, fmt.Errorf("alias record %q: target %q: corrupt", k, t)
		}
	}
	return rec, nil
}

// CanonicalAlias validates an alias: local@domain as CanonicalAddress has
// it, or @domain for a catch-all (domain lower-cased).
func CanonicalAlias(alias string) (string, error) {
	if rest, ok := strings.CutPrefix(alias, "@"); ok {
		canon, err := CanonicalAddress("x@" + rest)
		if err != nil {
			return "", fmt.Errorf("catch-all %q: want @domain", alias)
		}
		return canon[1:], nil
	}
	return CanonicalAddress(alias)
}

// Domain returns the domain of an address or catch-all.
func Domain(addr string) string { return addr[strings.LastIndexByte(addr, '@')+1:] }

// maxAliasDepth bounds expansion: the store refuses loops, this only keeps
// a damaged file from sending delivery round in circles.
const maxAliasDepth = 32

// AddAlias creates alias with its targets. It refuses an alias that is a
// user's address (ErrAliasShadowsUser) or already an alias
// (ErrAliasExists), a target that is neither a user nor an alias
// (ErrNoTarget), and one that would make the alias reach itself
// (ErrAliasLoop). Targets are plain addresses: no catch-all.
func (s *Store) AddAlias(alias string, targets []string) (Alias, error) {
	return s.AddAliasRemote(alias, targets, nil)
}

// AddAliasRemote is AddAlias with remote targets: those remote reports
// true for (the caller knows the local domains) are forwarded, not looked
// up. nil means none is remote.
func (s *Store) AddAliasRemote(alias string, targets []string, remote func(target string) bool) (Alias, error) {
	canon, err := CanonicalAlias(alias)
	if err != nil {
		return Alias{}, fmt.Errorf("%w: %w", ErrBadAlias, err)
	}
	if len(targets) == 0 {
		return Alias{}, fmt.Errorf("%w: %s: no targets", ErrBadAlias, canon)
	}
	var ts, rs []string
	seen := map[string]bool{}
	for _, t := range targets {
		ct, err := CanonicalAddress(t)
		if err != nil {
			return Alias{}, fmt.Errorf("%w: target: %w", ErrBadAlias, err)
		}
		if !seen[Key(ct)] {
			seen[Key(ct)] = true
			ts = append(ts, ct)
			if remote != nil && remote(ct) {
				rs = append(rs, ct)
			}
		}
	}
	rec := aliasRecord{Address: canon, Targets: ts, Remote: rs, Created: time.Now().UTC()}
	b, _ := json.Marshal(rec)
	key := []byte(Key(canon))
	err = s.update(func(tx *bolt.Tx) error {
		aliases := tx.Bucket(bucketAliases)
		users := tx.Bucket(bucketUsers)
		if users.Get(key) != nil {
			return fmt.Errorf("alias %s: %w", canon, ErrAliasShadowsUser)
		}
		if aliases.Get(key) != nil {
			return fmt.Errorf("alias %s: %w", canon, ErrAliasExists)
		}
		for _, t := range ts {
			tk := []byte(Key(t))
			if rec.isRemote(t) {
				continue
			}
			if users.Get(tk) == nil && aliases.Get(tk) == nil && !bytesEqual(tk, key) {
				return fmt.Errorf("alias %s: %s: %w", canon, t, ErrNoTarget)
			}
		}
		// The aliases already stored have no loop, so a loop the new one
		// makes runs through it: look for it among what its targets reach.
		if path := reachPath(aliases, rec.localTargets(), string(key), nil, 0); path != nil {
			return fmt.Errorf("alias %s: %w: %s -> %s", canon, ErrAliasLoop, canon, strings.Join(path, " -> "))
		}
		return aliases.Put(key, b)
	})
	if err != nil {
		return Alias{}, err
	}
	return Alias(rec), nil
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// reachPath returns the chain of targets from targets to the alias keyed
// want, or nil when none reaches it.
func reachPath(aliases *bolt.Bucket, targets []string, want string, path []string, depth int) []string {
	if depth > maxAliasDepth {
		return nil
	}
	for _, t := range targets {
		p := append(append([]string(nil), path...), t)
		if Key(t) == want {
			return p
		}
		v := aliases.Get([]byte(Key(t)))
		if v == nil {
			continue
		}
		rec, err := decodeAliasRecord([]byte(Key(t)), v)
		if err != nil {
			continue
		}
		if r := reachPath(aliases, rec.localTargets(), want, p, depth+1); r != nil {
			return r
		}
	}
	return nil
}

// pointingTo returns the aliases that name key among their targets.
func pointingTo(tx *bolt.Tx, key string) ([]string, error) {
	var out []string
	err := tx.Bucket(bucketAliases).ForEach(func(k, v []byte) error {
		rec, err := decodeAliasRecord(k, v)
		if err != nil {
			return err
		}
		for _, t := range rec.Targets {
			if Key(t) == key {
				out = append(out, rec.Address)
				break
			}
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// DeleteAlias removes an alias; one that other aliases point to is
// refused (ErrAliasInUse), naming them.
func (s *Store) DeleteAlias(alias string) error {
	key := Key(alias)
	return s.update(func(tx *bolt.Tx) error {
		aliases := tx.Bucket(bucketAliases)
		if aliases.Get([]byte(key)) == nil {
			return fmt.Errorf("%s: %w", alias, ErrNoAlias)
		}
		users, err := pointingTo(tx, key)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return fmt.Errorf("alias %s: %w: %s", alias, ErrAliasInUse, strings.Join(users, ", "))
		}
		return aliases.Delete([]byte(key))
	})
}

// Aliases lists every alias, sorted by address.
func (s *Store) Aliases() ([]Alias, error) {
	var out []Alias
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAliases).ForEach(func(k, v []byte) error {
			rec, err := decodeAliasRecord(k, v)
			if err != nil {
				return err
			}
			out = append(out, Alias(rec))
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, err
}

// localTargets are rec's targets that are users or aliases.
func (rec aliasRecord) localTargets() []string {
	if len(rec.Remote) == 0 {
		return rec.Targets
	}
	var out []string
	for _, t := range rec.Targets {
		if !rec.isRemote(t) {
			out = append(out, t)
		}
	}
	return out
}

// ExpandAlias returns the canonical addresses of the mailboxes alias
// reaches, each once, in the order of its targets (depth first); or
// ErrNoAlias when addr is no alias. A catch-all is asked for as @domain.
// Remote targets are left out (see Expand).
func (s *Store) ExpandAlias(addr string) ([]string, error) {
	x, err := s.Expand(addr)
	return x.Mailboxes, err
}

// Expansion is what an alias reaches: local mailboxes and remote
// addresses, each once, in the order of the targets (depth first).
type Expansion struct {
	Mailboxes []string
	Remote    []string
}

// Expand returns everything alias addr reaches, through other aliases
// too, or ErrNoAlias when addr is no alias.
func (s *Store) Expand(addr string) (Expansion, error) {
	var out Expansion
	err := s.view(func(tx *bolt.Tx) error {
		aliases := tx.Bucket(bucketAliases)
		key := []byte(Key(addr))
		v := aliases.Get(key)
		if v == nil {
			return fmt.Errorf("%s: %w", addr, ErrNoAlias)
		}
		rec, err := decodeAliasRecord(key, v)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		return expand(tx, rec, seen, &out, 0)
	})
	if err != nil {
		return Expansion{}, err
	}
	return out, nil
}

func expand(tx *bolt.Tx, from aliasRecord, seen map[string]bool, out *Expansion, depth int) error {
	if depth > maxAliasDepth {
		return fmt.Errorf("alias expansion deeper than %d: corrupt", maxAliasDepth)
	}
	for _, t := range from.Targets {
		k := []byte(Key(t))
		if seen[string(k)] {
			continue
		}
		seen[string(k)] = true
		if from.isRemote(t) {
			out.Remote = append(out.Remote, t)
			continue
		}
		if v := tx.Bucket(bucketUsers).Get(k); v != nil {
			rec, err := decodeUserRecord(k, v)
			if err != nil {
				return err
			}
			out.Mailboxes = append(out.Mailboxes, rec.Address)
			continue
		}
		v := tx.Bucket(bucketAliases).Get(k)
		if v == nil {
			continue // cannot happen: the store refuses such targets
		}
		rec, err := decodeAliasRecord(k, v)
		if err != nil {
			return err
		}
		if err := expand(tx, rec, seen, out, depth+1); err != nil {
			return err
		}
	}
	return nil
}
