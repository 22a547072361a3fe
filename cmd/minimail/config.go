package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"minimail/mta/mailaddr"
	"minimail/mta/msgauth"
	"minimail/mta/web"
)

// Config is the TOML file, as in SPEC.md plus the keys README's reference
// adds. Durations are Go duration strings ("30s", "5m").
type Config struct {
	Hostname string   `toml:"hostname"`
	Domains  []string `toml:"domains"`
	DataDir  string   `toml:"data_dir"`
	// RecipientDelimiter: u+tag@domain reaches u@domain (SPEC); unset is
	// "+", "" turns it off. Each character is a delimiter, as in Postfix.
	RecipientDelimiter *string `toml:"recipient_delimiter"`

	Listen struct {
		SMTP        string `toml:"smtp"`
		Submission  string `toml:"submission"`
		Submissions string `toml:"submissions"`
		POP3        string `toml:"pop3"`
		POP3S       string `toml:"pop3s"`
		// HTTPS serves autoconfig, autodiscover and the MTA-STS policy,
		// and answers ACME's TLS-ALPN-01 challenges.
		HTTPS string `toml:"https"`
		// Metrics serves GET /metrics (Prometheus) and GET /healthz over
		// plain HTTP; it belongs on loopback or a private network.
		Metrics string `toml:"metrics"`
		// Sendmail is the path of a unix socket on which `minimail
		// sendmail` of any local user submits (sendmailsock.go); its
		// directory must let others in and nobody else write.
		Sendmail string `toml:"sendmail"`
	} `toml:"listen"`

	TLS struct {
		Cert string `toml:"cert"`
		Key  string `toml:"key"`
		// ReloadInterval is how often cert/key modification times are
		// checked; SIGHUP reloads at once.
		ReloadInterval duration `toml:"reload_interval"`
	} `toml:"tls"`

	// ACME gets and renews the certificates (RFC 8555) when Email is set;
	// the [tls] files are then not set.
	ACME struct {
		Email     string `toml:"email"`
		Directory string `toml:"directory"` // default Let's Encrypt
		CA        string `toml:"ca"`        // PEM file of CAs to trust the directory with
	} `toml:"acme"`

	MTASTS struct {
		Mode   string   `toml:"mode"`    // none, testing (default), enforce
		MaxAge duration `toml:"max_age"` // the policy's max_age; default a week
	} `toml:"mta_sts"`

	Auth struct {
		AllowInsecureAuth bool     `toml:"allow_insecure_auth"`
		MaxFailures       int      `toml:"max_failures"`
		FailureWindow     duration `toml:"failure_window"`
		FailureDelay      duration `toml:"failure_delay"`
		// MinPasswordLength is the shortest password `user add` and
		// `user passwd` take, in characters; 0 = 8 (none with
		// AllowInsecureAuth, see minPasswordLength).
		MinPasswordLength int `toml:"min_password_length"`
	} `toml:"auth"`

	Limits struct {
		MaxMessageBytes     int64    `toml:"max_message_bytes"`
		MaxRecipients       int      `toml:"max_recipients"`
		MaxLineLength       int      `toml:"max_line_length"`
		MaxHeaderBytes      int      `toml:"max_header_bytes"`
		MaxConnections      int      `toml:"max_connections"`
		MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
		MaxErrors           int      `toml:"max_errors"`
		CommandTimeout      duration `toml:"command_timeout"`
		DataTimeout         duration `toml:"data_timeout"`
		POP3IdleTimeout     duration `toml:"pop3_idle_timeout"`
		ShutdownTimeout     duration `toml:"shutdown_timeout"`
		MinDataRate         int      `toml:"min_data_rate"`
		MaxSessionTime      duration `toml:"max_session_time"`
		MaxBufferedBytes    int64    `toml:"max_buffered_bytes"`
		// MinFreeBytes is the free disk space (the data directory's file
		// system and the free pages of its database) below which SMTP
		// refuses new mail with 452 4.3.1; 0 = 1.5 × max_message_bytes.
		MinFreeBytes int64 `toml:"min_free_bytes"`
		// MaxMailboxBytes is the quota of a mailbox without one of its
		// own (`user quota`); 0 = none.
		MaxMailboxBytes int64 `toml:"max_mailbox_bytes"`
	} `toml:"limits"`

	Relay struct {
		Routes            map[string]string `toml:"routes"`
		Smarthost         string            `toml:"smarthost"`
		SmarthostUsername string            `toml:"smarthost_username"`
		SmarthostPassword string            `toml:"smarthost_password"`
		DNS               string            `toml:"dns"`
		RetryMin          duration          `toml:"retry_min"`
		RetryMax          duration          `toml:"retry_max"`
		MaxAge            duration          `toml:"max_age"`
		DelayNotice       duration          `toml:"delay_notice"`
		MaxConcurrent     int               `toml:"max_concurrent"`
		MaxPerDomain      int               `toml:"max_per_domain"`
		// MaxReturnBytes bounds the message a failure DSN returns whole
		// for RET=FULL (RFC 3461); 0 = queue.DefaultMaxReturnBytes.
		MaxReturnBytes int `toml:"max_return_bytes"`
	} `toml:"relay"`

	DKIM struct {
		Selector string `toml:"selector"`
		Key      string `toml:"key"`
	} `toml:"dkim"`

	DMARC struct {
		// Reject refuses mail failing a p=reject DMARC policy with 550;
		// false delivers it with the verdict in Authentication-Results.
		Reject *bool `toml:"reject"`
	} `toml:"dmarc"`

	// Antispam applies to the MX listener only (antispam.go).
	Antispam struct {
		DNSBL         []string    `toml:"dnsbl"`
		Rspamd        string      `toml:"rspamd"`
		RspamdTimeout duration    `toml:"rspamd_timeout"`
		Greylist      offDuration `toml:"greylist"`
		// GreetDelay: unset is mta.DefaultGreetDelay, "0s" turns it off.
		GreetDelay *duration `toml:"greet_delay"`
	} `toml:"antispam"`

	path string // the file this was read from, for error messages
}

