package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"minimail/mta/web"
	"minimail/store"
)

// acmeCerts gets and renews the certificates of every TLS listener over
// ACME (RFC 8555) with autocert, one certificate per name: hostname, and
// autoconfig., autodiscover. and mta-sts. of each local domain. The CA
// checks each name over TLS-ALPN-01 (RFC 8737) on listen.https.
//
// Certificates are asked for by one goroutine, in turn and with backoff,
// never by a client's handshake: a server that fails validation (DNS not
// yet pointing here, port 443 closed) then asks Let's Encrypt at most a
// few times an hour per name, within its failed-validation limit of five
// an hour, however many clients connect. Until a name has its certificate
// the handshakes for it get a self-signed one, with a warning in the log.
// autocert renews a certificate it holds a third of its lifetime before
// it ends (30 days for Let's Encrypt's 90), retrying failures every half
// hour to hour, and serves the new one without a restart.
type acmeCerts struct {
	m        *autocert.Manager
	hostname string
	names    []string // hostname first
	fallback *tls.Certificate
	log      *slog.Logger
	cache    *storeCertCache
	client   *closableTransport

	// retryMin and retryMax bound the wait before a failed name is asked
	// for again; checkEvery is how often held certificates are looked at
	// (renewals logged, expiry warned about).
	retryMin, retryMax, checkEvery time.Duration

	mu     sync.RWMutex
	serial map[string]string // name -> serial of the certificate served; absent: not obtained yet

	stop func()
	done chan struct{}
}

// acmeRetryMin is the first wait after a failed issuance, doubling up to
// acmeRetryMax: the first hour sees at most four tries per name.
const (
	acmeRetryMin = 5 * time.Minute
	acmeRetryMax = time.Hour
)

