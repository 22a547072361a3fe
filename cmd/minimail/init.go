package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"minimail/mta/msgauth"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "write a working config, a self-signed TLS certificate and a DKIM key; print the DNS records to publish",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "domain", Usage: "the mail domain (the part after @); required"},
			&cli.StringFlag{Name: "hostname", Usage: "this server's public DNS name (greeting, HELO, certificate); required"},
			&cli.StringFlag{Name: "dir", Usage: "directory for minimail.toml, tls/ and dkim/", Value: "."},
			&cli.StringFlag{Name: "data-dir", Usage: "the config's data_dir, created if missing (default: DIR/data)"},
			&cli.StringFlag{Name: "service-user", Usage: "the account `serve` runs as (minimail, or 65532 for the container image): " +
				"the files become readable by its group and data_dir is created owned by it"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("init takes no arguments, only flags")
			}
			for _, f := range []string{"domain", "hostname"} {
				if c.String(f) == "" {
					return usagef("init: --%s is required", f)
				}
			}
			return initDir(c.App.Writer, c.App.ErrWriter, initOptions{
				dir:         c.String("dir"),
				domain:      strings.ToLower(c.String("domain")),
				hostname:    strings.ToLower(c.String("hostname")),
				dataDir:     c.String("data-dir"),
				serviceUser: c.String("service-user"),
			})
		},
	}
}

const initSelector = "mail"

// initOptions are the flags of `minimail init`.
type initOptions struct {
	dir, domain, hostname string
	dataDir               string // "" = "data" beside the config
	serviceUser           string // "" = the files stay private to whoever runs init
}

// initDir writes a config for a first try on loopback and unprivileged
// ports. It checks every target first so that it never overwrites anything
// and never leaves half a setup behind.
//
// With a service user, what it writes is what the unit and the container
// image need: DIR, tls/ and dkim/ mode 0750 and the keys and config 0640,
// all of the service user's group, so the server can read them and not
// change them; data_dir, if init creates it, 0700 and owned by the service
// user, as systemd's StateDirectory= would make it. Run as root in an
// existing DIR, the files keep DIR's owner (an operator's ./config stays
// theirs to edit).
func initDir(w, errw io.Writer, o initOptions) error {
	if !validDomain(o.domain) {
		return usagef("--domain %q is not a domain name", o.domain)
	}
	if !validDomain(o.hostname) {
		return usagef("--hostname %q is not a domain name", o.hostname)
	}
	if !publicName(o.hostname) {
		fmt.Fprintf(errw, "minimail: warning: --hostname %s is not a public DNS name: fine for a trial on this machine, "+
			"but other servers find and greet a public MX by a real name with an A/AAAA record (RFC 5321 2.3.5, 5.1)\n", o.hostname)
	}
	perm := initPerms{dir: 0o700, secret: 0o600, uid: -1, gid: -1}
	var svc owner
	if o.serviceUser != "" {
		var err error
		if svc, err = serviceAccount(o.serviceUser); err != nil {
			return err
		}
		perm = initPerms{dir: 0o750, secret: 0o640, uid: -1, gid: svc.gid}
	}
	files := map[string]string{
		"config": filepath.Join(o.dir, "minimail.toml"),
		"cert":   filepath.Join(o.dir, "tls", "cert.pem"),
		"key":    filepath.Join(o.dir, "tls", "key.pem"),
		"dkim":   filepath.Join(o.dir, "dkim", initSelector+".key"),
	}
	for _, p := range files {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: init never overwrites (remove it or pick another --dir)", p)
		}
	}
	dataDir, dataPath := o.dataDir, o.dataDir
	if dataDir == "" {
		dataDir, dataPath = "data", filepath.Join(o.dir, "data")
	} else if !filepath.IsAbs(dataPath) {
		dataPath = filepath.Join(o.dir, dataPath) // relative to the config, as data_dir is
	}
	if fi, err := os.Stat(o.dir); err == nil && os.Geteuid() == 0 {
		if d, err := ownerOf(o.dir); err == nil {
			perm.uid = d.uid
		}
		if o.serviceUser != "" && !canEnter(fi, svc) {
			fmt.Fprintf(errw, "minimail: warning: %s (mode %o) does not let %s in: chgrp %d %s && chmod g+rx %s\n",
				o.dir, fi.Mode().Perm(), o.serviceUser, svc.gid, o.dir, o.dir)
		}
	}
	if err := perm.mkdir(o.dir); err != nil {
		return err
	}
	for _, sub := range []string{"tls", "dkim"} {
		if err := perm.mkdir(filepath.Join(o.dir, sub)); err != nil {
			return err
		}
	}
	if err := makeDataDir(dataPath, o.serviceUser != "", svc); err != nil {
		return err
	}
	certPEM, keyPEM, err := selfSigned(o.hostname, time.Now())
	if err != nil {
		return err
	}
	dkimKey, dkimPEM, err := msgauth.GenerateKey()
	if err != nil {
		return fmt.Errorf("dkim key: %w", err)
	}
	cfg := fmt.Sprintf(initConfig, o.hostname, o.domain, dataDir)
	var written []string
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{files["cert"], certPEM, 0o644},
		{files["key"], keyPEM, perm.secret},
		{files["dkim"], dkimPEM, perm.secret},
		{files["config"], []byte(cfg), perm.secret},
	} {
		err := writeNew(f.path, f.data, f.mode)
		if err == nil {
			err = perm.chown(f.path)
		}
		if err != nil {
			for _, p := range written {
				os.Remove(p)
			}
			return err
		}
		written = append(written, f.path)
	}
	fmt.Fprintf(w, "wrote %s, %s, %s, %s\n\n", files["config"], files["cert"], files["key"], files["dkim"])
	fmt.Fprintf(w, "Next: minimail --config %s user add you@%s   (asks for the password twice)\n", files["config"], o.domain)
	fmt.Fprintf(w, "      minimail --config %s alias add postmaster@%s you@%s   (RFC 5321 4.5.1 requires a postmaster)\n", files["config"], o.domain, o.domain)
	fmt.Fprintf(w, "      minimail --config %s serve\n\n", files["config"])
	recs, err := domainRecords([]string{o.domain}, o.hostname, initSelector, dkimKey.Public())
	if err != nil {
		return err
	}
	printRecords(w, o.hostname, recs)
	return nil
}

