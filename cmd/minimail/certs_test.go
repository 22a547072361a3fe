package main

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// servedSerial connects to l and returns the certificate serial it shows.
func servedSerial(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func writePair(t *testing.T, dir, host string, mtime time.Time) (serial string) {
	t.Helper()
	certPEM, keyPEM, err := selfSigned(host, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"cert.pem": certPEM, "key.pem": keyPEM} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	return leaf.SerialNumber.String()
}

func TestCertificateReloadReachesNewConnections(t *testing.T) {
	dir := t.TempDir()
	first := writePair(t, dir, "mx.example.test", time.Now().Add(-time.Hour))
	var logs bytes.Buffer
	r, err := newCertReloader(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), certChecks{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", r.tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	if got := servedSerial(t, l.Addr().String()); got != first {
		t.Fatalf("serial %s, want %s", got, first)
	}

	// certbot renews: new files, new mtime; the poll picks them up.
	second := writePair(t, dir, "mx.example.test", time.Now())
	r.reloadIfChanged()
	if got := servedSerial(t, l.Addr().String()); got != second {
		t.Fatalf("after renewal serial %s, want %s", got, second)
	}

	// A botched renewal: the old pair stays in service, the error is logged.
	os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("garbage"), 0o600)
	r.Reload()
	if got := servedSerial(t, l.Addr().String()); got != second {
		t.Fatalf("after a bad renewal serial %s, want the previous %s", got, second)
	}
	if !strings.Contains(logs.String(), "keeping the previous certificate") {
		t.Errorf("bad renewal not logged: %s", logs.String())
	}
}

func TestTLSConfigRefusesOldVersionsAndTickets(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, "mx.example.test", time.Now())
	r, err := newCertReloader(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), certChecks{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cfg := r.tlsConfig()
	if !cfg.SessionTicketsDisabled || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("tickets disabled %v, min version %x", cfg.SessionTicketsDisabled, cfg.MinVersion)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	_, err = tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}

func TestMissingCertificateIsAStartupErrorNamingTheKey(t *testing.T) {
	p := writeConfig(t, minimalConfig+"[listen]\nsubmissions = \"127.0.0.1:0\"\n[tls]\ncert = \"missing.pem\"\nkey = \"missing-key.pem\"\n")
	os.Mkdir(filepath.Join(filepath.Dir(p), "data"), 0o700)
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = startServer(cfg, slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "tls.cert") || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("err = %v, want one naming tls.cert and the file", err)
	}
	// Nothing kept running: the store is free.
	st, err := openStoreForTest(cfg.DataDir)
	if err != nil {
		t.Fatalf("store still held after the failed start: %v", err)
	}
	st.Close()
}
