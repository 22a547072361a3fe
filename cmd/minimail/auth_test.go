package main

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// lineConn is a raw SMTP or POP3 connection from a chosen loopback
// address, read a final reply line at a time.
type lineConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// dialFrom connects to addr from ip (127.0.0.x: one machine plays several
// clients) and reads the greeting; it skips where 127.0.0.x cannot be
// bound.
func dialFrom(t *testing.T, addr, ip string) *lineConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	lc := &lineConn{t: t, conn: c, r: bufio.NewReader(c)}
	lc.send("")
	return lc
}

// send writes cmd (nothing when empty) and returns the last line of the
// reply: SMTP continuation lines (250-...) are skipped; a POP3 reply is
// one line.
func (c *lineConn) send(cmd string) string {
	c.t.Helper()
	if cmd != "" {
		io.WriteString(c.conn, cmd+"\r\n")
	}
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("after %q: %v", cmd, err)
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n")
		}
	}
}

// wantReply sends cmd and wants a reply starting with want.
func (c *lineConn) wantReply(cmd, want string) {
	c.t.Helper()
	if got := c.send(cmd); !strings.HasPrefix(got, want) {
		c.t.Fatalf("%q: got %q, want %q", cmd, got, want)
	}
}

func smtpPlain(user, pass string) string {
	return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))
}

