package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"minimail/mta/dnstest"
	"minimail/mta/web"
	"minimail/store"
)

// pebble is a Pebble ACME server (RFC 8555, Let's Encrypt's test CA)
// started by the test on loopback.
type pebble struct {
	Directory string // the directory URL
	CAFile    string // PEM of the certificate Pebble's own HTTPS serves
	root      *x509.CertPool
	mgmt      string
	cmd       *exec.Cmd
	logs      *syncBuffer
	client    *http.Client
}

// startPebble runs pebble with a config of its own, resolving through
// dnsAddr and validating TLS-ALPN-01 on tlsPort, its certificates valid for
// validity. It skips the test when pebble is not installed, unless
// MINIMAIL_REQUIRE_CLIENTS is set (CI installs the Debian package).
func startPebble(t *testing.T, dnsAddr string, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	bin, err := exec.LookPath("pebble")
	if err != nil {
		if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
			t.Fatal("pebble not installed (apt-get install pebble)")
		}
		t.Skip("pebble not installed")
	}
	dir := t.TempDir()
	p := &pebble{CAFile: filepath.Join(dir, "pebble-https.pem"), logs: &syncBuffer{}}
	keyFile := filepath.Join(dir, "pebble-https.key")
	writeLoopbackPair(t, p.CAFile, keyFile)

	listen, mgmt := freePort(t), freePort(t)
	_, httpPort, _ := net.SplitHostPort(freePort(t))
	tmpl, err := template.ParseFiles(filepath.Join("testdata", "pebble-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	if err := tmpl.Execute(&conf, map[string]any{
		"Listen": listen, "Management": mgmt, "Cert": p.CAFile, "Key": keyFile,
		"HTTPPort": httpPort, "TLSPort": tlsPort, "ValiditySeconds": int(validity / time.Second),
	}); err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(dir, "pebble-config.json")
	os.WriteFile(confFile, []byte(conf.String()), 0o600)

	p.cmd = exec.Command(bin, "-config", confFile, "-dnsserver", dnsAddr)
	// Real validation: no PEBBLE_VA_ALWAYS_VALID from the environment.
	// No sleeping before validating, and no nonces refused at random.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble:\n%s", p.logs.String())
		}
	})
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(p.CAFile)
	pool.AppendCertsFromPEM(pem)
	p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	p.Directory, p.mgmt = "https://"+listen+"/dir", "https://"+mgmt
	waitLong(t, "pebble to answer", func() bool {
		resp, err := p.client.Get(p.Directory)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// The root Pebble made at its start, which its certificates chain to.
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	p.root = x509.NewCertPool()
	if !p.root.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble's root: %q", rootPEM)
	}
	return p
}

