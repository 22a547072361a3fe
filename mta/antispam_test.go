package mta

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"minimail/mta/antispam"
	"minimail/mta/dnstest"
)

// dialFrom connects from the loopback address local (127.0.0.2, ...), so
// that a test's DNSBL can list one client and not another.
func dialFrom(t testing.TB, addr, local string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, c)
	cl.expect("220 " + testHost)
	return cl
}

// logCount is how many log lines hold every one of parts.
func (e *env) logCount(parts ...string) int {
	n := 0
	for _, line := range strings.Split(e.logs.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all && line != "" {
			n++
		}
	}
	return n
}

// A client that speaks before the greeting is refused and closed at its
// first byte, and nothing of what it pipelined is run. The wait is long
// here so that a slow machine cannot make the client look polite; the
// refusal itself does not wait for it.
func TestMX_EarlyTalkerRefused(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.GreetDelay = time.Minute })
	c, err := net.DialTimeout("tcp", e.mxAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, c)
	cl.write("EHLO bot.test\r\nMAIL FROM:<bot@spam.test>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: buy\r\n\r\nnow\r\n.\r\nQUIT\r\n")
	cl.expect("554 5.5.1 " + testHost + " protocol error")
	cl.expectClosed()
	if n := len(e.mailbox("alice@example.org")); n != 0 {
		t.Fatalf("the early talker's message was delivered (%d)", n)
	}
	if n := e.logCount(`"msg":"rejected"`, `"reason":"early_talker"`); n != 1 {
		t.Fatalf("%d early_talker log lines, want 1:\n%s", n, e.logs)
	}
}

// A client that waits gets the greeting after the default delay, and the
// session goes on as usual.
func TestMX_GreetingAfterTheDefaultDelay(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.GreetDelay = 0 })
	start := time.Now()
	cl := dial(t, e.mxAddr)
	if waited := time.Since(start); waited < DefaultGreetDelay {
		t.Fatalf("greeting after %s, before the %s wait", waited, DefaultGreetDelay)
	}
	cl.cmd("EHLO mta.remote.test", "250 ")
	if got := cl.send("bob@remote.test", []string{"alice@example.org"}, "Subject: hi\r\n\r\nhi\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("after the wait: %q", got)
	}
	if DefaultGreetDelay > time.Second {
		t.Fatalf("DefaultGreetDelay %s is over a second", DefaultGreetDelay)
	}
}

// spfSays makes SenderSPF answer result for every query.
func spfSays(result string) func(o *Options, _ *Local) {
	return func(o *Options, _ *Local) {
		o.SenderSPF = func(context.Context, net.IP, string, string) string { return result }
	}
}

func TestMX_LocalSenderNeedsSPFPass(t *testing.T) {
	e := newEnv(t, spfSays("softfail"))
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO bot.test", "250 ")
	cl.cmd("MAIL FROM:<alice@EXAMPLE.org>", "550 5.7.1 <alice@example.org> is in a local domain")
	cl.cmd("MAIL FROM:<bob@remote.test>", "250 ")
	if n := e.logCount(`"msg":"rejected"`, `"reason":"spoofed_local_sender"`, `"detail":"spf=softfail"`); n != 1 {
		t.Fatalf("%d spoofed_local_sender lines, want 1:\n%s", n, e.logs)
	}

	// DNS trouble reading our own record: try again later, not a bounce.
	tmp := newEnv(t, spfSays("temperror"))
	cl = dial(t, tmp.mxAddr)
	cl.cmd("EHLO mta.remote.test", "250 ")
	cl.cmd("MAIL FROM:<alice@example.org>", "451 4.7.1 ")

	// A client the domain's SPF record names may.
	ok := newEnv(t, spfSays("pass"))
	cl = dial(t, ok.mxAddr)
	cl.cmd("EHLO our-other-server.example.org", "250 ")
	if got := cl.send("alice@example.org", []string{"bob@example.org"}, "From: alice@example.org\r\n\r\nx\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("SPF pass: %q", got)
	}
}

// From: in a local domain needs the message authenticated for it; the same
// message through submission is delivered.
func TestMX_LocalFromNeedsAuthentication(t *testing.T) {
	var authenticated []string
	e := newEnv(t, func(o *Options, l *Local) {
		spfSays("none")(o, l)
		o.Verify = func(context.Context, net.IP, string, string, []byte) (Verdict, error) {
			return Verdict{Authenticated: authenticated}, nil
		}
	})
	msg := "From: Alice <alice@example.org>\r\nSubject: wire the money\r\n\r\nnow\r\n"
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO bot.test", "250 ")
	if got := cl.send("bounce@remote.test", []string{"bob@example.org"}, msg); !strings.HasPrefix(got, "550 5.7.1 From: <alice@example.org> is in a local domain") {
		t.Fatalf("forged From: %q", got)
	}
	if n := e.logCount(`"msg":"rejected"`, `"reason":"spoofed_local_sender"`); n != 1 {
		t.Fatalf("%d rejected lines, want 1:\n%s", n, e.logs)
	}
	authenticated = []string{"example.org"} // e.g. our own DKIM signature, forwarded back
	if got := cl.send("bounce@remote.test", []string{"bob@example.org"}, msg); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("authenticated for example.org: %q", got)
	}
	sub := dialTLS(t, e.subsAddr, e.clientTLS)
	sub.login("alice@example.org")
	if got := sub.send("alice@example.org", []string{"bob@example.org"}, msg); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("through submission: %q", got)
	}
	if n := len(e.mailbox("bob@example.org")); n != 2 {
		t.Fatalf("bob has %d messages, want 2", n)
	}
}

