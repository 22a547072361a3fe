package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimalConfig = `
hostname = "mx.example.org"
domains = ["Example.org"]
data_dir = "data"
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "minimail.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigAppliesDefaultsAndResolvesPaths(t *testing.T) {
	p := writeConfig(t, minimalConfig+`
[tls]
cert = "tls/cert.pem"
key = "/abs/key.pem"
[relay]
routes = { "other.test" = "127.0.0.1:3525" }
[limits]
command_timeout = "2m"
`)
	c, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	if c.DataDir != filepath.Join(dir, "data") {
		t.Errorf("data_dir = %q, want it relative to the config file", c.DataDir)
	}
	if c.TLS.Cert != filepath.Join(dir, "tls/cert.pem") || c.TLS.Key != "/abs/key.pem" {
		t.Errorf("tls paths = %q %q", c.TLS.Cert, c.TLS.Key)
	}
	if c.Domains[0] != "example.org" {
		t.Errorf("domains not lower-cased: %v", c.Domains)
	}
	if c.Limits.MaxMessageBytes != 25<<20 || c.Limits.MaxRecipients != 100 {
		t.Errorf("limits defaults = %d, %d", c.Limits.MaxMessageBytes, c.Limits.MaxRecipients)
	}
	if c.Limits.CommandTimeout.Duration != 2*time.Minute {
		t.Errorf("command_timeout = %v", c.Limits.CommandTimeout)
	}
	if c.Relay.Routes["other.test"] != "127.0.0.1:3525" {
		t.Errorf("routes = %v", c.Relay.Routes)
	}
	if !c.dmarcReject() {
		t.Error("dmarc.reject should default to true")
	}
}

func TestLoadConfigNormalizesRouteDomains(t *testing.T) {
	p := writeConfig(t, minimalConfig+`
[relay]
routes = { "Sink.Test" = "127.0.0.1:2525", "OTHER.test." = "127.0.0.1:2526" }
`)
	c, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"sink.test": "127.0.0.1:2525", "other.test": "127.0.0.1:2526"}
	if fmt.Sprint(c.Relay.Routes) != fmt.Sprint(want) {
		t.Errorf("routes = %v, want %v: keys lower-cased, without a trailing dot", c.Relay.Routes, want)
	}
}

// TestLoadConfigTakesEveryDomainTheServerTakesMailFor: the config reads
// domains by the rule the SMTP server reads recipients by, so a domain with
// an underscore, which the server takes mail for and relays to, can be a
// local domain or a route key.
func TestLoadConfigTakesEveryDomainTheServerTakesMailFor(t *testing.T) {
	p := writeConfig(t, `