// acmeNames are the names certificates are asked for.
func acmeNames(cfg *Config) []string {
	names := []string{strings.ToLower(strings.TrimSuffix(cfg.Hostname, "."))}
	for _, d := range cfg.Domains {
		for _, p := range web.HostPrefixes {
			if n := p + d; !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names
}

// newACME sets up the manager; start begins asking once the store is open.
func newACME(cfg *Config, log *slog.Logger) (*acmeCerts, error) {
	httpClient, transport, err := acmeHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	names := acmeNames(cfg)
	fallback, err := fallbackCert(names)
	if err != nil {
		return nil, fmt.Errorf("acme: fallback certificate: %w", err)
	}
	a := &acmeCerts{
		hostname: names[0], names: names, fallback: fallback, log: log,
		cache: &storeCertCache{}, client: transport,
		retryMin: acmeRetryMin, retryMax: acmeRetryMax, checkEvery: time.Hour,
		serial: map[string]string{},
	}
	a.m = &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      a.cache,
		HostPolicy: autocert.HostWhitelist(names...),
		Email:      cfg.ACME.Email,
		Client: &acme.Client{
			DirectoryURL: cfg.ACME.Directory,
			HTTPClient:   httpClient,
			UserAgent:    "minimail/" + version(),
		},
	}
	return a, nil
}

// acmeHTTPClient talks to the directory, trusting acme.ca as well as the
// system's CAs when it is set.
func acmeHTTPClient(cfg *Config) (*http.Client, *closableTransport, error) {
	base := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.ACME.CA != "" {
		data, err := os.ReadFile(cfg.ACME.CA)
		if err != nil {
			return nil, nil, &configError{path: cfg.path, key: "acme.ca", msg: err.Error()}
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, nil, &configError{path: cfg.path, key: "acme.ca", msg: cfg.ACME.CA + ": no PEM certificate in it"}
		}
		base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	t := &closableTransport{base: base}
	return &http.Client{Transport: t, Timeout: time.Minute}, t, nil
}

// closableTransport refuses every request once closed: autocert's renewal
// timers outlive a stopped server (the Manager cannot stop them), and must
// not ask the CA for certificates nobody will serve.
type closableTransport struct {
	base   *http.Transport
	closed atomic.Bool
}

var errACMEStopped = errors.New("acme: server stopped")

func (t *closableTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.closed.Load() {
		return nil, errACMEStopped
	}
	return t.base.RoundTrip(r)
}

func (t *closableTransport) close() {
	t.closed.Store(true)
	t.base.CloseIdleConnections()
}

// storeCertCache is autocert's cache in the store: one file of state, and
// a backup holds the account key and the certificates.
type storeCertCache struct {
	st atomic.Pointer[store.Store]
}

func (c *storeCertCache) store() (*store.Store, error) {
	if st := c.st.Load(); st != nil {
		return st, nil
	}
	return nil, errors.New("acme: store not open")
}

func (c *storeCertCache) Get(_ context.Context, key string) ([]byte, error) {
	st, err := c.store()
	if err != nil {
		return nil, err
	}
	data, err := st.CertCacheGet(key)
	if errors.Is(err, store.ErrNoCert) {
		return nil, autocert.ErrCacheMiss
	}
	return data, err
}

func (c *storeCertCache) Put(_ context.Context, key string, data []byte) error {
	st, err := c.store()
	if err != nil {
		return err
	}
	return st.CertCachePut(key, data)
}

func (c *storeCertCache) Delete(_ context.Context, key string) error {
	st, err := c.store()
	if err != nil {
		return err
	}
	return st.CertCacheDelete(key)
}

// hello is the handshake a certificate is looked up with: ECDSA, the only
// kind asked for (every client of the last decade takes it), so that no
// client's handshake makes autocert ask the CA for an RSA one.
func hello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{ServerName: name, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
}

// getCertificate serves the mail listeners: the certificate of the name
// asked for when it is one of ours, else the hostname's; the self-signed
// fallback while that name has none yet.
func (a *acmeCerts) getCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.TrimSuffix(strings.ToLower(h.ServerName), ".")
	if !slices.Contains(a.names, name) {
		name = a.hostname
	}
	a.mu.RLock()
	_, ok := a.serial[name]
	a.mu.RUnlock()
	if !ok {
		return a.fallback, nil
	}
	cert, err := a.m.GetCertificate(hello(name))
	if err != nil {
		a.log.Error("acme certificate unavailable, serving the self-signed one", "name", name, "err", err)
		return a.fallback, nil
	}
	return cert, nil
}

// getHTTPSCertificate serves listen.https, which also answers the CA's
// TLS-ALPN-01 challenges: a handshake offering only acme-tls/1 gets the
// challenge certificate autocert made.
func (a *acmeCerts) getHTTPSCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(h.SupportedProtos) == 1 && h.SupportedProtos[0] == acme.ALPNProto {
		return a.m.GetCertificate(h)
	}
	return a.getCertificate(h)
}

// tlsConfigs are the configs of the mail listeners and of listen.https.
func (a *acmeCerts) tlsConfigs() (mail, https *tls.Config) {
	mail = serverTLSConfig(a.getCertificate)
	https = serverTLSConfig(a.getHTTPSCertificate)
	https.NextProtos = []string{"http/1.1", acme.ALPNProto}
	return mail, https
}

// start takes the certificates the store holds, then asks for the rest in
// the background until stopped.
func (a *acmeCerts) start(st *store.Store) {
	a.cache.st.Store(st)
	var missing []string
	for _, n := range a.names {
		if !a.cached(n) {
			missing = append(missing, n)
			continue
		}
		if err := a.obtain(n, "tls certificate loaded from the store"); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		a.log.Warn("tls certificates not obtained yet: serving a self-signed one for them until the CA issues theirs; clients checking certificates refuse it meanwhile",
			"names", strings.Join(missing, ","))
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stop, a.done = cancel, make(chan struct{})
	go func() {
		defer close(a.done)
		a.run(ctx, missing)
	}()
}

// cached reports whether the store holds a certificate for name that has
// not expired, which autocert then takes without asking the CA.
func (a *acmeCerts) cached(name string) bool {
	data, err := a.cache.Get(context.Background(), name)
	if err != nil {
		return false
	}
	leaf, err := firstCert(data)
	return err == nil && time.Now().Before(leaf.NotAfter)
}

// obtain gets name's certificate from autocert (its memory, the store, or
// the CA), and serves it from then on.
func (a *acmeCerts) obtain(name, msg string) error {
	cert, err := a.m.GetCertificate(hello(name))
	if err != nil {
		return err
	}
	a.noteCert(name, cert, msg)
	return nil
}

// noteCert records the certificate served for name and logs it when it is
// new.
func (a *acmeCerts) noteCert(name string, cert *tls.Certificate, msg string) {
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return
		}
	}
	serial := leaf.SerialNumber.String()
	a.mu.Lock()
	old, had := a.serial[name]
	a.serial[name] = serial
	a.mu.Unlock()
	if had && old == serial {
		// Still the same one: autocert renews a third of the lifetime
		// ahead, so one this close to its end means renewals fail.
		if left := time.Until(leaf.NotAfter); left < expiryWarning {
			a.log.Warn("tls certificate expires soon and has not been renewed: see the acme errors above", "name", name, "serial", serial,
				"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "days_left", int(left.Hours()/24))
		}
		return
	}
	if had {
		msg = "tls certificate renewed"
	}
	certChecks{Hostname: name}.report(a.log, msg, []any{"cert", "acme", "serial", serial}, leaf)
}

