package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCLIHabits: global flags after the command, unknown commands named
// with one line of usage, --version, an empty queue that says so, and help
// that names the command.
func TestCLIHabits(t *testing.T) {
	cfg := initSite(t)
	t.Run("--config after the command", func(t *testing.T) {
		r := minimail(t, "", "user", "list", "--config", cfg)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		missing := filepath.Join(t.TempDir(), "nowhere.toml")
		r = minimail(t, "", "serve", "--config", missing)
		if r.code != 2 || !strings.Contains(r.stderr, missing) || strings.Contains(r.stderr, "not defined") {
			t.Fatalf("serve --config %s: exit %d: %s", missing, r.code, r.stderr)
		}
	})
	t.Run("--config after the command wins over the one before it", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nowhere.toml")
		if r := minimail(t, "", "--config", missing, "user", "list", "--config", cfg); r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"unknown command", "minimail: unknown command bogus", []string{"bogus"}},
		{"unknown subcommand", "minimail: unknown command user frobnicate", []string{"user", "frobnicate"}},
		{"unknown flag", "flag provided but not defined: -bogus", []string{"--bogus"}},
		{"unknown command flag", "flag provided but not defined: -pw", []string{"user", "add", "--pw", "x", "a@example.test"}},
		{"missing argument", "user add: want 1 argument(s): ADDR", []string{"--config", cfg, "user", "add"}},
		{"init without --hostname", "--hostname is required", []string{"init", "--domain", "example.test"}},
	} {
		t.Run(tc.name+": exit 2, the error and one line of usage", func(t *testing.T) {
			r := minimail(t, "", tc.args...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if r.code != 2 || len(lines) != 2 || !strings.Contains(lines[0], tc.want) || !strings.HasPrefix(lines[1], "usage: minimail ") {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 2, %q and one usage line", r.code, r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing (no help)", r.stdout)
			}
		})
	}
	t.Run("--version", func(t *testing.T) {
		r := minimail(t, "", "--version")
		if r.code != 0 || !regexp.MustCompile(`^minimail \S+\n$`).MatchString(r.stdout) {
			t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
		}
	})
	t.Run("empty queue: header and queue is empty", func(t *testing.T) {
		r := minimail(t, "", "--config", cfg, "queue", "list")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "LAST ERROR") || lines[1] != "queue is empty" {
			t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
		}
	})
	for _, cmd := range [][]string{{"init"}, {"serve"}, {"dns"}, {"backup"}, {"demo"}, {"user"}, {"user", "add"}, {"user", "passwd"}, {"user", "del"}, {"user", "list"}, {"queue"}, {"queue", "list"}, {"queue", "flush"}, {"queue", "drop"}} {
		name := strings.Join(cmd, " ")
		t.Run("help of "+name+" names the command", func(t *testing.T) {
			r := minimail(t, "", append(cmd, "--help")...)
			if r.code != 0 || !strings.Contains(r.stdout, "minimail ") || !regexp.MustCompile(`minimail (\[--config FILE\] )?`+name+`\b`).MatchString(r.stdout) || strings.Contains(r.stdout, "[command options]") {
				t.Fatalf("exit %d, help:\n%s", r.code, r.stdout)
			}
		})
	}
}