hostname = "mx.example.org"
domains = ["Mail_1.example.org."]
data_dir = "data"
[relay]
routes = { "Lists_2.Example.org" = "127.0.0.1:2525" }
`)
	c, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.Domains) != "[mail_1.example.org]" || c.Relay.Routes["lists_2.example.org"] != "127.0.0.1:2525" {
		t.Errorf("domains %v, routes %v", c.Domains, c.Relay.Routes)
	}
}

func TestLoadConfigRejectsBadInput(t *testing.T) {
	tests := []struct {
		name, body, wantKey string
	}{
		{"unknown top-level key", minimalConfig + "colour = 1\n", "colour"},
		{"unknown nested key", minimalConfig + "[limits]\nmax_bytes = 1\n", "limits.max_bytes"},
		{"unknown section", minimalConfig + "[imap]\nlisten = 1\n", "imap"},
		{"wrong type", minimalConfig + "[limits]\nmax_recipients = \"ten\"\n", "max_recipients"},
		{"syntax error", minimalConfig + "[limits\n", "line"},
		{"missing hostname", `domains = ["a.test"]` + "\ndata_dir = \"d\"\n", "hostname"},
		{"bad hostname", strings.Replace(minimalConfig, "mx.example.org", "mx example", 1), "hostname"},
		{"no domains", "hostname = \"mx.a.test\"\ndata_dir = \"d\"\n", "domains"},
		{"missing data_dir", "hostname = \"mx.a.test\"\ndomains = [\"a.test\"]\n", "data_dir"},
		{"bad listen address", minimalConfig + "[listen]\nsmtp = \"25\"\n", "listen.smtp"},
		{"tls listener without cert", minimalConfig + "[listen]\nsubmissions = \":465\"\n", "tls.cert"},
		{"key without cert", minimalConfig + "[tls]\nkey = \"k.pem\"\n", "tls.cert"},
		{"negative limit", minimalConfig + "[limits]\nmax_recipients = -1\n", "limits.max_recipients"},
		{"negative data rate", minimalConfig + "[limits]\nmin_data_rate = -5\n", "limits.min_data_rate"},
		{"negative mailbox quota", minimalConfig + "[limits]\nmax_mailbox_bytes = -1\n", "limits.max_mailbox_bytes"},
		{"negative free space floor", minimalConfig + "[limits]\nmin_free_bytes = -1\n", "limits.min_free_bytes"},
		{"negative DSN return limit", minimalConfig + "[relay]\nmax_return_bytes = -1\n", "relay.max_return_bytes"},
		{"bad session time", minimalConfig + "[limits]\nmax_session_time = \"-1m\"\n", "max_session_time"},
		{"tiny line length", minimalConfig + "[limits]\nmax_line_length = 100\n", "limits.max_line_length"},
		{"@ as recipient delimiter", "recipient_delimiter = \"@\"\n" + minimalConfig, "recipient_delimiter"},
		{"tiny header limit", minimalConfig + "[limits]\nmax_header_bytes = 100\n", "limits.max_header_bytes"},
		{"header limit above the DKIM checks", minimalConfig + "[limits]\nmax_header_bytes = 2000000\n", "limits.max_header_bytes"},
		{"negative header limit", minimalConfig + "[limits]\nmax_header_bytes = -1\n", "limits.max_header_bytes"},
		{"bad duration", minimalConfig + "[limits]\ndata_timeout = \"soon\"\n", "data_timeout"},
		{"short pop3 timeout", minimalConfig + "[limits]\npop3_idle_timeout = \"1m\"\n", "limits.pop3_idle_timeout"},
		{"bad route", minimalConfig + "[relay]\nroutes = { \"b.test\" = \"nohostport\" }\n", "relay.routes"},
		{"two route keys for one domain", minimalConfig + "[relay]\nroutes = { \"b.test\" = \"h:25\", \"B.Test.\" = \"h:26\" }\n", "relay.routes"},
		{"bad smarthost", minimalConfig + "[relay]\nsmarthost = \"relay.example\"\n", "relay.smarthost"},
		{"smarthost user without password", minimalConfig + "[relay]\nsmarthost = \"r.example:587\"\nsmarthost_username = \"u\"\n", "relay.smarthost_password"},
		{"dkim selector without key", minimalConfig + "[dkim]\nselector = \"mail\"\n", "dkim.key"},
		{"https without a certificate", minimalConfig + "[listen]\nhttps = \":443\"\n", "tls.cert"},
		{"bad https address", minimalConfig + "[listen]\nhttps = \"443\"\n", "listen.https"},
		{"acme without https", minimalConfig + "[acme]\nemail = \"a@example.org\"\n", "acme.email"},
		{"acme email not an address", minimalConfig + "[listen]\nhttps = \":443\"\n[acme]\nemail = \"admin\"\n", "acme.email"},
		{"acme and tls files", minimalConfig + "[listen]\nhttps = \":443\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n[acme]\nemail = \"a@example.org\"\n", "acme.email"},
		{"acme directory not https", minimalConfig + "[listen]\nhttps = \":443\"\n[acme]\nemail = \"a@example.org\"\ndirectory = \"http://ca.test/dir\"\n", "acme.directory"},
		{"bad mta-sts mode", minimalConfig + "[mta_sts]\nmode = \"strict\"\n", "mta_sts.mode"},
		{"mta-sts max_age over a year", minimalConfig + "[mta_sts]\nmax_age = \"9000h\"\n", "mta_sts.max_age"},
		{"mta-sts max_age not whole seconds", minimalConfig + "[mta_sts]\nmax_age = \"1500ms\"\n", "mta_sts.max_age"},
		{"dnsbl not a zone", minimalConfig + "[antispam]\ndnsbl = [\"zen spamhaus\"]\n", "antispam.dnsbl"},
		{"dnsbl a bare name", minimalConfig + "[antispam]\ndnsbl = [\"zen\"]\n", "antispam.dnsbl"},
		{"rspamd not a URL", minimalConfig + "[antispam]\nrspamd = \"127.0.0.1:11333\"\n", "antispam.rspamd"},
		{"rspamd without a port", minimalConfig + "[antispam]\nrspamd = \"http://localhost\"\n", "antispam.rspamd"},
		{"rspamd with a path", minimalConfig + "[antispam]\nrspamd = \"http://localhost:11333/checkv2\"\n", "antispam.rspamd"},
		{"rspamd timeout too long", minimalConfig + "[antispam]\nrspamd = \"http://127.0.0.1:11333\"\nrspamd_timeout = \"1h\"\n", "antispam.rspamd_timeout"},
		{"greylist not a duration", minimalConfig + "[antispam]\ngreylist = \"five minutes\"\n", "greylist"},
		{"greylist too long", minimalConfig + "[antispam]\ngreylist = \"48h\"\n", "antispam.greylist"},
		{"greet delay too long", minimalConfig + "[antispam]\ngreet_delay = \"1m\"\n", "antispam.greet_delay"},
		{"negative greet delay", minimalConfig + "[antispam]\ngreet_delay = \"-1s\"\n", "greet_delay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.body)
			_, err := loadConfig(p)
			if err == nil {
				t.Fatal("loadConfig accepted a bad config")
			}
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a configError (exit code 2)", err)
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("error %q should name the file and %q", err, tt.wantKey)
			}
		})
	}
}

func TestLoadConfigACMEAndMTASTSDefaults(t *testing.T) {
	p := writeConfig(t, minimalConfig+`