// run asks for the missing names, in turn, each failure doubling the wait
// before the next round; then looks at the held certificates every
// checkEvery until ctx ends.
func (a *acmeCerts) run(ctx context.Context, missing []string) {
	wait := a.retryMin
	for len(missing) > 0 {
		var failed []string
		for _, n := range missing {
			if ctx.Err() != nil {
				return
			}
			if err := a.obtain(n, "tls certificate obtained"); err != nil {
				failed = append(failed, n)
				a.log.Error("acme issuance failed, serving the self-signed certificate meanwhile", "name", n, "err", acmeDetail(err), "retry_in", wait)
			}
		}
		missing = failed
		if len(missing) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, a.retryMax)
	}
	t := time.NewTicker(a.checkEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, n := range a.names {
				// In memory: autocert holds every certificate it served and
				// swaps in the renewed ones.
				if err := a.obtain(n, "tls certificate"); err != nil {
					a.log.Error("acme certificate unavailable", "name", n, "err", acmeDetail(err))
				}
			}
		}
	}
}

// acmeDetail is err with the CA's problem document (RFC 8555 section 6.7)
// spelled out when there is one.
func acmeDetail(err error) string {
	var ae *acme.Error
	if errors.As(err, &ae) {
		s := fmt.Sprintf("%s: %s (status %d)", ae.ProblemType, ae.Detail, ae.StatusCode)
		for _, sub := range ae.Subproblems {
			s += fmt.Sprintf("; %s: %s", sub.Type, sub.Detail)
		}
		return s
	}
	var oe *acme.OrderError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	return err.Error()
}

// shutdown stops asking and cuts autocert off from the CA.
func (a *acmeCerts) shutdown() {
	a.client.close()
	if a.stop != nil {
		a.stop()
		<-a.done
	}
}

// storedCerts are the ACME certificates the store holds for names, as
// `status` shows them: the newest, since autocert stores each renewal.
func storedCerts(st *store.Store, names []string) ([]certInfo, error) {
	var out []certInfo
	for _, n := range names {
		data, err := st.CertCacheGet(n)
		if errors.Is(err, store.ErrNoCert) {
			out = append(out, certInfo{Name: n})
			continue
		}
		if err != nil {
			return nil, err
		}
		leaf, err := firstCert(data)
		if err != nil {
			return nil, fmt.Errorf("certificate of %s in the store: %w", n, err)
		}
		out = append(out, certInfo{Name: n, Issuer: leaf.Issuer.String(), NotAfter: leaf.NotAfter})
	}
	return out, nil
}

// firstCert is the first certificate of PEM data (autocert stores the key
// first, then the chain).
func firstCert(data []byte) (*x509.Certificate, error) {
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, errors.New("no PEM certificate in it")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// certInfo is one certificate as `status` shows it; no NotAfter: none
// obtained yet.
type certInfo struct {
	Name     string    `json:"name"`
	Issuer   string    `json:"issuer,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

// fallbackCert is the self-signed certificate for names served until the
// CA's arrive.
func fallbackCert(names []string) (*tls.Certificate, error) {
	certPEM, keyPEM, err := selfSignedFor(names, time.Now())
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	return &cert, err
}