// duration reads a TOML string such as "30s" into a time.Duration.
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"30s\" or \"5m\": %w", err)
	}
	if v < 0 {
		return errors.New("duration must not be negative")
	}
	d.Duration = v
	return nil
}

func (d duration) or(def time.Duration) time.Duration {
	if d.Duration == 0 {
		return def
	}
	return d.Duration
}

// configError is a bad config file: exit code 2, message names file and key.
type configError struct {
	path, key, msg string
}

func (e *configError) Error() string {
	if e.key == "" {
		return fmt.Sprintf("%s: %s", e.path, e.msg)
	}
	return fmt.Sprintf("%s: key %s: %s", e.path, e.key, e.msg)
}

// loadConfig reads and validates path. Relative paths inside the file are
// made relative to the file's directory.
func loadConfig(path string) (*Config, error) {
	c := &Config{path: path}
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, &configError{path: path, msg: perr.ErrorWithPosition()}
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil, &configError{path: path, msg: "no such file (run `minimail init` to write one, or pass --config)"}
		}
		if hint := readHint(err); hint != "" {
			return nil, &configError{path: path, msg: err.Error() + ": " + hint}
		}
		return nil, &configError{path: path, msg: err.Error()}
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		// Report one key, the same one every time.
		sort.Strings(keys)
		return nil, &configError{path: path, key: keys[0], msg: "unknown key"}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) fail(key, format string, args ...any) error {
	return &configError{path: c.path, key: key, msg: fmt.Sprintf(format, args...)}
}

