package store

import (
	"crypto/rand"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keySRSSecret is the meta key of the SRS secret: drawn once, kept for the
// life of the file (and its backups), so that a bounce to an address
// forwarded before a restart or a restore still reverses.
var keySRSSecret = []byte("srs_secret")

// srsSecretBytes is 256 bits: far more than the HMAC needs.
const srsSecretBytes = 32

func ensureSRSSecret(meta *bolt.Bucket) error {
	if len(meta.Get(keySRSSecret)) > 0 {
		return nil
	}
	b := make([]byte, srsSecretBytes)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("srs secret: %w", err)
	}
	return meta.Put(keySRSSecret, b)
}

// SRSSecret returns the key of the Sender Rewriting Scheme (minimail/mta/srs).
func (s *Store) SRSSecret() ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keySRSSecret)
		if len(v) == 0 {
			return fmt.Errorf("srs secret missing from meta: corrupt")
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}