// initPerms are the modes and ownership of what init creates; -1 keeps
// the owner or group a new file gets.
type initPerms struct {
	dir, secret os.FileMode
	uid, gid    int
}

func (p initPerms) mkdir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil // existing: its owner chose its mode
	}
	if err := os.MkdirAll(dir, p.dir); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	return p.chown(dir)
}

func (p initPerms) chown(path string) error {
	if p.uid == -1 && p.gid == -1 {
		return nil
	}
	if err := os.Chown(path, p.uid, p.gid); err != nil {
		return fmt.Errorf("init: %w (giving files to --service-user needs root)", err)
	}
	return nil
}

// makeDataDir creates data_dir, mode 0700, owned by the service user when
// there is one. An existing one (a container volume, or a restore) is left
// as it is.
func makeDataDir(path string, chown bool, svc owner) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return fmt.Errorf("init: data_dir: %w", err)
	}
	if chown {
		if err := os.Chown(path, svc.uid, svc.gid); err != nil {
			return fmt.Errorf("init: data_dir: %w (giving it to --service-user needs root)", err)
		}
	}
	return nil
}

// serviceAccount resolves --service-user: a user name (its primary group),
// or a numeric uid with an optional :gid, as the container's 65532:65532,
// which need not exist on this machine.
func serviceAccount(spec string) (owner, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	var o owner
	if uid, err := strconv.Atoi(name); err == nil && uid >= 0 {
		o = owner{uid, uid}
	} else {
		u, err := user.Lookup(name)
		if err != nil {
			return owner{}, usagef("--service-user %s: no such user (create it first: useradd --system --user-group %s)", name, name)
		}
		o.uid, _ = strconv.Atoi(u.Uid)
		o.gid, _ = strconv.Atoi(u.Gid)
	}
	if hasGroup {
		if gid, err := strconv.Atoi(group); err == nil && gid >= 0 {
			o.gid = gid
		} else if g, err := user.LookupGroup(group); err == nil {
			o.gid, _ = strconv.Atoi(g.Gid)
		} else {
			return owner{}, usagef("--service-user %s: no such group %s", spec, group)
		}
	}
	return o, nil
}

// canEnter reports whether the service account may enter the directory fi
// describes.
func canEnter(fi os.FileInfo, svc owner) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	m := fi.Mode().Perm()
	switch {
	case int(st.Uid) == svc.uid:
		return m&0o100 != 0
	case int(st.Gid) == svc.gid:
		return m&0o010 != 0
	}
	return m&0o001 != 0
}

// publicName reports whether hostname can be a public MX's name: not
// localhost, not an address literal, not a single label.
func publicName(hostname string) bool {
	h := strings.TrimSuffix(hostname, ".")
	if net.ParseIP(h) != nil || h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return false
	}
	return strings.Contains(h, ".")
}

// initConfig is the first-try config: loopback, unprivileged ports, the
// files init wrote next to it. deploy/minimail.example.toml has every key.
const initConfig = `# minimail config written by minimail init. Every key: README.md, "Config reference".
hostname = %q
domains  = [%q]
data_dir = %q

[listen]           # loopback and unprivileged ports for a first try; use ":25" etc. in production
smtp        = "127.0.0.1:2525"
submission  = "127.0.0.1:2587"
submissions = "127.0.0.1:2465"
pop3        = "127.0.0.1:2110"
pop3s       = "127.0.0.1:2995"
https       = "127.0.0.1:2443"   # autoconfig, autodiscover, MTA-STS; ":443" for ACME and real clients
metrics     = "127.0.0.1:9154"   # Prometheus GET /metrics and GET /healthz; keep it off the internet
sendmail    = ""                 # unix socket for every local user's sendmail, e.g. "/run/minimail/sendmail.sock" (README: sendmail)

[tls]              # self-signed; for production remove both and set [acme] email (or point them at certbot's files)
cert = "tls/cert.pem"
key  = "tls/key.pem"

[auth]
allow_insecure_auth = false
min_password_length = 8

[limits]
max_message_bytes = 26214400
max_recipients    = 100

[relay]
smarthost = ""
# Empty: the system resolver (/etc/resolv.conf). Even a trial on loopback
# looks up SPF, DKIM and DMARC of incoming mail and MX of outgoing mail
# there, so its queries leave this machine.
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
	return selfSignedFor([]string{hostname}, now)
}

// selfSignedFor makes an ECDSA P-256 certificate for names valid for a
// year, the first name its subject.
func selfSignedFor(names []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	hostname := names[0]
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
		DNSNames:     names,
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
