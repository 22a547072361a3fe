package main

import (
	"strings"
	"testing"
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