// TestAuthBlockedAndUnblockWithARealLockout: a phone behind a home NAT
// with an old password locks the NAT's address out of SMTP and POP3; the
// block is logged with its reason, `auth blocked` shows it and until when,
// `auth unblock` lifts it, and the right password works again at once.
// Logins without a domain get a hint and never count.
func TestAuthBlockedAndUnblockWithARealLockout(t *testing.T) {
	cfg := initSite(t)
	subAddr, pop3Addr := freePort(t), freePort(t)
	setListen(t, cfg, map[string]string{"smtp": freePort(t), "submission": subAddr, "pop3": pop3Addr})
	appendConfig(t, cfg, "", "allow_insecure_auth = false\n",
		"allow_insecure_auth = true\nmax_failures = 3\nfailure_delay = \"1ms\"\n")
	const alice, pw = "alice@example.test", "a long passphrase"
	if r := minimail(t, pw+"\n", "--config", cfg, "user", "add", alice); r.code != 0 {
		t.Fatal(r.stderr)
	}
	auth := func(args ...string) result {
		t.Helper()
		return minimail(t, "", append([]string{"--config", cfg, "auth"}, args...)...)
	}

	t.Run("no server: auth blocked says where blocks live, exit 1", func(t *testing.T) {
		dataDir := filepath.Join(filepath.Dir(cfg), "data")
		for _, args := range [][]string{{"blocked"}, {"unblock", "127.0.0.2"}, {"unblock", "all"}} {
			r := auth(args...)
			want := "no server running on " + dataDir + ": blocks are kept in the running server's memory"
			if r.code != 1 || !strings.Contains(r.stderr, want) {
				t.Fatalf("auth %v without a server: exit %d, %q; want 1 and %q", args, r.code, r.stderr, want)
			}
		}
	})

	serve := exec.Command(binary, "--config", cfg, "serve")
	logs := startServing(t, serve, 3)

	t.Run("nothing blocked yet", func(t *testing.T) {
		if r := auth("blocked"); r.code != 0 || r.stdout != "no address is blocked\n" {
			t.Fatalf("exit %d: %q %s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("logins without a domain get a hint and do not count", func(t *testing.T) {
		smtp := dialFrom(t, subAddr, "127.0.0.3")
		smtp.wantReply("EHLO phone.test", "250 ")
		pop := dialFrom(t, pop3Addr, "127.0.0.3")
		for range 5 {
			smtp.wantReply(smtpPlain("alice", "old password"), "535 5.7.8 use your full address as the user name")
			pop.wantReply("USER alice", "+OK")
			pop.wantReply("PASS old password", "-ERR [AUTH] use your full address as the user name")
		}
		if r := auth("blocked"); r.stdout != "no address is blocked\n" {
			t.Fatalf("auth blocked after logins without a domain: %q", r.stdout)
		}
	})

	// The phone's old password: POP3 polls twice, then SMTP once.
	lockedOutAt := time.Now()
	pop := dialFrom(t, pop3Addr, "127.0.0.2")
	for range 2 {
		pop.wantReply("USER "+alice, "+OK")
		pop.wantReply("PASS old password", "-ERR [AUTH] invalid user name or password")
	}
	smtp := dialFrom(t, subAddr, "127.0.0.2")
	smtp.wantReply("EHLO phone.test", "250 ")
	smtp.wantReply(smtpPlain(alice, "old password"), "535 5.7.8 authentication credentials invalid")

	t.Run("the address is locked out of SMTP and POP3, right password or not", func(t *testing.T) {
		smtp.wantReply(smtpPlain(alice, pw), "454 4.7.0")
		pop.wantReply("USER "+alice, "+OK")
		pop.wantReply("PASS "+pw, "-ERR [SYS/TEMP]")
	})

	t.Run("the block is logged with its reason", func(t *testing.T) {
		re := regexp.MustCompile(`msg=auth_blocked client=127\.0\.0\.2 until=\S+ failures=3 reason="3 failed logins from this address within 15m0s"`)
		if n := len(re.FindAllString(logs.String(), -1)); n != 1 {
			t.Fatalf("%d auth_blocked lines for 127.0.0.2, want 1:\n%s", n, logs.String())
		}
	})

	t.Run("auth blocked lists it and until when", func(t *testing.T) {
		r := auth("blocked")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "ADDRESS FAILURES BLOCKED UNTIL" {
			t.Fatalf("exit %d: %q %s", r.code, r.stdout, r.stderr)
		}
		f := strings.Fields(lines[1])
		if len(f) != 3 || f[0] != "127.0.0.2" || f[1] != "3" {
			t.Fatalf("block line %q, want 127.0.0.2 with 3 failures", lines[1])
		}
		until, err := time.Parse(time.RFC3339, f[2])
		if err != nil {
			t.Fatal(err)
		}
		// The window is 15 minutes from the first failure, which came
		// after lockedOutAt; RFC3339 drops the fraction of a second.
		if earliest := lockedOutAt.Add(15 * time.Minute).Truncate(time.Second); until.Before(earliest) || until.After(time.Now().Add(15*time.Minute)) {
			t.Fatalf("blocked until %v, want 15 minutes after the first failure (%v)", until, lockedOutAt)
		}
	})

	t.Run("a bad ADDR is a usage error", func(t *testing.T) {
		for _, bad := range []string{"nonsense", "127.0.0.256", "10.0.0.0/33", ""} {
			if r := auth("unblock", bad); r.code != 2 || !strings.Contains(r.stderr, "ADDR") {
				t.Errorf("auth unblock %q: exit %d, %q", bad, r.code, r.stderr)
			}
		}
		if r := auth("unblock"); r.code != 2 {
			t.Errorf("auth unblock without ADDR: exit %d", r.code)
		}
	})

	t.Run("another address has nothing to unblock", func(t *testing.T) {
		r := auth("unblock", "192.0.2.1")
		if r.code != 0 || r.stdout != "no failed logins counted for 192.0.2.1: nothing to unblock\n" {
			t.Fatalf("exit %d: %q %s", r.code, r.stdout, r.stderr)
		}
		if r := auth("blocked"); !strings.Contains(r.stdout, "127.0.0.2") {
			t.Fatalf("the block went with another address's unblock: %q", r.stdout)
		}
	})

	t.Run("auth unblock lifts it, with the subnet's count", func(t *testing.T) {
		r := auth("unblock", "127.0.0.2")
		want := "cleared the failed logins of 127.0.0.2\ncleared the failed logins of 127.0.0.0/24\n"
		if r.code != 0 || r.stdout != want {
			t.Fatalf("exit %d: %q, want %q; %s", r.code, r.stdout, want, r.stderr)
		}
		if r := auth("blocked"); r.stdout != "no address is blocked\n" {
			t.Fatalf("auth blocked after unblock: %q", r.stdout)
		}
		if !strings.Contains(logs.String(), "msg=admin op=auth.unblock addr=127.0.0.2") {
			t.Errorf("the unblock is not logged:\n%s", logs.String())
		}
	})

	t.Run("the right password works again at once", func(t *testing.T) {
		smtp.wantReply(smtpPlain(alice, pw), "235 2.0.0")
		pop.wantReply("USER "+alice, "+OK")
		pop.wantReply("PASS "+pw, "+OK")
		pop.wantReply("QUIT", "+OK")
	})

	t.Run("auth unblock all", func(t *testing.T) {
		again := dialFrom(t, pop3Addr, "127.0.0.4")
		// Another name: alice's own slowdown (users' counts stay) would
		// make each further wrong password of hers wait seconds.
		for range 3 {
			again.wantReply("USER nobody@example.test", "+OK")
			again.wantReply("PASS old password", "-ERR [AUTH]")
		}
		again.wantReply("USER "+alice, "+OK")
		again.wantReply("PASS "+pw, "-ERR [SYS/TEMP]")
		r := auth("unblock", "all")
		want := "cleared the failed logins of 127.0.0.4\ncleared the failed logins of 127.0.0.0/24\n"
		if r.code != 0 || r.stdout != want {
			t.Fatalf("exit %d: %q, want %q; %s", r.code, r.stdout, want, r.stderr)
		}
		again.wantReply("USER "+alice, "+OK")
		again.wantReply("PASS "+pw, "+OK")
		if r := auth("unblock", "all"); r.stdout != "no failed logins counted: nothing to unblock\n" {
			t.Fatalf("second unblock all: %q", r.stdout)
		}
	})
}

// TestControlSocketChecksUnblockTargetsAsTheCommandLineDoes: auth.unblock
// sent straight to the control socket takes the ADDRs `auth unblock`
// takes, no others.
func TestControlSocketChecksUnblockTargetsAsTheCommandLineDoes(t *testing.T) {
	s := newSite(t, "a.test", "")
	for _, tc := range []struct{ name, addr, wantErr string }{
		{"empty", "", "ADDR"},
		{"a name", "localhost", "ADDR"},
		{"a prefix too long", "192.0.2.0/33", "ADDR"},
		{"control bytes", "192.0.2.1\x00", "ADDR"},
		{"an address", "192.0.2.1", ""},
		{"a subnet", "2001:db8::/64", ""},
		{"all", "all", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := callServer(s.cfg.DataDir, request{Op: "auth.unblock", Addr: tc.addr})
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErr == "" && resp.Error != "" || !strings.Contains(resp.Error, tc.wantErr) {
				t.Fatalf("auth.unblock %q: error %q, want %q", tc.addr, resp.Error, tc.wantErr)
			}
		})
	}
}

func TestAuthCommandsHelpNamesTheCommand(t *testing.T) {
	for _, cmd := range [][]string{{"auth"}, {"auth", "blocked"}, {"auth", "unblock"}} {
		name := strings.Join(cmd, " ")
		t.Run(name, func(t *testing.T) {
			r := minimail(t, "", append(cmd, "--help")...)
			if r.code != 0 || !regexp.MustCompile(`minimail \[--config FILE\] `+name+`\b`).MatchString(r.stdout) || strings.Contains(r.stdout, "[command options]") {
				t.Fatalf("exit %d, help:\n%s", r.code, r.stdout)
			}
		})
	}
	if r := minimail(t, "", "--help"); !strings.Contains(r.stdout, "auth ") {
		t.Fatalf("minimail --help does not list auth:\n%s", r.stdout)
	}
}

// FuzzUnblockTarget: any ADDR either is refused or names a valid, masked
// network that reads back as itself from what `auth blocked` prints.
func FuzzUnblockTarget(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::ffff:192.0.2.1", "2001:db8::/64", "198.51.100.7/24", "fe80::1%eth0", "all", "", "1.2.3.4/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := unblockTarget(s)
		if err != nil {
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "" {
			t.Fatalf("unblockTarget(%q) = %v: not a valid masked prefix", s, p)
		}
		if back, err := unblockTarget(netName(p)); err != nil || back != p {
			t.Fatalf("unblockTarget(%q) = %v, shown as %q, reads back as %v, %v", s, p, netName(p), back, err)
		}
	})
}
