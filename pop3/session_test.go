package pop3

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"minimail/mta/guard"
)

func TestLock_SecondSessionGetsInUse(t *testing.T) {
	h := startServer(t, fixtureMaildrop(t), Options{AllowInsecureAuth: true})
	first := greeted(t, h.addr)
	first.login(alice, alicePW)

	second := greeted(t, h.addr)
	second.cmd("USER "+alice, "+OK")
	second.cmd("PASS "+alicePW, "-ERR [IN-USE] maildrop is in use by another session")
	second.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXB3", "-ERR [IN-USE]")
	// Still in AUTHORIZATION: another mailbox opens fine.
	second.login(bob, bobPW)

	// The lock goes with the first session's connection.
	first.conn.Close()
	h.waitEnded(t, 1)
	third := greeted(t, h.addr)
	third.login(alice, alicePW)
	third.cmd("STAT", "+OK 3 219")
}

func TestLock_IsPerAddressCaseInsensitive(t *testing.T) {
	h := startServer(t, fixtureMaildrop(t), Options{AllowInsecureAuth: true})
	greeted(t, h.addr).login(alice, alicePW)
	c := greeted(t, h.addr)
	c.cmd("USER ALICE@EXAMPLE.ORG", "+OK")
	c.cmd("PASS "+alicePW, "-ERR [IN-USE]")
}

func TestLock_ReleasedAfterQuit(t *testing.T) {
	h := startServer(t, fixtureMaildrop(t), Options{AllowInsecureAuth: true})
	c := greeted(t, h.addr)
	c.login(alice, alicePW)
	c.cmd("QUIT", "+OK")
	c.expectEOF()
	h.waitEnded(t, 1)
	greeted(t, h.addr).login(alice, alicePW)
}

// TestLock_NoStaleLockAcrossRestart: the lock lives in memory only, so a
// new server on the same store opens a maildrop whose session was cut off.
func TestLock_NoStaleLockAcrossRestart(t *testing.T) {
	st := fixtureMaildrop(t)
	h := startServer(t, st, Options{AllowInsecureAuth: true})
	greeted(t, h.addr).login(alice, alicePW)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.srv.Shutdown(ctx)

	h2 := startServer(t, st, Options{AllowInsecureAuth: true})
	greeted(t, h2.addr).login(alice, alicePW)
}

func TestCrash_DroppedConnectionAfterDELEKeepsMessages(t *testing.T) {
	st := fixtureMaildrop(t)
	h := startServer(t, st, Options{AllowInsecureAuth: true})
	c := greeted(t, h.addr)
	c.login(alice, alicePW)
	c.cmd("DELE 1", "+OK")
	c.cmd("DELE 2", "+OK")
	c.conn.Close()
	h.waitEnded(t, 1)
	if n := st.count(alice); n != 3 {
		t.Fatalf("after a dropped session alice has %d messages, want 3", n)
	}
}