// validate checks the config and fills in defaults and absolute paths; the
// error names the file and the key.
func (c *Config) validate() error {
	for _, check := range []func() error{c.validateNames, c.validateListeners, c.validateLimits, c.validateRelay, c.validateDKIM, c.validateACME, c.validateMTASTS, c.validateAntispam} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// validateNames: hostname, domains, data_dir.
func (c *Config) validateNames() error {
	if c.Hostname == "" {
		return c.fail("hostname", "required")
	}
	if !validDomain(c.Hostname) {
		return c.fail("hostname", "%q is not a domain name", c.Hostname)
	}
	if len(c.Domains) == 0 {
		return c.fail("domains", "at least one local domain is required")
	}
	for i, d := range c.Domains {
		if !validDomain(d) {
			return c.fail("domains", "%q is not a domain name", d)
		}
		c.Domains[i] = mailaddr.NormalDomain(d)
	}
	if c.DataDir == "" {
		return c.fail("data_dir", "required")
	}
	for _, r := range c.recipientDelimiter() {
		// A delimiter must be a character of a dot-atom local part that
		// cannot end or join anything else: not '@', '.', space or control.
		if r == '@' || r == '.' || r == '"' || r <= ' ' || r == 0x7f || r >= 0x80 {
			return c.fail("recipient_delimiter", "%q cannot separate an address extension", r)
		}
	}
	c.DataDir = c.rel(c.DataDir)
	return nil
}

// validateListeners: the listen addresses and the TLS files they need.
func (c *Config) validateListeners() error {
	listeners := c.listeners()
	tlsNeeded := false
	for _, l := range listeners {
		if l.addr == "" {
			continue
		}
		if err := checkHostPort(l.addr); err != nil {
			return c.fail(l.key, "%q: %v (\":25\" for all addresses)", l.addr, err)
		}
		if l.key != "listen.smtp" && l.key != "listen.pop3" {
			tlsNeeded = true
		}
	}
	if a := c.Listen.Metrics; a != "" {
		if err := checkHostPort(a); err != nil {
			return c.fail("listen.metrics", "%q: %v (\"127.0.0.1:9154\" keeps it on loopback)", a, err)
		}
	}
	if p := c.Listen.Sendmail; p != "" {
		c.Listen.Sendmail = c.rel(p)
		if len(c.Listen.Sendmail) > maxSocketPath {
			return c.fail("listen.sendmail", "%q: longer than the %d bytes a unix socket path may have", c.Listen.Sendmail, maxSocketPath)
		}
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		if c.TLS.Cert == "" {
			return c.fail("tls.cert", "required when tls.key is set")
		}
		return c.fail("tls.key", "required when tls.cert is set")
	}
	if tlsNeeded && c.TLS.Cert == "" && c.ACME.Email == "" {
		return c.fail("tls.cert", "required (or acme.email): listen.submission, listen.submissions, listen.pop3s and listen.https need a certificate")
	}
	if c.TLS.Cert != "" {
		c.TLS.Cert, c.TLS.Key = c.rel(c.TLS.Cert), c.rel(c.TLS.Key)
	}
	return nil
}

// validateLimits: [limits] and the numbers of [auth] and [relay], with
// their defaults.
func (c *Config) validateLimits() error {
	if c.Limits.MaxMessageBytes == 0 {
		c.Limits.MaxMessageBytes = 25 << 20
	}
	if c.Limits.MaxRecipients == 0 {
		c.Limits.MaxRecipients = 100
	}
	// Connection limits apply to every listener (SMTP and POP3 alike), so
	// their defaults live here rather than in each package.
	if c.Limits.MaxConnections == 0 {
		c.Limits.MaxConnections = 500
	}
	if c.Limits.MaxConnectionsPerIP == 0 {
		c.Limits.MaxConnectionsPerIP = 20
	}
	if c.Auth.FailureDelay.Duration == 0 {
		c.Auth.FailureDelay.Duration = 2 * time.Second
	}
	for key, v := range map[string]int64{
		"limits.max_message_bytes":      c.Limits.MaxMessageBytes,
		"limits.max_recipients":         int64(c.Limits.MaxRecipients),
		"limits.max_line_length":        int64(c.Limits.MaxLineLength),
		"limits.max_header_bytes":       int64(c.Limits.MaxHeaderBytes),
		"limits.max_connections":        int64(c.Limits.MaxConnections),
		"limits.max_connections_per_ip": int64(c.Limits.MaxConnectionsPerIP),
		"limits.max_errors":             int64(c.Limits.MaxErrors),
		"limits.min_data_rate":          int64(c.Limits.MinDataRate),
		"limits.max_buffered_bytes":     c.Limits.MaxBufferedBytes,
		"limits.min_free_bytes":         c.Limits.MinFreeBytes,
		"limits.max_mailbox_bytes":      c.Limits.MaxMailboxBytes,
		"auth.max_failures":             int64(c.Auth.MaxFailures),
		"auth.min_password_length":      int64(c.Auth.MinPasswordLength),
		"relay.max_concurrent":          int64(c.Relay.MaxConcurrent),
		"relay.max_per_domain":          int64(c.Relay.MaxPerDomain),
		"relay.max_return_bytes":        int64(c.Relay.MaxReturnBytes),
	} {
		if v < 0 {
			return c.fail(key, "must not be negative")
		}
	}
	if n := c.Limits.MaxHeaderBytes; n != 0 && n < 1000 {
		return c.fail("limits.max_header_bytes", "%d is below one 1000-octet header line (RFC 5322 2.1.1)", n)
	}
	if n := c.Limits.MaxHeaderBytes; n > msgauth.MaxHeaderBytes {
		return c.fail("limits.max_header_bytes", "%d is above %d, the largest header the DKIM checks take", n, msgauth.MaxHeaderBytes)
	}
	if n := c.Limits.MaxLineLength; n != 0 && n < 1000 {
		return c.fail("limits.max_line_length", "%d is below the 1000 octets RFC 5321 4.5.3.1.6 requires", n)
	}
	if t := c.Limits.POP3IdleTimeout.Duration; t != 0 && t < 10*time.Minute {
		return c.fail("limits.pop3_idle_timeout", "%s is below the 10 minutes RFC 1939 3 requires", t)
	}
	return nil
}

// validateRelay: routes, smarthost, resolver.
func (c *Config) validateRelay() error {
	// Recipient domains are compared lower-cased and without a trailing
	// dot, so route keys are stored that way (RFC 1035 2.3.3). Keys are
	// checked in sorted order so the same mistake is always reported.
	keys := make([]string, 0, len(c.Relay.Routes))
	for dom := range c.Relay.Routes {
		keys = append(keys, dom)
	}
	sort.Strings(keys)
	routes := make(map[string]string, len(keys))
	for _, dom := range keys {
		hostport := c.Relay.Routes[dom]
		if !validDomain(dom) {
			return c.fail("relay.routes", "%q is not a domain name", dom)
		}
		if err := checkHostPort(hostport); err != nil {
			return c.fail("relay.routes", "%s = %q: %v", dom, hostport, err)
		}
		norm := mailaddr.NormalDomain(dom)
		if _, dup := routes[norm]; dup {
			return c.fail("relay.routes", "%q names %s, which another key already names", dom, norm)
		}
		routes[norm] = hostport
	}
	if c.Relay.Routes != nil {
		c.Relay.Routes = routes
	}
	for key, hp := range map[string]string{"relay.smarthost": c.Relay.Smarthost, "relay.dns": c.Relay.DNS} {
		if hp == "" {
			continue
		}
		if err := checkHostPort(hp); err != nil {
			return c.fail(key, "%q: %v", hp, err)
		}
	}
	if (c.Relay.SmarthostUsername == "") != (c.Relay.SmarthostPassword == "") {
		return c.fail("relay.smarthost_password", "smarthost_username and smarthost_password go together")
	}
	if c.Relay.SmarthostUsername != "" && c.Relay.Smarthost == "" {
		return c.fail("relay.smarthost_username", "set without relay.smarthost")
	}
	return nil
}

func (c *Config) validateDKIM() error {
	if (c.DKIM.Selector == "") != (c.DKIM.Key == "") {
		return c.fail("dkim.key", "dkim.selector and dkim.key go together")
	}
	if c.DKIM.Key != "" {
		c.DKIM.Key = c.rel(c.DKIM.Key)
	}
	return nil
}

// defaultACMEDirectory is Let's Encrypt's production directory.
const defaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// validateACME: [acme] and what it needs.
func (c *Config) validateACME() error {
	if c.ACME.Email == "" {
		// ACME off: directory and ca are not looked at.
		c.ACME.CA = ""
		return nil
	}
	if local, domain, ok := strings.Cut(c.ACME.Email, "@"); !ok || local == "" || !validDomain(domain) || strings.ContainsAny(c.ACME.Email, " <>\t") {
		return c.fail("acme.email", "%q is not an address", c.ACME.Email)
	}
	if c.TLS.Cert != "" {
		return c.fail("acme.email", "set together with tls.cert: ACME certificates replace the [tls] files, so remove tls.cert and tls.key (or empty acme.email)")
	}
	if c.Listen.HTTPS == "" {
		return c.fail("acme.email", "needs listen.https: the CA checks the name over TLS-ALPN-01 on port 443")
	}
	if c.ACME.Directory == "" {
		c.ACME.Directory = defaultACMEDirectory
	}
	u, err := url.Parse(c.ACME.Directory)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return c.fail("acme.directory", "%q is not an https:// URL", c.ACME.Directory)
	}
	if c.ACME.CA != "" {
		c.ACME.CA = c.rel(c.ACME.CA)
	}
	return nil
}

