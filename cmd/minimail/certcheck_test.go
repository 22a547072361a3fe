package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCA signs the certificates of certSpec that are not self-signed.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test CA"},
		NotBefore:             testNow.Add(-24 * time.Hour),
		NotAfter:              testNow.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert, key}
}

// testNow is the clock of the certificate checks.
var testNow = time.Date(2025, 6, 2, 10, 0, 0, 0, time.UTC)

type certSpec struct {
	names      []string
	notAfter   time.Time
	selfSigned bool
}

// writeCert writes a certificate made to spec, signed by ca unless it is
// self-signed, and its key into dir, and returns their paths.
func writeCert(t *testing.T, dir string, ca testCA, spec certSpec) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: spec.names[0]},
		DNSNames:     spec.names,
		NotBefore:    testNow.Add(-30 * 24 * time.Hour),
		NotAfter:     spec.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	parent, signer := ca.cert, ca.key
	if spec.selfSigned {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for p, block := range map[string]*pem.Block{certPath: {Type: "CERTIFICATE", Bytes: der}, keyPath: {Type: "PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certPath, keyPath
}

// logLines returns the lines of a text log at level that contain msg.
func logLines(logs, level, msg string) []string {
	var found []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "level="+level+" ") && strings.Contains(l, msg) {
			found = append(found, l)
		}
	}
	return found
}

func TestCertificateChecksWarnAtLoad(t *testing.T) {
	ca := newTestCA(t)
	inYear, inTenDays := testNow.Add(365*24*time.Hour), testNow.Add(10*24*time.Hour)
	public := []string{"listen.smtp", "listen.submission"}
	tests := []struct {
		name   string
		spec   certSpec
		public []string
		want   []string // warnings, each with the keys it must carry; none for a good certificate
	}{
		{"a CA's certificate for the hostname, far from its end", certSpec{[]string{"mx.example.test"}, inYear, false}, public, nil},
		{"the hostname among other names", certSpec{[]string{"example.test", "mx.example.test"}, inYear, false}, public, nil},
		{"names without the hostname", certSpec{[]string{"www.example.test", "example.test"}, inYear, false}, public,
			[]string{`msg="tls certificate does not name the hostname`, `names=www.example.test,example.test`, `hostname=mx.example.test`, `not_after=2026-06-02T10:00:00Z`}},
		{"self-signed on listeners not on loopback", certSpec{[]string{"mx.example.test"}, inYear, true}, public,
			[]string{`msg="tls certificate is self-signed`, `listeners=listen.smtp,listen.submission`, `names=mx.example.test`, `not_after=2026-06-02T10:00:00Z`}},
		{"self-signed on loopback only", certSpec{[]string{"mx.example.test"}, inYear, true}, nil, nil},
		{"ten days from its end", certSpec{[]string{"mx.example.test"}, inTenDays, false}, public,
			[]string{`msg="tls certificate expires soon`, `days_left=10`, `not_after=2025-06-12T10:00:00Z`, `names=mx.example.test`}},
		{"expired", certSpec{[]string{"mx.example.test"}, testNow.Add(-time.Hour), false}, public,
			[]string{`msg="tls certificate has expired"`, `not_after=2025-06-02T09:00:00Z`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			certPath, keyPath := writeCert(t, t.TempDir(), ca, tc.spec)
			var logs bytes.Buffer
			checks := certChecks{Hostname: "mx.example.test", Public: tc.public, Now: func() time.Time { return testNow }}
			if _, err := newCertReloader(certPath, keyPath, checks, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
				t.Fatal(err)
			}
			loaded := logLines(logs.String(), "INFO", `msg="tls certificate loaded"`)
			if len(loaded) != 1 || !strings.Contains(loaded[0], "names="+strings.Join(tc.spec.names, ",")) ||
				!strings.Contains(loaded[0], "not_after="+tc.spec.notAfter.Format(time.RFC3339)) || !strings.Contains(loaded[0], `subject="CN=`+tc.spec.names[0]+`"`) {
				t.Errorf("load logged %q, want one line with the names, not_after and subject", loaded)
			}
			warnings := logLines(logs.String(), "WARN", "tls certificate")
			if len(tc.want) == 0 {
				if len(warnings) != 0 {
					t.Errorf("warned about a good certificate: %q", warnings)
				}
				return
			}
			if len(warnings) != 1 {
				t.Fatalf("warnings %q, want one", warnings)
			}
			for _, w := range tc.want {
				if !strings.Contains(warnings[0], w) {
					t.Errorf("warning %q lacks %q", warnings[0], w)
				}
			}
		})
	}
}

func TestCertificateChecksWarnOnReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certPath, keyPath := writeCert(t, dir, ca, certSpec{[]string{"mx.example.test"}, testNow.Add(90 * 24 * time.Hour), false})
	var logs syncBuffer
	checks := certChecks{Hostname: "mx.example.test", Public: []string{"listen.smtp"}, Now: func() time.Time { return testNow }}
	r, err := newCertReloader(certPath, keyPath, checks, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if w := logLines(logs.String(), "WARN", "tls certificate"); len(w) != 0 {
		t.Fatalf("warned at start: %q", w)
	}
	// A renewal that went wrong in a way TLS itself does not notice: the
	// new certificate is for another name, self-signed, and nearly over.
	writeCert(t, dir, ca, certSpec{[]string{"www.example.test"}, testNow.Add(2 * 24 * time.Hour), true})
	r.Reload()
	if n := len(logLines(logs.String(), "INFO", `msg="tls certificate loaded"`)); n != 2 {
		t.Errorf("%d load lines, want one at start and one at the reload:\n%s", n, logs.String())
	}
	for _, msg := range []string{"does not name the hostname", "is self-signed", "expires soon"} {
		if w := logLines(logs.String(), "WARN", msg); len(w) != 1 || !strings.Contains(w[0], "names=www.example.test") || !strings.Contains(w[0], "not_after=2025-06-04T10:00:00Z") {
			t.Errorf("reload: warnings %q about %q, want one with the names and not_after", w, msg)
		}
	}
}

func TestPublicListenersAreTheOnesNotOnLoopback(t *testing.T) {
	var c Config
	c.Listen.SMTP = ":25"
	c.Listen.Submission = "127.0.0.1:587"
	c.Listen.Submissions = "[::1]:465"
	c.Listen.POP3 = "localhost:110"
	c.Listen.POP3S = "192.0.2.7:995"
	got := strings.Join(c.publicListeners(), ",")
	if want := "listen.smtp,listen.pop3s"; got != want {
		t.Errorf("publicListeners = %s, want %s", got, want)
	}
}

// TestServeChecksTheCertificateAtStartAndOnSIGHUP: serve holds the
// certificate against the config's hostname and listeners, at start and
// on every reload.
func TestServeChecksTheCertificateAtStartAndOnSIGHUP(t *testing.T) {
	cfg := initSite(t) // a self-signed certificate for mx.example.test
	appendConfig(t, cfg, "", `hostname = "mx.example.test"`, `hostname = "mail.example.test"`)
	setListen(t, cfg, map[string]string{"smtp": freePort(t)})
	cmd, logs := startServe(t, cfg, 1)
	if w := logLines(logs.String(), "WARN", "does not name the hostname"); len(w) != 1 || !strings.Contains(w[0], "hostname=mail.example.test") || !strings.Contains(w[0], "names=mx.example.test") {
		t.Errorf("start: %q, want one warning naming the hostname and the certificate's names:\n%s", w, logs.String())
	}
	if w := logLines(logs.String(), "WARN", "self-signed"); len(w) != 0 {
		t.Errorf("warned about a self-signed certificate on loopback: %q", w)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reload's warning", func() bool {
		return len(logLines(logs.String(), "WARN", "does not name the hostname")) == 2
	})
}
