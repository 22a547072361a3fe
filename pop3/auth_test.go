package pop3

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"minimail/mta/guard"
)

// TestLoginWithoutDomain: a client set up with "alice" instead of
// alice@example.org is told to use the full address, and its attempts are
// no password guesses: they neither block the address nor slow the user.
func TestLoginWithoutDomain(t *testing.T) {
	var mu sync.Mutex
	var delays []time.Duration
	throttle := &guard.AuthThrottle{MaxPerIP: 2, MaxPerSubnet: 1000, Sleep: func(d time.Duration, _ <-chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		delays = append(delays, d)
	}}
	// Read once the session has ended, after every line it wrote.
	var logs bytes.Buffer
	h := startServer(t, fixtureMaildrop(t), Options{
		AllowInsecureAuth: true,
		AuthThrottle:      throttle,
		AuthFailDelay:     time.Millisecond,
		LoginName:         testLoginName,
		Logger:            slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	const hint = "-ERR [AUTH] use your full address as the user name"
	plain := func(authz, user, pass string) string {
		return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte(authz+"\x00"+user+"\x00"+pass))
	}
	c := greeted(t, h.addr)
	for _, tc := range []struct{ name, authz, user, pass string }{
		{"a bare local part, right password", "", "alice", alicePW},
		{"a bare local part, wrong password", "", "alice", "wrong"},
		{"upper case", "", "ALICE", alicePW},
		{"surrounding spaces", "", " alice\t", alicePW},
		{"with an authorization identity", alice, "alice", alicePW},
	} {
		t.Run(tc.name+" over AUTH PLAIN", func(t *testing.T) {
			c.cmd(plain(tc.authz, tc.user, tc.pass), hint)
		})
		if tc.authz != "" || strings.TrimSpace(tc.user) != tc.user {
			continue // USER takes one argument, and has no authorization identity
		}
		t.Run(tc.name+" over USER/PASS", func(t *testing.T) {
			c.cmd("USER "+tc.user, "+OK")
			c.cmd("PASS "+tc.pass, hint)
		})
	}
	t.Run("no delay was asked for", func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		if len(delays) != 0 {
			t.Fatalf("delays %v, want none", delays)
		}
	})
	ip := netip.MustParseAddrPort(c.conn.LocalAddr().String()).Addr()
	t.Run("the address is not blocked", func(t *testing.T) {
		if throttle.Blocked(ip) {
			t.Fatal("blocked after logins without a domain")
		}
		c.login(alice, alicePW)
		c.cmd("QUIT", "+OK")
		h.waitEnded(t, 1)
	})
	t.Run("the log gives the reason", func(t *testing.T) {
		var reasons []string
		for _, rec := range logRecords(t, &logs) {
			if rec["msg"] == "auth_failed" {
				reasons = append(reasons, rec["reason"].(string))
			}
		}
		if len(reasons) == 0 || reasons[0] != "login name has no domain" {
			t.Fatalf("auth_failed reasons %q, want \"login name has no domain\"", reasons)
		}
	})
}
