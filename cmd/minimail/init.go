package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"minimail/mta/msgauth"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "write a working config, a self-signed TLS certificate and a DKIM key; print the DNS records to publish",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "domain", Usage: "the mail domain (the part after @)", Required: true},
			&cli.StringFlag{Name: "hostname", Usage: "this server's name (greeting, HELO, certificate)", Required: true},
			&cli.StringFlag{Name: "dir", Usage: "directory for minimail.toml, tls/, dkim/ and data/", Value: "."},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("init takes no arguments, only flags")
			}
			return initDir(c.App.Writer, c.String("dir"), strings.ToLower(c.String("domain")), strings.ToLower(c.String("hostname")))
		},
	}
}

const initSelector = "mail"

// initDir writes a config for a first try on loopback and unprivileged
// ports. It checks every target first so that it never overwrites anything
// and never leaves half a setup behind.
func initDir(w io.Writer, dir, domain, hostname string) error {
	if !validDomain(domain) {
		return usagef("--domain %q is not a domain name", domain)
	}
	if !validDomain(hostname) {
		return usagef("--hostname %q is not a domain name", hostname)
	}
	files := map[string]string{
		"config": filepath.Join(dir, "minimail.toml"),
		"cert":   filepath.Join(dir, "tls", "cert.pem"),
		"key":    filepath.Join(dir, "tls", "key.pem"),
		"dkim":   filepath.Join(dir, "dkim", initSelector+".key"),
	}
	for _, p := range files {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: init never overwrites (remove it or pick another --dir)", p)
		}
	}
	for _, sub := range []string{"tls", "dkim", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	certPEM, keyPEM, err := selfSigned(hostname, time.Now())
	if err != nil {
		return err
	}
	dkimKey, dkimPEM, err := msgauth.GenerateKey()
	if err != nil {
		return fmt.Errorf("dkim key: %w", err)
	}
	cfg := fmt.Sprintf(initConfig, hostname, domain)
	var written []string
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{files["cert"], certPEM, 0o644},
		{files["key"], keyPEM, 0o600},
		{files["dkim"], dkimPEM, 0o600},
		{files["config"], []byte(cfg), 0o644},
	} {
		if err := writeNew(f.path, f.data, f.mode); err != nil {
			for _, p := range written {
				os.Remove(p)
			}
			return err
		}
		written = append(written, f.path)
	}
	fmt.Fprintf(w, "wrote %s, %s, %s, %s\n\n", files["config"], files["cert"], files["key"], files["dkim"])
	fmt.Fprintf(w, "Next: minimail --config %s user add you@%s\n", files["config"], domain)
	fmt.Fprintf(w, "      minimail --config %s user add postmaster@%s   (RFC 5321 4.5.1 requires it)\n", files["config"], domain)
	fmt.Fprintf(w, "      minimail --config %s serve\n\n", files["config"])
	return printRecords(w, []string{domain}, hostname, initSelector, dkimKey.Public())
}

// initConfig is the first-try config: loopback, unprivileged ports, the
// files init wrote next to it. deploy/minimail.example.toml has every key.
const initConfig = `# minimail config written by minimail init. Every key: README.md, "Config reference".
hostname = %q
domains  = [%q]
data_dir = "data"

[listen]           # loopback and unprivileged ports for a first try; use ":25" etc. in production
smtp        = "127.0.0.1:2525"
submission  = "127.0.0.1:2587"
submissions = "127.0.0.1:2465"
pop3        = "127.0.0.1:2110"
pop3s       = "127.0.0.1:2995"

[tls]              # self-signed; point these at your certbot files for production
cert = "tls/cert.pem"
key  = "tls/key.pem"

[auth]
allow_insecure_auth = false

[limits]
max_message_bytes = 26214400
max_recipients    = 100

[relay]
smarthost = ""
dns       = ""

[dkim]
selector = "mail"
key      = "dkim/mail.key"
`

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("init: write %s: %w", path, err)
	}
	return nil
}

// selfSigned makes an ECDSA P-256 certificate for hostname valid for a year.
func selfSigned(hostname string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tls key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("tls serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hostname},
		DNSNames:     []string{hostname},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

func dnsCommand() *cli.Command {
	return &cli.Command{
		Name:  "dns",
		Usage: "print the DNS records to publish for the configured domains (MX, SPF, DKIM, DMARC)",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("dns takes no arguments")
			}
			cfg, err := config(c)
			if err != nil {
				return err
			}
			var pub crypto.PublicKey
			if cfg.DKIM.Key != "" {
				key, err := msgauth.LoadKey(cfg.DKIM.Key)
				if err != nil {
					return &configError{path: cfg.path, key: "dkim.key", msg: err.Error()}
				}
				pub = key.Public()
			}
			return printRecords(c.App.Writer, cfg.Domains, cfg.Hostname, cfg.DKIM.Selector, pub)
		},
	}
}

func printRecords(w io.Writer, domains []string, hostname, selector string, pub crypto.PublicKey) error {
	fmt.Fprintf(w, "; DNS records to publish (zone-file syntax). Also: an A/AAAA record for %s,\n; and a PTR record for its address naming %s (ask your hosting provider).\n", hostname, hostname)
	for _, d := range domains {
		recs, err := msgauth.Records(d, hostname, selector, pub)
		if err != nil {
			return fmt.Errorf("dns records for %s: %w", d, err)
		}
		for _, r := range recs {
			fmt.Fprintln(w, r)
		}
	}
	return nil
}