func TestMX_DNSBL(t *testing.T) {
	dns := dnstest.Start(t,
		"bl.test. 300 IN SOA ns.bl.test. hostmaster.bl.test. 1 3600 600 86400 60",
		"2.0.0.127.bl.test. 300 IN A 127.0.0.2",
		`2.0.0.127.bl.test. 300 IN TXT "Listed for testing"`,
	)
	dns.Hang("4.0.0.127.bl.test")
	e := newEnv(t, func(o *Options, _ *Local) {
		o.Blocklist = &antispam.DNSBL{Zones: []string{"bl.test"}, Resolver: dns.Resolver(), Timeout: 500 * time.Millisecond}
	})
	if err := e.st.AddUser("postmaster@example.org", testPass); err != nil {
		t.Fatal(err)
	}
	listed := dialFrom(t, e.mxAddr, "127.0.0.2")
	listed.cmd("EHLO listed.test", "250 ")
	listed.cmd("MAIL FROM:<bob@remote.test>", "250 ")
	listed.cmd("RCPT TO:<alice@example.org>", "554 5.7.1 client [127.0.0.2] is listed in bl.test: Listed for testing")
	listed.cmd("RCPT TO:<postmaster@example.org>", "250 ")
	listed.cmd("RCPT TO:<Postmaster>", "250 ")
	listed.cmd("DATA", "354 ")
	listed.write("Subject: why am I listed?\r\n\r\nplease\r\n.\r\n")
	listed.expect("250 ")
	listed.cmd("QUIT", "221")
	if n := len(e.mailbox("postmaster@example.org")); n != 1 {
		t.Fatalf("postmaster has %d messages, want 1", n)
	}
	waitFor(t, func() bool { return e.logCount(`"reason":"dnsbl"`, `"detail":"bl.test"`) == 1 })

	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} { // not listed; lookup times out
		cl := dialFrom(t, e.mxAddr, ip)
		cl.cmd("EHLO fine.test", "250 ")
		if got := cl.send("bob@remote.test", []string{"alice@example.org"}, "Subject: hi\r\n\r\nhi\r\n"); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("from %s: %q", ip, got)
		}
	}
	if n := len(e.mailbox("alice@example.org")); n != 2 {
		t.Fatalf("alice has %d messages, want 2", n)
	}
}

func TestMX_Greylist(t *testing.T) {
	now := testNow
	g := &antispam.Greylist{Delay: 5 * time.Minute, Now: func() time.Time { return now }}
	e := newEnv(t, func(o *Options, _ *Local) { o.Greylist = g })
	g.Store = e.st
	send := func() string {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO mta.remote.test", "250 ")
		return cl.send("bob@remote.test", []string{"alice@example.org"}, "Subject: hi\r\n\r\nhi\r\n")
	}
	for _, c := range []struct {
		after time.Duration
		want  string
	}{
		{0, "451 4.7.1 greylisted, please try again in 300 seconds"},
		{time.Minute, "451 4.7.1 greylisted, please try again in 240 seconds"},
		{4 * time.Minute, "250 "},
		{time.Second, "250 "},
	} {
		now = now.Add(c.after)
		if got := send(); !strings.HasPrefix(got, c.want) {
			t.Fatalf("+%s: %q, want %q", c.after, got, c.want)
		}
	}
	if n := e.logCount(`"msg":"deferred"`, `"reason":"greylist"`); n != 2 {
		t.Fatalf("%d greylist deferrals logged, want 2:\n%s", n, e.logs)
	}
	// Submission is never greylisted.
	sub := dialTLS(t, e.subsAddr, e.clientTLS)
	sub.login("alice@example.org")
	if got := sub.send("alice@example.org", []string{"bob@example.org"}, "From: alice@example.org\r\n\r\nx\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("submission: %q", got)
	}
}