// mtaSTSPolicy is the policy [mta_sts] describes.
func (c *Config) mtaSTSPolicy() web.Policy {
	return web.Policy{Mode: c.MTASTS.Mode, MaxAge: c.MTASTS.MaxAge.Duration}
}

// validateMTASTS: [mta_sts], with its defaults.
func (c *Config) validateMTASTS() error {
	if c.MTASTS.Mode == "" {
		c.MTASTS.Mode = "testing"
	}
	if !slices.Contains(web.Modes, c.MTASTS.Mode) {
		return c.fail("mta_sts.mode", "%q is not one of %s", c.MTASTS.Mode, strings.Join(web.Modes, ", "))
	}
	if c.MTASTS.MaxAge.Duration == 0 {
		c.MTASTS.MaxAge.Duration = web.DefaultMaxAge
	}
	if d := c.MTASTS.MaxAge.Duration; d > web.MaxMaxAge || d%time.Second != 0 {
		return c.fail("mta_sts.max_age", "%s is not whole seconds up to %s (RFC 8461 section 3.2)", d, web.MaxMaxAge)
	}
	return nil
}

// checkHostPort accepts host:port with a port number (0-65535) or a
// service name the system knows ("smtp"), so that a bad port is a config
// error here and not a failure to listen or dial later.
func checkHostPort(hp string) error {
	_, port, err := net.SplitHostPort(hp)
	if err != nil {
		return errors.New("want host:port")
	}
	if port == "" {
		return errors.New("want host:port, the port is missing")
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

type listenerConf struct{ key, addr string }

// listeners returns the [listen] keys in a fixed order.
func (c *Config) listeners() []listenerConf {
	return []listenerConf{
		{"listen.smtp", c.Listen.SMTP},
		{"listen.submission", c.Listen.Submission},
		{"listen.submissions", c.Listen.Submissions},
		{"listen.pop3", c.Listen.POP3},
		{"listen.pop3s", c.Listen.POP3S},
		{"listen.https", c.Listen.HTTPS},
	}
}

// rel resolves p against the config file's directory.
func (c *Config) rel(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}

// minPasswordLength is auth.min_password_length, whose default holds
// only for a server that logs in over TLS: with auth.allow_insecure_auth
// (local testing only, as for a benchmark on loopback) no minimum is
// assumed, only one set explicitly.
// recipientDelimiter is recipient_delimiter with its default.
func (c *Config) recipientDelimiter() string {
	if c.RecipientDelimiter == nil {
		return "+"
	}
	return *c.RecipientDelimiter
}

func (c *Config) minPasswordLength() int {
	switch {
	case c.Auth.MinPasswordLength != 0:
		return c.Auth.MinPasswordLength
	case c.Auth.AllowInsecureAuth:
		return 1
	}
	return defaultMinPasswordLength
}

func (c *Config) dmarcReject() bool { return c.DMARC.Reject == nil || *c.DMARC.Reject }

// isLocalDomain reports whether domain is one of ours.
func (c *Config) isLocalDomain(domain string) bool {
	domain = strings.ToLower(domain)
	for _, d := range c.Domains {
		if d == domain {
			return true
		}
	}
	return false
}

// validDomain checks a domain of the config: a name by the one rule the
// server also reads mail domains by, written absolute or not.
func validDomain(d string) bool { return mailaddr.ValidDomain(strings.TrimSuffix(d, ".")) }
