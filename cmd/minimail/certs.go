package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves the certificate from [tls] cert/key and picks up a
// renewed pair (certbot replaces the files) without a restart: on SIGHUP and
// when the files' modification times change. A bad new pair is logged and
// the old one kept, so a botched renewal never takes TLS down.
type certReloader struct {
	certPath, keyPath string
	log               *slog.Logger

	mu      sync.RWMutex
	cert    *tls.Certificate
	modTime time.Time // newest of the two files' mtimes at the last load
}

func newCertReloader(certPath, keyPath string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certPath: certPath, keyPath: keyPath, log: log}
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

func (r *certReloader) load() error {
	mt, err := r.filesModTime()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certPath, r.keyPath)
	if err != nil {
		return fmt.Errorf("tls.cert %s / tls.key %s: %w", r.certPath, r.keyPath, err)
	}
	r.mu.Lock()
	r.cert, r.modTime = &cert, mt
	r.mu.Unlock()
	return nil
}

// Reload loads the files again, keeping the current pair if they are bad.
func (r *certReloader) Reload() {
	if err := r.load(); err != nil {
		r.log.Error("tls reload failed, keeping the previous certificate", "err", err)
		return
	}
	r.log.Info("tls certificate loaded", "cert", r.certPath)
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
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			r.mu.RLock()
			defer r.mu.RUnlock()
			return r.cert, nil
		},
		// Microsoft's senders (Outlook.com, Exchange Online) fail STARTTLS
		// against servers that issue session tickets.
		SessionTicketsDisabled: true,
	}
}
