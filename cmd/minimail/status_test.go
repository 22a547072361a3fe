package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimail/mta/remote/smtptest"
)

// TestStatus: version, whether a server runs and on which listeners, the
// queue and the certificate's names and expiry, with and without a
// server (exit 1 when none runs, after saying all it can).
func TestStatus(t *testing.T) {
	cfg := initSite(t)
	r := minimail(t, "", "--config", cfg, "status")
	for _, want := range []string{"minimail ", "server:      not running", "queue:       empty", "certificate: ", "days left"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status without a server lacks %q:\n%s", want, r.stdout)
		}
	}
	if r.code != 1 {
		t.Errorf("status without a server: exit %d, want 1", r.code)
	}

	// Ports of its own: init's fixed trial ports would collide with another
	// run of the suite, or with a trial server on this machine.
	setListen(t, cfg, map[string]string{"smtp": freePort(t), "pop3": freePort(t)})
	startServe(t, cfg, 2)
	r = minimail(t, "", "--config", cfg, "status")
	for _, want := range []string{"server:      running, pid ", "listen.smtp", "listen.pop3", "queue:       empty", "mx.example.test"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	if r.code != 0 {
		t.Errorf("status: exit %d %s", r.code, r.stderr)
	}
}

// TestStatusExitCodes: a healthy server exits 0 and shows each listener
// up with its certificate; one whose listeners present a certificate
// expiring within a week, or whose oldest queued message has waited longer
// than relay.delay_notice, exits 1 and says why.
func TestStatusExitCodes(t *testing.T) {
	t.Run("healthy", func(t *testing.T) {
		a := newSite(t, "a.test", "")
		r := minimail(t, "", "--config", a.cfg.path, "status")
		if r.code != 0 {
			t.Fatalf("status: exit %d, want 0:\n%s%s", r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{"up ", "listen.smtp", "listen.pop3s", "up, certificate for mx.a.test, 364 days left", "queue:       empty", "store:       ", "last hour:   0 received"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("status lacks %q:\n%s", want, r.stdout)
			}
		}
		if n := strings.Count(r.stdout, "up, certificate for mx.a.test"); n != 5 {
			t.Errorf("%d listeners show the certificate, want all 5:\n%s", n, r.stdout)
		}
	})

	t.Run("certificate expiring in 5 days", func(t *testing.T) {
		a := newSite(t, "a.test", "")
		a.stop(t)
		certPEM, keyPEM, err := selfSigned("mx.a.test", time.Now().Add(-360*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(a.dir, "cert.pem"), certPEM, 0o600)
		os.WriteFile(filepath.Join(a.dir, "key.pem"), keyPEM, 0o600)
		a.start(t)
		r := minimail(t, "", "--config", a.cfg.path, "status")
		if r.code != 1 {
			t.Fatalf("status: exit %d, want 1:\n%s%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "PROBLEM:     listen.smtp: certificate for mx.a.test: 4 days left") {
			t.Errorf("status does not name the expiring certificate:\n%s", r.stdout)
		}
	})

	t.Run("queued longer than delay_notice", func(t *testing.T) {
		a := newSite(t, "a.test", fmt.Sprintf("[relay]\nretry_min = \"1h\"\ndelay_notice = \"1ms\"\nroutes = { \"far.test\" = %q }\n", smtptest.DownAddr(t)))
		a.addUser(t, "bob@a.test")
		id := submitForID(t, a, "bob@a.test", []string{"carol@far.test"}, testMessage("bob@a.test", "carol@far.test", "waiting", "x\r\n"))
		waitFor(t, "the first attempt", func() bool {
			entries, _ := a.srv.st.QueueEntries()
			return len(entries) == 1 && entries[0].Attempts > 0
		})
		r := minimail(t, "", "--config", a.cfg.path, "status")
		if r.code != 1 || !strings.Contains(r.stdout, "PROBLEM:     queue: message "+id) || !strings.Contains(r.stdout, "last error: ") {
			t.Fatalf("status: exit %d, want 1 naming %s:\n%s%s", r.code, id, r.stdout, r.stderr)
		}
	})
}

// A listener the server names but that does not answer is a problem, so
// status exits 1 (printStatus fails on any problem printListeners finds).
func TestStatusNamesAListenerThatIsDown(t *testing.T) {
	var out strings.Builder
	cfg := &Config{Hostname: "mx.a.test"}
	addr := smtptest.DownAddr(t)
	problems := printListeners(&out, cfg, map[string]string{"listen.smtp": addr}, time.Now())
	if len(problems) != 1 || !strings.Contains(problems[0], "listen.smtp ("+addr+") is down") {
		t.Errorf("problems %q, want listen.smtp down", problems)
	}
	if !strings.Contains(out.String(), "listen.smtp") || !strings.Contains(out.String(), "DOWN") {
		t.Errorf("status output does not show it down:\n%s", out.String())
	}
}
