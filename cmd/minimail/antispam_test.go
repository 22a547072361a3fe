package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"minimail/mta/antispam/rspamdtest"
)

// mxFrom sends msg to the site's MX from the loopback address local and
// returns the error of the first step that failed (nil: 250 after DATA).
func (s *site) mxFrom(t *testing.T, local, from string, rcpts []string, msg []byte) error {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := d.Dial("tcp", s.srv.addrs["listen.smtp"])
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	return c.SendMail(from, rcpts, bytes.NewReader(msg))
}

func wantSMTPError(t *testing.T, what string, err error, code int, text string) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != code || !strings.Contains(se.Message, text) {
		t.Fatalf("%s: %v, want %d ... %s", what, err, code, text)
	}
}

// The proof for own domains: an MX client may not send as a local
// user; the same message through submission is delivered.
func TestMXRefusesAForgedLocalSender(t *testing.T) {
	s := newSite(t, "example.test", "")
	s.addUser(t, "alice@example.test")
	s.addUser(t, "bob@example.test")
	s.dns.Add(t, `example.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"`)
	msg := testMessage("alice@example.test", "bob@example.test", "from alice", "hi\n")
	err := s.mxFrom(t, "127.0.0.1", "alice@example.test", []string{"bob@example.test"}, msg)
	wantSMTPError(t, "MAIL FROM a local user on the MX", err, 550, "is in a local domain")
	// The envelope of an outside domain does not hide a local From:.
	err = s.mxFrom(t, "127.0.0.1", "bounces@elsewhere.test", []string{"bob@example.test"}, msg)
	wantSMTPError(t, "From: a local user on the MX", err, 550, "From: <alice@example.test> is in a local domain")
	if err := s.submit(t, "alice@example.test", []string{"bob@example.test"}, msg); err != nil {
		t.Fatalf("submission: %v", err)
	}
	s.waitMessages(t, "bob@example.test", 1)
	if n := strings.Count(s.logs.String(), "reason=spoofed_local_sender"); n != 2 {
		t.Fatalf("%d spoofed_local_sender refusals logged, want 2:\n%s", n, s.logs)
	}
}

func TestMXDNSBL(t *testing.T) {
	s := newSite(t, "example.test", "[antispam]\ndnsbl = [\"bl.test\"]\n")
	s.addUser(t, "alice@example.test")
	s.addUser(t, "postmaster@example.test")
	s.dns.Add(t, "bl.test. 300 IN SOA ns.bl.test. hostmaster.bl.test. 1 3600 600 86400 60")
	s.dns.Add(t, "2.0.0.127.bl.test. 300 IN A 127.0.0.2")
	s.dns.Add(t, `2.0.0.127.bl.test. 300 IN TXT "Listed for testing, see https://bl.test/2"`)
	s.dns.Fail("4.0.0.127.bl.test")
	s.dns.Hang("5.0.0.127.bl.test") // a timeout: the RCPT waits antispam.DefaultDNSBLTimeout
	msg := testMessage("bob@remote.test", "alice@example.test", "hello", "hi\n")

	err := s.mxFrom(t, "127.0.0.2", "bob@remote.test", []string{"alice@example.test"}, msg)
	wantSMTPError(t, "listed client", err, 554, "listed in bl.test: Listed for testing, see https://bl.test/2")
	if err := s.mxFrom(t, "127.0.0.2", "bob@remote.test", []string{"postmaster@example.test"}, msg); err != nil {
		t.Fatalf("listed client to postmaster: %v", err)
	}
	for _, ip := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} { // not listed; SERVFAIL; timeout
		if err := s.mxFrom(t, ip, "bob@remote.test", []string{"alice@example.test"}, msg); err != nil {
			t.Fatalf("from %s: %v", ip, err)
		}
	}
	s.waitMessages(t, "alice@example.test", 3)
	s.waitMessages(t, "postmaster@example.test", 1)
	if n := countLines(s.logs.String(), "reason=dnsbl", "detail=bl.test"); n != 1 {
		t.Fatalf("%d dnsbl refusals logged, want 1:\n%s", n, s.logs)
	}
	if !strings.Contains(s.logs.String(), `msg="dnsbl lookup failed"`) {
		t.Fatalf("the failed lookups were not logged:\n%s", s.logs)
	}
}

func TestMXGreylistIsWired(t *testing.T) {
	s := newSite(t, "example.test", "[antispam]\ngreylist = \"5m\"\n")
	s.addUser(t, "alice@example.test")
	msg := testMessage("bob@remote.test", "alice@example.test", "hello", "hi\n")
	err := s.mxFrom(t, "127.0.0.1", "bob@remote.test", []string{"alice@example.test"}, msg)
	wantSMTPError(t, "first attempt", err, 451, "greylisted, please try again in 300 seconds")
	if err := s.submit(t, "alice@example.test", []string{"alice@example.test"}, testMessage("alice@example.test", "alice@example.test", "note", "x\n")); err != nil {
		t.Fatalf("submission is greylisted: %v", err)
	}
}