// TestCrash_AutologoutDeletesNothing: RFC 1939 section 3 — on timeout the
// server closes without a response and without entering UPDATE.
func TestCrash_AutologoutDeletesNothing(t *testing.T) {
	st := fixtureMaildrop(t)
	var logs bytes.Buffer
	h := startServer(t, st, Options{
		AllowInsecureAuth: true,
		IdleTimeout:       200 * time.Millisecond,
		Logger:            slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	c := greeted(t, h.addr)
	c.login(alice, alicePW)
	c.cmd("DELE 1", "+OK")
	c.expectEOF()
	h.waitEnded(t, 1)
	if n := st.count(alice); n != 3 {
		t.Fatalf("after autologout alice has %d messages, want 3", n)
	}
	if !strings.Contains(logs.String(), `"result":"timeout"`) {
		t.Errorf("log does not record the timeout: %s", logs.String())
	}
	// No stale lock either.
	greeted(t, h.addr).login(alice, alicePW)
}

func TestAutologout_InAuthorizationState(t *testing.T) {
	h := startServer(t, fixtureMaildrop(t), Options{IdleTimeout: 100 * time.Millisecond})
	c := greeted(t, h.addr)
	c.expectEOF()
}

func TestQuit_DeletesInOneCall(t *testing.T) {
	md := newFakeMaildrop()
	md.users[alice] = alicePW
	md.add(alice, msg1, msg2, msg3)
	h := startServer(t, md, Options{AllowInsecureAuth: true})

	c := greeted(t, h.addr)
	c.login(alice, alicePW)
	c.cmd("QUIT", "+OK pop.test POP3 server signing off (3 messages left)")
	h.waitEnded(t, 1)
	if len(md.deletes) != 0 {
		t.Fatalf("QUIT without DELE called Delete: %v", md.deletes)
	}

	c = greeted(t, h.addr)
	c.login(alice, alicePW)
	c.cmd("DELE 3", "+OK")
	c.cmd("DELE 1", "+OK")
	c.cmd("QUIT", "+OK pop.test POP3 server signing off (1 messages left)")
	h.waitEnded(t, 1)
	if want := [][]uint64{{1, 3}}; !slices.EqualFunc(md.deletes, want, slices.Equal) {
		t.Fatalf("Delete calls %v, want %v", md.deletes, want)
	}
}

func TestQuit_FailedDeleteAnswersErr(t *testing.T) {
	md := newFakeMaildrop()
	md.users[alice] = alicePW
	md.add(alice, msg1, msg2)
	md.deleteErr = errInjected
	h := startServer(t, md, Options{AllowInsecureAuth: true})
	c := greeted(t, h.addr)
	c.login(alice, alicePW)
	c.cmd("DELE 2", "+OK")
	c.cmd("QUIT", "-ERR [SYS/TEMP] deleted messages not removed, try again later")
	c.expectEOF()
	h.waitEnded(t, 1)
	if len(md.boxes[alice]) != 2 {
		t.Fatalf("failed Delete left %d messages, want 2", len(md.boxes[alice]))
	}
}

func TestStorageFailures(t *testing.T) {
	tests := []struct {
		name   string
		inject func(*fakeMaildrop)
		cmds   [][2]string // command, reply prefix
	}{
		{"authenticate", func(f *fakeMaildrop) { f.authErr = errInjected }, [][2]string{
			{"USER " + alice, "+OK"},
			{"PASS " + alicePW, "-ERR [SYS/TEMP] cannot check credentials now"},
		}},
		{"list", func(f *fakeMaildrop) { f.listErr = errInjected }, [][2]string{
			{"USER " + alice, "+OK"},
			{"PASS " + alicePW, "-ERR [SYS/TEMP] cannot open maildrop"},
			{"STAT", "-ERR not logged in"},
		}},
		{"read", func(f *fakeMaildrop) { f.readErr = errInjected }, [][2]string{
			{"USER " + alice, "+OK"},
			{"PASS " + alicePW, "+OK"},
			{"RETR 1", "-ERR [SYS/TEMP] cannot read message"},
			{"TOP 1 0", "-ERR [SYS/TEMP] cannot read message"},
			{"STAT", "+OK 2"},
		}},
		{"message vanished", func(f *fakeMaildrop) { delete(f.bodies, 1) }, [][2]string{
			{"USER " + alice, "+OK"},
			{"PASS " + alicePW, "+OK"},
			{"RETR 1", "-ERR message is no longer in the maildrop"},
			{"RETR 2", "+OK 87 octets"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := newFakeMaildrop()
			md.users[alice] = alicePW
			md.add(alice, msg1, msg2)
			tt.inject(md)
			h := startServer(t, md, Options{AllowInsecureAuth: true})
			c := greeted(t, h.addr)
			for _, cmd := range tt.cmds {
				c.cmd(cmd[0], cmd[1])
			}
		})
	}
}

// TestFailedListReleasesLock: a maildrop that could not be opened is not
// left locked.
func TestFailedListReleasesLock(t *testing.T) {
	md := newFakeMaildrop()
	md.users[alice] = alicePW
	md.listErr = errInjected
	h := startServer(t, md, Options{AllowInsecureAuth: true})
	c := greeted(t, h.addr)
	c.cmd("USER "+alice, "+OK")
	c.cmd("PASS "+alicePW, "-ERR [SYS/TEMP]")
	md.mu.Lock()
	md.listErr = nil
	md.mu.Unlock()
	c.login(alice, alicePW)
}

func TestNewMailDuringSessionAppearsInNextSession(t *testing.T) {
	st := fixtureMaildrop(t)
	h := startServer(t, st, Options{AllowInsecureAuth: true})
	c := greeted(t, h.addr)
	c.login(alice, alicePW)
	st.add(alice, msg3)
	c.cmd("STAT", "+OK 3 219")
	c.cmd("LIST 4", "-ERR no such message")
	c.cmd("QUIT", "+OK")
	h.waitEnded(t, 1)
	c = greeted(t, h.addr)
	c.login(alice, alicePW)
	c.cmd("STAT", "+OK 4 244")
	if got := c.cmd("UIDL 4", "+OK 4 "); !strings.HasSuffix(got, "-5") {
		t.Errorf("UIDL 4 = %q, want the unique-id of store id 5", got)
	}
}

func TestAuthThrottle_SharedAndPerIP(t *testing.T) {
	throttle := &guard.AuthThrottle{MaxPerIP: 2}
	h := startServer(t, fixtureMaildrop(t), Options{AllowInsecureAuth: true, AuthThrottle: throttle})
	c := greeted(t, h.addr)
	c.cmd("USER "+alice, "+OK")
	c.cmd("PASS wrong", "-ERR [AUTH] invalid user name or password")
	// A failure recorded elsewhere (SMTP AUTH) counts too.
	throttle.Fail(netip.MustParseAddrPort(c.conn.LocalAddr().String()).Addr())
	c.cmd("USER "+alice, "+OK")
	c.cmd("PASS "+alicePW, "-ERR [SYS/TEMP] too many failed logins from your address, try again later")
	c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXB3", "-ERR [SYS/TEMP] too many failed logins")
}

func TestAuthFailDelay(t *testing.T) {
	const delay = 150 * time.Millisecond
	h := startServer(t, fixtureMaildrop(t), Options{AllowInsecureAuth: true, AuthFailDelay: delay})
	c := greeted(t, h.addr)
	c.cmd("USER "+alice, "+OK")
	start := time.Now()
	c.cmd("PASS wrong", "-ERR [AUTH]")
	if d := time.Since(start); d < delay {
		t.Fatalf("wrong password answered after %v, want at least %v", d, delay)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Run("total", func(t *testing.T) {
		h := startServer(t, fixtureMaildrop(t), Options{Limiter: &guard.ConnLimiter{Max: 1}})
		first := greeted(t, h.addr)
		second := dial(t, h.addr)
		second.expect("-ERR [SYS/TEMP] too many connections")
		second.expectEOF()
		first.cmd("QUIT", "+OK")
		h.waitEnded(t, 1)
		greeted(t, h.addr)
	})
	t.Run("per IP", func(t *testing.T) {
		h := startServer(t, fixtureMaildrop(t), Options{Limiter: &guard.ConnLimiter{MaxPerIP: 1}})
		greeted(t, h.addr)
		dial(t, h.addr).expect("-ERR [SYS/TEMP] too many connections")
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		conn, err := d.Dial("tcp", h.addr)
		if err != nil {
			t.Skipf("cannot dial from 127.0.0.2: %v", err)
		}
		defer conn.Close()
		newClient(t, conn).expect("+OK pop.test POP3 server ready")
	})
}

func TestLineLimits(t *testing.T) {
	h := startServer(t, fixtureMaildrop(t), Options{AllowInsecureAuth: true, MaxLineLength: 40})
	c := greeted(t, h.addr)
	c.cmd("NOOP "+strings.Repeat("x", 36), "-ERR line too long")
	c.cmd("USER "+strings.Repeat("x", 35), "+OK") // exactly 40: accepted
	c.send("CAPA\nQUIT")                          // bare LF from a sloppy client, then CRLF
	c.expect("+OK capability list follows")
	for c.line() != "." {
	}
	c.expect("+OK pop.test POP3 server signing off")

	// A line that never ends is not read forever.
	c = greeted(t, h.addr)
	if _, err := c.conn.Write(bytes.Repeat([]byte("x"), maxDiscard+4096)); err != nil {
		t.Fatal(err)
	}
	c.expectEOF()
}

func TestSessionLogLine(t *testing.T) {
	var logs bytes.Buffer
	h := startServer(t, fixtureMaildrop(t), Options{
		AllowInsecureAuth: true,
		Logger:            slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	c := greeted(t, h.addr)
	c.cmd("USER "+alice, "+OK")
	c.cmd("PASS secret-typo", "-ERR")
	c.login(alice, alicePW)
	c.cmd("RETR 1", "+OK")
	c.body()
	c.cmd("TOP 2 0", "+OK")
	c.body()
	c.cmd("DELE 1", "+OK")
	c.cmd("QUIT", "+OK")
	h.waitEnded(t, 1)

	if strings.Contains(logs.String(), alicePW) || strings.Contains(logs.String(), "secret-typo") {
		t.Fatalf("log contains a password: %s", logs.String())
	}
	recs := logRecords(t, &logs)
	if len(recs) != 3 {
		t.Fatalf("want the failed login, the login and the session line, got %d: %s", len(recs), logs.String())
	}
	wants := []map[string]any{
		{"msg": "auth_failed", "proto": "pop3", "client": "127.0.0.1", "user": alice, "reason": "wrong user or password"},
		{"msg": "authenticated", "proto": "pop3", "client": "127.0.0.1", "user": alice},
		{
			"msg": "pop3 session", "user": alice, "client": "127.0.0.1", "tls": false, "auth": "authenticated",
			"auth_failures": 1.0, "retrieved": 1.0, "deleted": 1.0, "result": "quit",
		},
	}
	for i, want := range wants {
		for k, v := range want {
			if recs[i][k] != v {
				t.Errorf("log line %d: %s = %v, want %v", i+1, k, recs[i][k], v)
			}
		}
	}
	if _, ok := recs[2]["duration"]; !ok {
		t.Error("session line has no duration")
	}
	for _, rec := range recs {
		if _, ok := rec["remote_ip"]; ok {
			t.Error("log names the client remote_ip: the key is client, as in every minimail log")
		}
	}
}

// TestLogNamesTheUserAndReasonOfRefusedLogins: a login refused for
// something other than its password (the maildrop in use, the address
// throttled, another user's authorization identity, a name without a
// domain, which the throttle does not count) still names the user it
// tried and why, in its auth_failed line and the session line.
func TestLogNamesTheUserAndReasonOfRefusedLogins(t *testing.T) {
	// The server writes the log between the test's reads; network I/O
	// orders them (each session's lines come before its end is reported).
	var logs bytes.Buffer
	throttle := &guard.AuthThrottle{MaxPerIP: 1}
	h := startServer(t, fixtureMaildrop(t), Options{
		AllowInsecureAuth: true,
		AuthThrottle:      throttle,
		LoginName:         testLoginName,
		Logger:            slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	holder := greeted(t, h.addr)
	holder.login(alice, alicePW)
	plain := func(authz, user, pass string) string {
		return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte(authz+"\x00"+user+"\x00"+pass))
	}
	for _, tc := range []struct {
		name   string
		cmds   []string
		reply  string
		user   string
		reason string
	}{
		{"maildrop in use", []string{"USER ALICE@example.org", "PASS " + alicePW}, "-ERR [IN-USE]", alice, "maildrop in use"},
		{"another user's authzid", []string{plain(bob, alice, alicePW)}, "-ERR [AUTH]", alice, "authorization identity differs"},
		{"name without a domain", []string{plain("", "alice", alicePW)}, "-ERR [AUTH] use your full address", "alice", "login name has no domain"},
		{"name no user can have", []string{plain("", "  x\ty@example.org", "pw")}, "-ERR [AUTH]", "  x\ty@example.org", "login name is not an address"},
		{"throttled", []string{"USER " + bob, "PASS " + bobPW}, "-ERR [SYS/TEMP]", bob, "too many failed logins"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			c := greeted(t, h.addr)
			for _, cmd := range tc.cmds[:len(tc.cmds)-1] {
				c.cmd(cmd, "+OK")
			}
			c.cmd(tc.cmds[len(tc.cmds)-1], tc.reply)
			c.cmd("QUIT", "+OK")
			h.waitEnded(t, 1)
			recs := logRecords(t, &logs)
			if len(recs) != 2 || recs[0]["msg"] != "auth_failed" || recs[1]["msg"] != "pop3 session" {
				t.Fatalf("want an auth_failed and the session line, got %s", logs.String())
			}
			for _, rec := range recs {
				if rec["user"] != tc.user {
					t.Errorf("%s: user = %q, want %q", rec["msg"], rec["user"], tc.user)
				}
			}
			if recs[0]["reason"] != tc.reason || recs[1]["auth"] != tc.reason {
				t.Errorf("reason %q, session auth %q; want %q", recs[0]["reason"], recs[1]["auth"], tc.reason)
			}
		})
	}
	holder.cmd("QUIT", "+OK") // its session line, too, comes after the reads
	h.waitEnded(t, 1)
}

// logRecords decodes JSON log lines.
func logRecords(t *testing.T, logs interface{ String() string }) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		recs = append(recs, rec)
	}
	return recs
}

func TestShutdown(t *testing.T) {
	t.Run("waits for sessions that finish", func(t *testing.T) {
		st := fixtureMaildrop(t)
		h := startServer(t, st, Options{AllowInsecureAuth: true})
		c := greeted(t, h.addr)
		c.login(alice, alicePW)
		c.cmd("DELE 1", "+OK")
		done := make(chan error, 1)
		go func() { done <- h.srv.Shutdown(context.Background()) }()
		<-h.srv.closing
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v while a session was open", err)
		default:
		}
		// The open session still finishes normally and its deletions count.
		c.cmd("QUIT", "+OK")
		if err := <-done; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if n := st.count(alice); n != 2 {
			t.Fatalf("alice has %d messages after QUIT, want 2", n)
		}
		if _, err := net.Dial("tcp", h.addr); err == nil {
			t.Fatal("listener still accepting after Shutdown")
		}
	})
	t.Run("cuts off idle sessions without deleting", func(t *testing.T) {
		st := fixtureMaildrop(t)
		h := startServer(t, st, Options{AllowInsecureAuth: true})
		c := greeted(t, h.addr)
		c.login(alice, alicePW)
		c.cmd("DELE 1", "+OK")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := h.srv.Shutdown(ctx); err != context.DeadlineExceeded {
			t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
		}
		c.expectEOF()
		if n := st.count(alice); n != 3 {
			t.Fatalf("alice has %d messages after cut-off, want 3", n)
		}
	})
	t.Run("Serve after Shutdown returns nil", func(t *testing.T) {
		srv := NewServer(newFakeMaildrop(), Options{})
		srv.Shutdown(context.Background())
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(l); err != nil {
			t.Fatalf("Serve = %v", err)
		}
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			c.Close()
			t.Fatal("the listener given to Serve after Shutdown still accepts")
		}
	})
}

// TestWrongPasswordsForOneUserSlowDownButNeverLockOut: failures for one
// user name, spread over addresses that each stay under the per-IP limit,
// make further wrong passwords for that name wait longer; the right
// password still logs in at once. The server's delays are recorded, not
// waited, so the test does not depend on how busy the machine is.
func TestWrongPasswordsForOneUserSlowDownButNeverLockOut(t *testing.T) {
	throttle := &guard.AuthThrottle{MaxPerIP: 2, MaxDelay: time.Hour}
	var mu sync.Mutex
	var delays []time.Duration
	delaysSoFar := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(delays)
	}
	throttle.Sleep = func(d time.Duration, _ <-chan struct{}) {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
	}
	h := startServer(t, fixtureMaildrop(t),
		Options{AllowInsecureAuth: true, AuthThrottle: throttle, AuthFailDelay: time.Millisecond})
	from := func(ip byte) *client {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, ip)}}
		conn, err := d.Dial("tcp", h.addr)
		if err != nil {
			t.Skipf("cannot dial from 127.0.0.%d: %v", ip, err)
		}
		t.Cleanup(func() { conn.Close() })
		c := newClient(t, conn)
		c.expectPrefix("+OK")
		return c
	}
	wrong := func(c *client) {
		c.cmd("USER "+alice, "+OK")
		c.cmd("PASS nope", "-ERR [AUTH]")
	}
	a := from(1)
	wrong(a)
	wrong(a) // two failures for alice: the per-user allowance
	wrong(from(2))
	wrong(from(3))
	got := delaysSoFar()
	if len(got) != 4 || got[0] != time.Millisecond || got[1] != time.Millisecond {
		t.Fatalf("delays %v: want the base delay for the first two failures", got)
	}
	if !(got[2] > got[1] && got[3] > got[2]) {
		t.Fatalf("delays %v: want each failure past the allowance to wait longer", got)
	}

	from(4).login(alice, alicePW)
	if after := delaysSoFar(); len(after) != len(got) {
		t.Fatalf("the right password was delayed (%v): the user was slowed down, not only the guesser", after[len(got):])
	}
}