func (p *pebble) stop() {
	if p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// writeLoopbackPair writes a self-signed certificate for 127.0.0.1, the
// one Pebble's HTTPS serves and acme.ca trusts.
func writeLoopbackPair(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebble on loopback"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

// waitLong polls cond; the two minutes are a hang guard for work a real
// CA does (validation over TLS, issuance), not a measure of speed.
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// acmeSite is a site for example.test whose certificates come from dir
// (acme.ca trusting caFile), with submissions, pop3s and https (on
// httpsAddr) on loopback, and every name resolving to 127.0.0.1 in the
// returned DNS server.
func acmeSite(t *testing.T, httpsAddr, directory, caFile string) *Config {
	t.Helper()
	return webSite(t, map[string]string{"submissions": "127.0.0.1:0", "pop3s": "127.0.0.1:0", "https": httpsAddr}, false,
		fmt.Sprintf("[acme]\nemail = \"postmaster@example.test\"\ndirectory = %q\nca = %q\n", directory, caFile))
}

// acmeDNS answers every name a certificate is asked for with 127.0.0.1.
func acmeDNS(t *testing.T) *dnstest.Server {
	var recs []string
	for _, n := range []string{"mx", "autoconfig", "autodiscover", "mta-sts"} {
		recs = append(recs, n+".example.test. 60 IN A 127.0.0.1")
	}
	return dnstest.Start(t, recs...)
}

// servedCert is the leaf a TLS listener of srv presents for name, and
// whether it verifies against roots.
func servedCert(t *testing.T, addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err = chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	return chain[0], err
}

// TestACMEWithPebble: certificates for every name, validated by Pebble
// over TLS-ALPN-01 on listen.https (the only challenge that can succeed:
// autocert answers no http-01 without its handler, and nothing listens on
// Pebble's httpPort), served on submissions, pop3s and https, and kept
// across a restart.
func TestACMEWithPebble(t *testing.T) {
	dns := acmeDNS(t)
	httpsAddr := freePort(t)
	_, port, _ := net.SplitHostPort(httpsAddr)
	tlsPort, _ := strconv.Atoi(port)
	ca := startPebble(t, dns.Addr, tlsPort, 90*24*time.Hour)
	cfg := acmeSite(t, httpsAddr, ca.Directory, ca.CAFile)
	srv, logs := serveSite(t, cfg)

	// Until the CA has issued, the self-signed fallback; then the CA's.
	waitLong(t, "a certificate for mx.example.test on submissions", func() bool {
		_, err := servedCert(t, srv.addrs["listen.submissions"], "mx.example.test", ca.root)
		return err == nil
	})
	leaf, _ := servedCert(t, srv.addrs["listen.submissions"], "mx.example.test", ca.root)
	serial := leaf.SerialNumber.String()
	if got, err := servedCert(t, srv.addrs["listen.pop3s"], "mx.example.test", ca.root); err != nil || got.SerialNumber.String() != serial {
		t.Errorf("pop3s serves %v (%v), want the certificate of submissions", got.SerialNumber, err)
	}
	// A client without SNI (many SMTP senders) gets the hostname's.
	if got, _ := servedCert(t, srv.addrs["listen.pop3s"], "", ca.root); got.SerialNumber.String() != serial {
		t.Errorf("without SNI: serial %v, want the hostname's %s", got.SerialNumber, serial)
	}
	waitLong(t, "a certificate for autoconfig.example.test on https", func() bool {
		_, err := servedCert(t, srv.addrs["listen.https"], "autoconfig.example.test", ca.root)
		return err == nil
	})
	// Thunderbird's fetch, checking the certificate as it does.
	c := httpsClient(srv.addrs["listen.https"], &tls.Config{RootCAs: ca.root})
	code, body := fetch(t, c, "https://autoconfig.example.test/mail/config-v1.1.xml?emailaddress=a%40example.test")
	var cc web.ClientConfig
	if err := xml.Unmarshal([]byte(body), &cc); code != 200 || err != nil || len(cc.Provider.Incoming) != 1 {
		t.Fatalf("autoconfig over the CA's certificate: %d %v %s", code, err, body)
	}
	for _, n := range []string{"autodiscover.example.test", "mta-sts.example.test"} {
		waitLong(t, "a certificate for "+n, func() bool {
			_, err := servedCert(t, srv.addrs["listen.https"], n, ca.root)
			return err == nil
		})
	}
	if !strings.Contains(logs.String(), "self-signed") || !strings.Contains(logs.String(), `msg="tls certificate obtained"`) {
		t.Errorf("the log does not warn about the fallback, or say what was obtained:\n%s", logs.String())
	}

	t.Run("a restart serves the certificates from the store, the CA gone", func(t *testing.T) {
		if err := srv.stop(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		ca.stop()
		srv2, logs2 := serveSite(t, cfg)
		got, err := servedCert(t, srv2.addrs["listen.submissions"], "mx.example.test", ca.root)
		if err != nil || got.SerialNumber.String() != serial {
			t.Fatalf("after restart: serial %v (%v), want %s at once\n%s", got.SerialNumber, err, serial, logs2.String())
		}
		if _, err := servedCert(t, srv2.addrs["listen.https"], "mta-sts.example.test", ca.root); err != nil {
			t.Errorf("mta-sts name after restart: %v", err)
		}
		if strings.Contains(logs2.String(), "acme issuance failed") {
			t.Errorf("a restart asked the CA again:\n%s", logs2.String())
		}
		var status strings.Builder
		if err := printStatus(&status, cfg, time.Now()); err != nil {
			t.Fatal(err)
		}
		for _, n := range acmeNames(cfg) {
			if !strings.Contains(status.String(), "certificate: acme for "+n+", until ") {
				t.Errorf("status does not show the certificate of %s:\n%s", n, status.String())
			}
		}
	})
}

// TestACMERenewsAShortLivedCertificate: Pebble issues certificates valid for
// 30 seconds; autocert renews a third of the lifetime before the end, and
// the listeners serve the new one without a restart.
func TestACMERenewsAShortLivedCertificate(t *testing.T) {
	dns := acmeDNS(t)
	httpsAddr := freePort(t)
	_, port, _ := net.SplitHostPort(httpsAddr)
	tlsPort, _ := strconv.Atoi(port)
	ca := startPebble(t, dns.Addr, tlsPort, 30*time.Second)
	srv, _ := serveSite(t, acmeSite(t, httpsAddr, ca.Directory, ca.CAFile))
	var first *x509.Certificate
	waitLong(t, "the first certificate", func() bool {
		var err error
		first, err = servedCert(t, srv.addrs["listen.submissions"], "mx.example.test", ca.root)
		return err == nil
	})
	if life := first.NotAfter.Sub(first.NotBefore); life > time.Minute {
		t.Fatalf("pebble issued a certificate for %s: certificateValidityPeriod was not taken", life)
	}
	waitLong(t, "a renewed certificate", func() bool {
		got, err := servedCert(t, srv.addrs["listen.submissions"], "mx.example.test", ca.root)
		return err == nil && got.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if got, err := servedCert(t, srv.addrs["listen.pop3s"], "mx.example.test", ca.root); err != nil || got.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Errorf("pop3s: %v (%v), want the renewed certificate", got.SerialNumber, err)
	}
}

// TestACMEFailingCALeavesTheListenersUp: a directory nobody answers at;
// every listener serves, with the self-signed fallback, and the log says
// why there is no certificate.
func TestACMEFailingCALeavesTheListenersUp(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	writeLoopbackPair(t, caFile, caFile+".key")
	cfg := acmeSite(t, "127.0.0.1:0", "https://"+freePort(t)+"/dir", caFile)
	srv, logs := serveSite(t, cfg)
	waitLong(t, "the issuance failure in the log", func() bool {
		return strings.Contains(logs.String(), "acme issuance failed")
	})
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "acme issuance failed") {
			line = l
			break
		}
	}
	if !strings.Contains(line, "name=mx.example.test") || !strings.Contains(line, "connection refused") || !strings.Contains(line, "retry_in=5m0s") {
		t.Errorf("the failure line does not name the name, the error and the retry: %s", line)
	}
	for _, key := range []string{"listen.submissions", "listen.pop3s", "listen.https"} {
		leaf, _ := servedCert(t, srv.addrs[key], "mx.example.test", x509.NewCertPool())
		if !isSelfSigned(leaf) || leaf.VerifyHostname("autoconfig.example.test") != nil {
			t.Errorf("%s serves %s, want the self-signed fallback for every name", key, leaf.Subject)
		}
	}
	c := httpsClient(srv.addrs["listen.https"], &tls.Config{InsecureSkipVerify: true})
	if code, body := fetch(t, c, "https://example.test/.well-known/mta-sts.txt"); code != 200 || !strings.HasPrefix(body, "version: STSv1\r\n") {
		t.Errorf("https while the CA fails: %d %q", code, body)
	}
	var status strings.Builder
	printStatus(&status, cfg, time.Now())
	if !strings.Contains(status.String(), "certificate: acme for mx.example.test: none yet") {
		t.Errorf("status does not say the certificate is missing:\n%s", status.String())
	}
}

// TestACMERetriesWithBackoffNotOnHandshakes: a CA that refuses every
// request is asked again after a doubling wait, capped, and the problem it
// answers is logged; client handshakes in between ask it nothing.
func TestACMERetriesWithBackoffNotOnHandshakes(t *testing.T) {
	var requests atomic.Int64
	ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"type":"urn:ietf:params:acme:error:unauthorized","detail":"test CA refuses everyone"}`)
	}))
	defer ca.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}), 0o600)
	cfg := acmeSite(t, "127.0.0.1:0", ca.URL+"/dir", caFile)

	logs := &syncBuffer{}
	a, err := newACME(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a.retryMin, a.retryMax = 10*time.Millisecond, 40*time.Millisecond
	st, err := store.Open(cfg.DataDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a.start(st)
	defer a.shutdown()

	hostLines := func() []string {
		var waits []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "acme issuance failed") && strings.Contains(l, "name=mx.example.test ") {
				_, w, _ := strings.Cut(l, "retry_in=")
				waits = append(waits, w)
			}
		}
		return waits
	}
	waitLong(t, "four rounds of tries", func() bool { return len(hostLines()) >= 4 })
	if got := strings.Join(hostLines()[:4], ","); got != "10ms,20ms,40ms,40ms" {
		t.Errorf("waits after each failed round: %s, want 10ms,20ms,40ms,40ms", got)
	}
	if !strings.Contains(logs.String(), "urn:ietf:params:acme:error:unauthorized: test CA refuses everyone") {
		t.Errorf("the CA's problem is not in the log:\n%s", logs.String())
	}

	// Handshakes while no certificate is there get the fallback at once,
	// and reach no CA: only the background rounds do. (A manager of its
	// own, whose autocert has no failed state that would hold requests
	// back for a minute.)
	b, err := newACME(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.cache.st.Store(st)
	before := requests.Load()
	for range 50 {
		for _, n := range append(acmeNames(cfg), "other.example", "") {
			cert, err := b.getCertificate(&tls.ClientHelloInfo{ServerName: n})
			if err != nil || cert != b.fallback {
				t.Fatalf("handshake for %q: %v, want the fallback", n, err)
			}
		}
	}
	if after := requests.Load(); after != before {
		t.Errorf("handshakes sent %d requests to the CA", after-before)
	}
}
