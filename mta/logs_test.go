package mta

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestLogs_OneVocabulary: one key for one thing on every line (the client
// address is "client"), the listener named as in the config, and every
// refusal logged with its reason, the sender-identity 553 included.
func TestLogs_OneVocabulary(t *testing.T) {
	e := newEnv(t, nil)
	mx := dial(t, e.mxAddr)
	mx.cmd("EHLO client.test", "250 ")
	mx.send("bob@other.test", []string{"alice@example.org"}, "Subject: x\r\n\r\nx\r\n")
	mx.cmd("QUIT", "221 ")

	s := dialTLS(t, e.subsAddr, e.clientTLS)
	s.cmd("EHLO client.test", "250 ")
	s.cmd("AUTH PLAIN "+plain("", "alice@example.org", "wrong"), "535 5.7.8")
	s.cmd("AUTH PLAIN "+plain("", "alice@example.org", testPass), "235 ")
	s.cmd("MAIL FROM:<bob@example.org>", "553 5.7.1")
	s.cmd("QUIT", "221 ")

	p := dial(t, e.subAddr)
	p.cmd("EHLO client.test", "250 ")
	p.starttls(e.clientTLS)
	p.login("alice@example.org")
	p.send("alice@example.org", []string{"carol@remote.test"}, "From: alice@example.org\r\n\r\nx\r\n")
	p.cmd("QUIT", "221 ")

	seen := map[string]map[string]bool{} // event -> listeners
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		for _, k := range []string{"ip", "remote_ip", "remote", "addr"} {
			if _, ok := rec[k]; ok {
				t.Errorf("key %q instead of client: %s", k, line)
			}
		}
		ev, _ := rec["msg"].(string)
		l, _ := rec["listener"].(string)
		if seen[ev] == nil {
			seen[ev] = map[string]bool{}
		}
		seen[ev][l] = true
		if ev == "rejected" || ev == "auth_failed" {
			if rec["reason"] == nil && rec["result"] == nil {
				t.Errorf("refusal without its reason: %s", line)
			}
		}
	}
	for ev, listeners := range map[string][]string{
		"delivered":     {"smtp"},
		"auth_failed":   {"submissions"},
		"authenticated": {"submissions", "submission"},
		"rejected":      {"submissions"},
		"queued":        {"submission"},
	} {
		for _, l := range listeners {
			if !seen[ev][l] {
				t.Errorf("no %q line from listener %q; seen %v", ev, l, seen)
			}
		}
	}
}