func TestMX_Scan(t *testing.T) {
	var verdict Verdict
	var scanErr error
	var seen Envelope
	e := newEnv(t, func(o *Options, _ *Local) {
		o.Scan = func(_ context.Context, env Envelope, msg []byte) (Verdict, error) {
			seen = env
			return verdict, scanErr
		}
	})
	send := func() string {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO mta.remote.test", "250 ")
		return cl.send("bob@remote.test", []string{"alice@example.org"}, "X-Spam: No\r\nSubject: hi\r\n\r\nhi\r\n")
	}
	for _, c := range []struct {
		name    string
		verdict Verdict
		err     error
		want    string
	}{
		{"reject", Verdict{Disposition: RejectSpam, Reason: "Gtube pattern"}, nil, "550 5.7.1 Gtube pattern"},
		{"soft reject", Verdict{Disposition: DeferSpam, Reason: "try again later"}, nil, "451 4.7.1 try again later"},
		{"accept", Verdict{Message: []byte("Subject: hi\r\n\r\nhi\r\n"), Prepend: []byte("X-Spamd-Result: default: False [0.00 / 15.00]\r\n")}, nil, "250 "},
		{"down", Verdict{Message: []byte("Subject: unscanned\r\n\r\nhi\r\n")}, errors.New("connection refused"), "250 "},
	} {
		verdict, scanErr = c.verdict, c.err
		got := send()
		if !strings.HasPrefix(got, c.want) {
			t.Fatalf("%s: %q, want %q", c.name, got, c.want)
		}
		if c.want == "250 " && seen.ID != replyID(t, got) {
			t.Fatalf("%s: scanned as %q, the 250 says %q", c.name, seen.ID, got)
		}
	}
	if seen.Helo != "mta.remote.test" || seen.From != "bob@remote.test" || len(seen.Rcpts) != 1 || seen.IP.String() != "127.0.0.1" {
		t.Fatalf("envelope %+v", seen)
	}
	msgs := e.mailbox("alice@example.org")
	if len(msgs) != 2 {
		t.Fatalf("%d delivered, want 2", len(msgs))
	}
	if !bytes.Contains(msgs[0], []byte("\r\nX-Spamd-Result: default: False [0.00 / 15.00]\r\nSubject: hi\r\n")) || bytes.Contains(msgs[0], []byte("X-Spam: No")) {
		t.Fatalf("accepted message:\n%s", msgs[0])
	}
	if !bytes.Contains(msgs[1], []byte("Subject: unscanned")) {
		t.Fatalf("unscanned message lost the scanner's cleaning:\n%s", msgs[1])
	}
	if n := e.logCount(`"msg":"scan failed"`, `"result":"delivered unscanned"`); n != 1 {
		t.Fatalf("%d scan failures logged, want 1:\n%s", n, e.logs)
	}
	if n := e.logCount(`"reason":"rspamd"`); n != 2 {
		t.Fatalf("%d rspamd refusals logged, want 2:\n%s", n, e.logs)
	}
	// Submission is never scanned.
	verdict = Verdict{Disposition: RejectSpam, Reason: "no"}
	sub := dialTLS(t, e.subsAddr, e.clientTLS)
	sub.login("alice@example.org")
	if got := sub.send("alice@example.org", []string{"bob@example.org"}, "From: alice@example.org\r\n\r\nx\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("submission: %q", got)
	}
}

// Each antispam refusal is counted once under its reason, like every
// other refusal (Options.Metrics).
func TestMetrics_AntispamRefusalsAreCounted(t *testing.T) {
	dns := dnstest.Start(t,
		"bl.test. 300 IN SOA ns.bl.test. hostmaster.bl.test. 1 3600 600 86400 60",
		"2.0.0.127.bl.test. 300 IN A 127.0.0.2",
	)
	m := newCountingMetrics()
	e := newEnv(t, func(o *Options, l *Local) {
		spfSays("fail")(o, l)
		o.Metrics = m
		o.Blocklist = &antispam.DNSBL{Zones: []string{"bl.test"}, Resolver: dns.Resolver(), Timeout: 500 * time.Millisecond}
	})
	listed := dialFrom(t, e.mxAddr, "127.0.0.2")
	listed.cmd("EHLO listed.test", "250 ")
	listed.cmd("MAIL FROM:<alice@example.org>", "550 5.7.1 ")
	listed.cmd("MAIL FROM:<bob@remote.test>", "250 ")
	listed.cmd("RCPT TO:<alice@example.org>", "554 5.7.1 ")
	listed.cmd("QUIT", "221")

	e.mx.Shutdown(t.Context())
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]int{ReasonSpoofedSender: 1, ReasonDNSBL: 1}
	if !mapsEqual(m.rejected, want) {
		t.Errorf("rejected %v, want %v", m.rejected, want)
	}
}

// A client that waited for the greeting once is not tested again for a
// day (postscreen's cache): speaking at once on its next connection is no
// longer refused, while another client that does is.
func TestMX_ClientThatWaitedIsNotTestedAgain(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.GreetDelay = 300 * time.Millisecond })
	first := dialFrom(t, e.mxAddr, "127.0.0.6") // waits out the delay, then the 220
	first.cmd("QUIT", "221")

	talkAtOnce := func(local string) *client {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", e.mxAddr)
		if err != nil {
			t.Fatal(err)
		}
		cl := newClient(t, c)
		cl.write("EHLO mta.remote.test\r\n")
		return cl
	}
	again := talkAtOnce("127.0.0.6")
	again.expect("220 " + testHost)
	again.expect("250")
	again.cmd("QUIT", "221")

	stranger := talkAtOnce("127.0.0.7")
	stranger.expect("554 5.5.1 ")
	stranger.expectClosed()
}
