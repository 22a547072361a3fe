package mta

import (
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"minimail/mta/guard"
)

// TestAuth_LoginWithoutDomain: a client set up with "alice" instead of
// alice@example.org is told to use the full address, and its attempts are
// no password guesses: they neither block the address nor slow the user.
func TestAuth_LoginWithoutDomain(t *testing.T) {
	var d delays
	e := newEnv(t, func(o *Options, _ *Local) {
		o.AuthThrottle = &guard.AuthThrottle{MaxPerIP: 2, MaxPerSubnet: 1000, Sleep: d.sleep}
		o.AuthFailDelay = 10 * time.Millisecond
	})
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	const hint = "535 5.7.8 use your full address as the user name"
	cl := dialTLSFrom(t, e, net.IPv4(127, 0, 0, 1))
	for _, tc := range []struct{ name, authz, user, pass string }{
		{"a bare local part, right password", "", "alice", testPass},
		{"a bare local part, wrong password", "", "alice", "wrong"},
		{"surrounding spaces", "", " alice\t", testPass},
		{"upper case", "", "ALICE", testPass},
		{"a control byte", "", "ali\x01ce", testPass},
		{"with an authorization identity", "alice@example.org", "alice", testPass},
	} {
		t.Run(tc.name+" over PLAIN", func(t *testing.T) {
			cl.cmd("AUTH PLAIN "+plain(tc.authz, tc.user, tc.pass), hint)
		})
		if tc.authz != "" {
			continue // LOGIN has no authorization identity
		}
		t.Run(tc.name+" over LOGIN", func(t *testing.T) {
			cl.cmd("AUTH LOGIN "+b64(tc.user), "334 ")
			cl.cmd(b64(tc.pass), hint)
		})
	}
	t.Run("no delay was asked for", func(t *testing.T) {
		if got := d.list(); len(got) != 0 {
			t.Fatalf("delays %v, want none", got)
		}
	})
	t.Run("the address is not blocked: the full address logs in", func(t *testing.T) {
		cl.cmd("AUTH PLAIN "+plain("", "alice@example.org", testPass), "235 2.0.0")
	})
	t.Run("the log gives the reason", func(t *testing.T) {
		if !strings.Contains(e.logs.String(), `"reason":"login name has no domain"`) {
			t.Fatalf("no reason logged for a name without a domain:\n%s", e.logs)
		}
	})
	t.Run("wrong passwords for a full address still block", func(t *testing.T) {
		c := dialTLSFrom(t, e, net.IPv4(127, 0, 0, 2))
		c.cmd("AUTH PLAIN "+plain("", "alice@example.org", "wrong1"), "535 5.7.8 authentication credentials invalid")
		c.cmd("AUTH PLAIN "+plain("", "alice@example.org", "wrong2"), "535 5.7.8 authentication credentials invalid")
		c.cmd("AUTH PLAIN "+plain("", "alice", testPass), "454 4.7.0")
	})
}
