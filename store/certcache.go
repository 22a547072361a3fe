package store

import (
	"errors"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// The certs bucket holds what the ACME client keeps between runs: its
// account key and each certificate with its private key, PEM-encoded, under
// the client's own key names. Like the aliases bucket it came after schema
// 2 and needs no migration: initSchema creates it when missing at every
// read-write Open, an older file has no certificates yet, and backup and
// compaction copy it with the rest, so a restored backup serves the same
// certificates without asking the CA again. The file is mode 0600, as the
// private keys need.

var bucketCerts = []byte("certs")

// ErrNoCert means the certificate cache has nothing under the key.
var ErrNoCert = errors.New("not in the certificate cache")

// maxCertKey bounds a cache key (bbolt allows 32 KiB); the ACME client's
// keys are domain names with a suffix.
const maxCertKey = 512

// CertCacheGet returns a copy of the value under key, or ErrNoCert.
func (s *Store) CertCacheGet(key string) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCerts)
		if b == nil { // a read-only open of an older file
			return ErrNoCert
		}
		v := b.Get([]byte(key))
		if v == nil {
			return ErrNoCert
		}
		out = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	if err != nil && !errors.Is(err, ErrNoCert) {
		return nil, fmt.Errorf("certificate cache %q: %w", key, err)
	}
	return out, err
}

// CertCachePut stores data under key and returns once it is on disk.
func (s *Store) CertCachePut(key string, data []byte) error {
	if key == "" || len(key) > maxCertKey {
		return fmt.Errorf("certificate cache: bad key %q", key)
	}
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCerts).Put([]byte(key), data)
	})
}

// CertCacheDelete removes key; a missing key is no error.
func (s *Store) CertCacheDelete(key string) error {
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCerts).Delete([]byte(key))
	})
}

// CertCacheKeys lists the keys in the cache, sorted.
func (s *Store) CertCacheKeys() ([]string, error) {
	var keys []string
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCerts)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	sort.Strings(keys)
	return keys, err
}