// An early talker is refused with the default wait, which the site runs
// with (its config does not set antispam.greet_delay).
func TestMXEarlyTalker(t *testing.T) {
	s := newSite(t, "example.test", "")
	conn, err := net.DialTimeout("tcp", s.srv.addrs["listen.smtp"], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(conn, "EHLO bot.test\r\n")
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "554 5.5.1 ") {
		t.Fatalf("early talker got %q", line)
	}
	waitFor(t, "the refusal logged", func() bool { return strings.Contains(s.logs.String(), "reason=early_talker") })
}

// A real rspamd: GTUBE refused with 550, a clean message delivered with the
// score, and once rspamd is stopped, mail is delivered unscanned with a
// warning.
func TestMXRspamd(t *testing.T) {
	rs := rspamdtest.Start(t)
	s := newSite(t, "example.test", "[antispam]\nrspamd = \""+rs.URL+"\"\n")
	s.addUser(t, "alice@example.test")
	gtube := testMessage("bob@remote.test", "alice@example.test", "test", rspamdtest.GTUBE+"\n")
	err := s.mxFrom(t, "127.0.0.1", "bob@remote.test", []string{"alice@example.test"}, gtube)
	wantSMTPError(t, "GTUBE", err, 550, "Gtube pattern")

	clean := append([]byte("X-Spamd-Result: default: False [-100.00 / 15.00]\r\nX-Spam: No\r\n"),
		testMessage("bob@remote.test", "alice@example.test", "lunch", "See you at noon.\n")...)
	if err := s.mxFrom(t, "127.0.0.1", "bob@remote.test", []string{"alice@example.test"}, clean); err != nil {
		t.Fatalf("clean message: %v\n%s", err, rs.Output())
	}
	got := s.waitMessages(t, "alice@example.test", 1)[0]
	if !bytes.Contains(got, []byte("X-Spamd-Result: default: False [0.00 / 15.00]")) || bytes.Contains(got, []byte("-100.00")) || bytes.Contains(got, []byte("X-Spam: No")) {
		t.Fatalf("clean message as stored:\n%s", got)
	}

	rs.Stop(t)
	if err := s.mxFrom(t, "127.0.0.1", "bob@remote.test", []string{"alice@example.test"}, clean); err != nil {
		t.Fatalf("rspamd stopped: %v", err)
	}
	got = s.waitMessages(t, "alice@example.test", 2)[1]
	if bytes.Contains(got, []byte("X-Spamd-Result")) || bytes.Contains(got, []byte("X-Spam: No")) {
		t.Fatalf("unscanned message carries a verdict:\n%s", got)
	}
	if !strings.Contains(s.logs.String(), `msg="scan failed"`) || !strings.Contains(s.logs.String(), "delivered unscanned") {
		t.Fatalf("no warning for the unscanned message:\n%s", s.logs)
	}
}

// The actions the test rspamd cannot be made to give, from a stand-in
// that answers as rspamd does.
func TestMXRspamdActions(t *testing.T) {
	var reply string
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, reply)
	}))
	defer fake.Close()
	s := newSite(t, "example.test", "[antispam]\nrspamd = \""+fake.URL+"\"\n")
	s.addUser(t, "alice@example.test")
	delivered := 0
	for _, c := range []struct {
		name, reply string
		code        int    // 0: delivered
		want        string // in the reply, or in the stored message
	}{
		{"add header", `{"action":"add header","score":7.5,"required_score":15,"symbols":{"BAYES_SPAM":{"score":7.5}}}`, 0,
			"X-Spam: Yes\r\nX-Spamd-Result: default: True [7.50 / 15.00];\r\n\tBAYES_SPAM(7.50)\r\n"},
		{"rewrite subject", `{"action":"rewrite subject","score":9,"required_score":15,"subject":"[SPAM] hello"}`, 0,
			"Subject: [SPAM] hello\r\n"},
		{"soft reject", `{"action":"soft reject","score":1,"required_score":15,"messages":{"smtp_message":"Try again later"}}`, 451, "Try again later"},
		{"greylist", `{"action":"greylist","score":4,"required_score":15}`, 451, "try again later"},
		{"reject without a message", `{"action":"reject","score":20,"required_score":15}`, 550, "message refused as spam"},
		{"garbage", `<html>Bad Gateway</html>`, 0, "Subject: hello\r\n"},
	} {
		reply = c.reply
		err := s.mxFrom(t, "127.0.0.1", "bob@remote.test", []string{"alice@example.test"},
			testMessage("bob@remote.test", "alice@example.test", "hello", "hi\n"))
		if c.code != 0 {
			wantSMTPError(t, c.name, err, c.code, c.want)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		delivered++
		got := s.waitMessages(t, "alice@example.test", delivered)[delivered-1]
		if !bytes.Contains(got, []byte(c.want)) {
			t.Fatalf("%s: stored message lacks %q:\n%s", c.name, c.want, got)
		}
		if c.name == "rewrite subject" && bytes.Count(got, []byte("Subject:")) != 1 {
			t.Fatalf("%s: two subjects:\n%s", c.name, got)
		}
	}
}

// countLines counts the log lines that contain every one of parts.
func countLines(logs string, parts ...string) int {
	n := 0
lines:
	for _, line := range strings.Split(logs, "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		n++
	}
	return n
}
