package store_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"minimail/store"
)

func TestCertCacheKeepsEntriesAcrossOpenAndBackup(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CertCacheGet("mx.example.org"); !errors.Is(err, store.ErrNoCert) {
		t.Fatalf("empty cache: %v, want ErrNoCert", err)
	}
	pem := []byte("-----BEGIN EC PRIVATE KEY-----\n...\n")
	for _, k := range []string{"acme_account+key", "mx.example.org", "gone"} {
		if err := s.CertCachePut(k, pem); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CertCacheDelete("gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.CertCacheDelete("never there"); err != nil {
		t.Errorf("deleting a missing key: %v", err)
	}
	if err := s.CertCachePut("", pem); err == nil {
		t.Error("an empty key was stored")
	}
	backup := filepath.Join(t.TempDir(), store.FileName)
	if err := s.Backup(backup); err != nil {
		t.Fatal(err)
	}
	s.Close()

	for _, d := range []string{dir, filepath.Dir(backup)} {
		s := openStore(t, d)
		got, err := s.CertCacheGet("mx.example.org")
		if err != nil || !bytes.Equal(got, pem) {
			t.Errorf("%s: %q, %v", d, got, err)
		}
		keys, err := s.CertCacheKeys()
		if err != nil || len(keys) != 2 || keys[0] != "acme_account+key" || keys[1] != "mx.example.org" {
			t.Errorf("%s: keys %q, %v", d, keys, err)
		}
	}
}