[listen]
submissions = ":465"
https = ":443"
[acme]
email = "admin@example.org"
ca = "pebble.pem"
`)
	c, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.ACME.Directory != defaultACMEDirectory || c.ACME.CA != filepath.Join(filepath.Dir(p), "pebble.pem") {
		t.Errorf("acme.directory %q, acme.ca %q", c.ACME.Directory, c.ACME.CA)
	}
	if c.MTASTS.Mode != "testing" || c.MTASTS.MaxAge.Duration != 7*24*time.Hour {
		t.Errorf("mta_sts %q %s, want testing and a week", c.MTASTS.Mode, c.MTASTS.MaxAge.Duration)
	}
	if err := c.checkFiles(); err == nil || !strings.Contains(err.Error(), "acme.ca") {
		t.Errorf("a missing acme.ca file: %v, want an error naming acme.ca", err)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := loadConfig(filepath.Join(t.TempDir(), "nope.toml"))
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "nope.toml") {
		t.Fatalf("err = %v (exit %d), want exit 2 naming the file", err, exitCode(err))
	}
}

// FuzzLoadConfig: any file content gives a config or a configError naming
// the file, never a panic or another kind of error.
func FuzzLoadConfig(f *testing.F) {
	f.Add(minimalConfig)
	f.Add(minimalConfig + "[listen]\nsmtp = \":25\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n")
	f.Add(minimalConfig + "[relay]\nroutes = { \"b.test\" = \"127.0.0.1:25\" }\nretry_min = \"1m\"\n")
	f.Add(minimalConfig + "[listen]\nhttps = \":443\"\n[acme]\nemail = \"a@example.org\"\n[mta_sts]\nmode = \"enforce\"\nmax_age = \"24h\"\n")
	f.Add("hostname = 1\n")
	f.Add("[[x]]\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body string) {
		p := filepath.Join(dir, "fuzz.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := loadConfig(p)
		if err != nil {
			var ce *configError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %v is not a configError naming the file", err)
			}
			return
		}
		if c.Hostname == "" || len(c.Domains) == 0 || c.DataDir == "" {
			t.Fatalf("accepted a config without hostname, domains or data_dir: %+v", c)
		}
	})
}

func TestLoadConfigAntispam(t *testing.T) {
	c, err := loadConfig(writeConfig(t, minimalConfig+`
[antispam]
dnsbl = ["Zen.Spamhaus.org."]
rspamd = "http://127.0.0.1:11333"
greylist = "5m"
greet_delay = "0s"
`))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Antispam
	if len(a.DNSBL) != 1 || a.DNSBL[0] != "zen.spamhaus.org" || a.Rspamd != "http://127.0.0.1:11333" || a.Greylist.Duration != 5*time.Minute {
		t.Fatalf("antispam = %+v", a)
	}
	if d := c.greetDelay(); d >= 0 {
		t.Fatalf("greet_delay = \"0s\" gives %s, want off (negative)", d)
	}
	c, err = loadConfig(writeConfig(t, minimalConfig+"[antispam]\ngreylist = \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Antispam.Greylist.Duration != 0 {
		t.Fatalf("greylist = \"\" gives %s, want off", c.Antispam.Greylist.Duration)
	}
	if d := c.greetDelay(); d != 0 {
		t.Fatalf("greet_delay unset gives %s, want 0 (the MX's default)", d)
	}
}
