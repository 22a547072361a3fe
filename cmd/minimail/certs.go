package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// certReloader serves the certificate from [tls] cert/key and picks up a
// renewed pair (certbot replaces the files) without a restart: on SIGHUP and
// when the files' modification times change. A bad new pair is logged and
// the old one kept, so a botched renewal never takes TLS down. Each pair it
// loads is logged with its names and expiry, and held against certChecks.
type certReloader struct {
	certPath, keyPath string
	checks            certChecks
	log               *slog.Logger

	mu      sync.RWMutex
	cert    *tls.Certificate
	modTime time.Time // newest of the two files' mtimes at the last load
}

// certChecks is what a loaded certificate is held against; a certificate
// that fails one is still served, with a warning in the log.
type certChecks struct {
	// Hostname must be among the certificate's names: clients connect to
	// it and check the name (RFC 6125 section 6).
	Hostname string
	// Public are the listen keys of listeners not on loopback: a
	// self-signed certificate there is one that clients refuse.
	Public []string
	// Now is the clock for the expiry check; nil means time.Now.
	Now func() time.Time
}

// expiryWarning is how long before its end a certificate is warned about:
// certbot renews 30 days ahead, so a certificate this close to its end has
// missed at least two weeks of renewals.
const expiryWarning = 14 * 24 * time.Hour

func newCertReloader(certPath, keyPath string, checks certChecks, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certPath: certPath, keyPath: keyPath, checks: checks, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) filesModTime() (time.Time, error) {
	var newest time.Time
	for _, p := range []string{r.certPath, r.keyPath} {
		st, err := os.Stat(p)
		if err != nil {
			return time.Time{}, err
		}
		if st.ModTime().After(newest) {
			newest = st.ModTime()
		}
	}
	return newest, nil
}

// load reads the pair, and logs and checks the certificate it holds.
func (r *certReloader) load() error {
	mt, err := r.filesModTime()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certPath, r.keyPath)
	if err != nil {
		return fmt.Errorf("tls.cert %s / tls.key %s: %w", r.certPath, r.keyPath, err)
	}
	leaf := cert.Leaf
	if leaf == nil { // GODEBUG=x509keypairleaf=0
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls.cert %s: %w", r.certPath, err)
		}
	}
	r.mu.Lock()
	r.cert, r.modTime = &cert, mt
	r.mu.Unlock()
	r.report(leaf)
	return nil
}

// report logs the certificate just loaded and warns about each check it
// fails.
func (r *certReloader) report(leaf *x509.Certificate) {
	r.checks.report(r.log, "tls certificate loaded", []any{"cert", r.certPath}, leaf)
}

// report logs leaf with msg and about, and warns about each check it fails.
func (c certChecks) report(log *slog.Logger, msg string, about []any, leaf *x509.Certificate) {
	names := strings.Join(certNames(leaf), ",")
	notAfter := leaf.NotAfter.UTC().Format(time.RFC3339)
	about = append(slices.Clip(about), "names", names, "not_after", notAfter)
	log.Info(msg, append(about, "subject", leaf.Subject.String(), "issuer", leaf.Issuer.String())...)
	if c.Hostname != "" && leaf.VerifyHostname(c.Hostname) != nil {
		log.Warn("tls certificate does not name the hostname: clients connecting to it refuse the certificate",
			append(about, "hostname", c.Hostname)...)
	}
	if len(c.Public) > 0 && isSelfSigned(leaf) {
		log.Warn("tls certificate is self-signed, and listeners not on loopback serve it: mail clients and other servers checking it refuse it",
			append(about, "listeners", strings.Join(c.Public, ","))...)
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	switch left := leaf.NotAfter.Sub(now()); {
	case left <= 0:
		log.Warn("tls certificate has expired", about...)
	case left < expiryWarning:
		log.Warn("tls certificate expires soon: renew it", append(about, "days_left", int(left.Hours()/24))...)
	}
	if now().Before(leaf.NotBefore) {
		log.Warn("tls certificate is not valid yet", append(about, "not_before", leaf.NotBefore.UTC().Format(time.RFC3339))...)
	}
}

// certNames are the names a certificate is valid for: its subject
// alternative names. Clients no longer take the subject's common name for
// one (RFC 6125 section 6.4.4 left it to the client; Go and the browsers
// ignore it).
func certNames(leaf *x509.Certificate) []string {
	names := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// isSelfSigned reports whether leaf is signed by its own key.
func isSelfSigned(leaf *x509.Certificate) bool {
	return bytes.Equal(leaf.RawIssuer, leaf.RawSubject) &&
		leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil
}

// Reload loads the files again, keeping the current pair if they are bad.
func (r *certReloader) Reload() {
	if err := r.load(); err != nil {
		r.log.Error("tls reload failed, keeping the previous certificate", "err", err)
	}
}

// reloadIfChanged reloads when a file's modification time moved.
func (r *certReloader) reloadIfChanged() {
	mt, err := r.filesModTime()
	r.mu.RLock()
	changed := err == nil && !mt.Equal(r.modTime)
	r.mu.RUnlock()
	if changed {
		r.Reload()
		// Remember the new mtime even if loading failed, so a bad file is
		// reported once, not every tick.
		r.mu.Lock()
		r.modTime = mt
		r.mu.Unlock()
	}
}

// watch polls the files until stop is closed.
func (r *certReloader) watch(every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			r.reloadIfChanged()
		case <-stop:
			return
		}
	}
}

// tlsConfig is the server config every TLS listener uses.
func (r *certReloader) tlsConfig() *tls.Config {
	return serverTLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		r.mu.RLock()
		defer r.mu.RUnlock()
		return r.cert, nil
	})
}

// serverTLSConfig is the config of every TLS listener, whichever source
// the certificates come from.
func serverTLSConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: get,
		// Microsoft's senders (Outlook.com, Exchange Online) fail STARTTLS
		// against servers that issue session tickets.
		SessionTicketsDisabled: true,
	}
}

// publicListeners are the listen keys whose address is not on loopback:
// all addresses (":25"), a non-loopback address, or a name, which may
// resolve to anything. Every listener offers the certificate (STARTTLS and
// STLS included).
func (c *Config) publicListeners() []string {
	var keys []string
	for _, lc := range c.listeners() {
		if lc.addr != "" && !onLoopback(lc.addr) {
			keys = append(keys, lc.key)
		}
	}
	return keys
}

func onLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	host, _, _ = strings.Cut(host, "%") // an IPv6 zone
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