// TestConfigErrorsExitTwoNamingFileAndKey: every problem with the config,
// a file it names included, exits 2 (systemd's RestartPreventExitStatus=2
// then stops restarting) and names the config file and the key.
func TestConfigErrorsExitTwoNamingFileAndKey(t *testing.T) {
	site := initSite(t) // real certificate and DKIM key files to point at
	dir := filepath.Dir(site)
	cert, key := filepath.Join(dir, "tls/cert.pem"), filepath.Join(dir, "tls/key.pem")
	other := initSite(t) // a second pair: its cert does not match the first key
	otherCert := filepath.Join(filepath.Dir(other), "tls/cert.pem")
	tlsWith := func(c, k string) string {
		return "[listen]\nsubmissions = \"127.0.0.1:0\"\n[tls]\ncert = \"" + c + "\"\nkey = \"" + k + "\"\n"
	}
	for _, tc := range []struct {
		name, body, key string
		cmd             string // the command run: user list, or serve for the files only serve opens
	}{
		{"unknown key", minimalConfig + "[limits]\nmax_mesage_bytes = 5\n", "limits.max_mesage_bytes", "user list"},
		{"TOML syntax", minimalConfig + "[limits\n", "At line", "user list"},
		{"hostname missing", "domains = [\"a.test\"]\ndata_dir = \"data\"\n", "hostname", "user list"},
		{"hostname not a name", strings.Replace(minimalConfig, "mx.example.org", "mx example", 1), "hostname", "user list"},
		{"domains missing", "hostname = \"mx.a.test\"\ndata_dir = \"data\"\n", "domains", "user list"},
		{"data_dir missing", "hostname = \"mx.a.test\"\ndomains = [\"a.test\"]\n", "data_dir", "user list"},
		{"listen port too large", minimalConfig + "[listen]\nsmtp = \"127.0.0.1:99999\"\n", "listen.smtp", "serve"},
		{"listen port not a number", minimalConfig + "[listen]\npop3 = \":pop-three\"\n", "listen.pop3", "serve"},
		{"listen port missing", minimalConfig + "[listen]\nsmtp = \"127.0.0.1:\"\n", "listen.smtp", "serve"},
		{"listen without a port", minimalConfig + "[listen]\nsmtp = \"127.0.0.1\"\n", "listen.smtp", "serve"},
		{"tls listener without a certificate", minimalConfig + "[listen]\nsubmissions = \"127.0.0.1:0\"\n", "tls.cert", "serve"},
		{"tls.key without tls.cert", minimalConfig + "[tls]\nkey = \"k.pem\"\n", "tls.cert", "user list"},
		{"tls.cert file missing", minimalConfig + tlsWith("missing-cert.pem", key), "tls.cert", "serve"},
		{"tls.key file missing", minimalConfig + tlsWith(cert, "missing-key.pem"), "tls.key", "serve"},
		{"tls.cert and tls.key do not match", minimalConfig + tlsWith(otherCert, key), "tls.cert", "serve"},
		{"dkim.key file missing", minimalConfig + "[dkim]\nselector = \"mail\"\nkey = \"missing.key\"\n", "dkim.key", "serve"},
		{"dkim.key not a key", minimalConfig + "[dkim]\nselector = \"mail\"\nkey = \"" + cert + "\"\n", "dkim.key", "serve"},
		{"dkim.selector without dkim.key", minimalConfig + "[dkim]\nselector = \"mail\"\n", "dkim.key", "user list"},
		{"negative limit", minimalConfig + "[limits]\nmax_recipients = -1\n", "limits.max_recipients", "user list"},
		{"bad duration", minimalConfig + "[limits]\ndata_timeout = \"soon\"\n", "data_timeout", "user list"},
		{"wrong type", minimalConfig + "[limits]\nmax_recipients = \"many\"\n", "max_recipients", "user list"},
		{"pop3 idle timeout below RFC 1939", minimalConfig + "[limits]\npop3_idle_timeout = \"1m\"\n", "limits.pop3_idle_timeout", "user list"},
		{"smarthost port", minimalConfig + "[relay]\nsmarthost = \"relay.test:smtp-ish\"\n", "relay.smarthost", "user list"},
		{"relay.dns without a port", minimalConfig + "[relay]\ndns = \"127.0.0.1\"\n", "relay.dns", "user list"},
		{"route port too large", minimalConfig + "[relay]\nroutes = { \"b.test\" = \"127.0.0.1:70000\" }\n", "relay.routes", "user list"},
		{"negative min_password_length", minimalConfig + "[auth]\nmin_password_length = -1\n", "auth.min_password_length", "user list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.body)
			os.Mkdir(filepath.Join(filepath.Dir(p), "data"), 0o700)
			r := runMinimail(t, runOptions{timeout: 20 * time.Second}, append([]string{"--config", p}, strings.Fields(tc.cmd)...)...)
			if r.code != 2 || !strings.Contains(r.stderr, p) || !strings.Contains(r.stderr, tc.key) {
				t.Fatalf("%s: exit %d, stderr %q; want exit 2 naming %s and %s", tc.cmd, r.code, r.stderr, p, tc.key)
			}
		})
	}
	t.Run("missing config file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "minimail.toml")
		r := minimail(t, "", "--config", p, "serve")
		if r.code != 2 || !strings.Contains(r.stderr, p) {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
}
