package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"minimail/mta/dnstest"
	"minimail/store"
)

// site is one in-process minimail for end-to-end tests, started from a real
// config file through startServer, as `serve` does.
type site struct {
	dns    *dnstest.Server // every lookup the site makes goes here
	domain string
	dir    string
	cfg    *Config
	srv    *server
	logs   *syncBuffer
}

// newSite writes a config for domain with every listener on an ephemeral
// loopback port (plus extra TOML) and starts it.
func newSite(t *testing.T, domain, extra string) *site {
	t.Helper()
	s := &site{domain: domain, dir: t.TempDir(), dns: dnstest.Start(t)}
	certPEM, keyPEM, err := selfSigned("mx."+domain, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(s.dir, "data"), 0o700)
	os.WriteFile(filepath.Join(s.dir, "cert.pem"), certPEM, 0o600)
	os.WriteFile(filepath.Join(s.dir, "key.pem"), keyPEM, 0o600)
	cfg := fmt.Sprintf(`hostname = "mx.%s"
domains = [%q]
data_dir = "data"
[listen]
smtp = "127.0.0.1:0"
submission = "127.0.0.1:0"
submissions = "127.0.0.1:0"
pop3 = "127.0.0.1:0"
pop3s = "127.0.0.1:0"
metrics = "127.0.0.1:0"
[tls]
cert = "cert.pem"
key = "key.pem"
[auth]
failure_delay = "10ms"
[limits]
max_connections_per_ip = 1000
%s
[relay]
dns = %q
%s`, domain, domain, extraTop(extra), s.dns.Addr, extraRelay(extra))
	path := filepath.Join(s.dir, "minimail.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cfg, err = loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	s.start(t)
	return s
}

// extraTop and extraRelay split a test's extra TOML: lines before a
// "[relay]" line go with the other tables, lines after it into [relay] (which
// newSite writes itself, to point DNS at the test's server).
func extraTop(extra string) string {
	top, _, _ := strings.Cut(extra, "[relay]\n")
	return top
}

func extraRelay(extra string) string {
	_, relay, _ := strings.Cut(extra, "[relay]\n")
	return relay
}

func (s *site) start(t *testing.T) {
	t.Helper()
	s.logs = &syncBuffer{}
	srv, err := startServer(s.cfg, slog.New(slog.NewTextHandler(s.logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	t.Cleanup(func() { srv.stop(5 * time.Second) })
}

func (s *site) stop(t *testing.T) {
	t.Helper()
	if err := s.srv.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.srv = nil
}

func (s *site) addUser(t *testing.T, addr string) {
	t.Helper()
	if err := s.srv.st.AddUser(addr, "pw-"+addr); err != nil {
		t.Fatal(err)
	}
}

// submit sends msg as user over submission with STARTTLS and AUTH PLAIN.
func (s *site) submit(t *testing.T, user string, rcpts []string, msg []byte) error {
	t.Helper()
	c, err := smtp.DialStartTLS(s.srv.addrs["listen.submission"], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, "pw-"+user)); err != nil {
		t.Fatal(err)
	}
	return c.SendMail(user, rcpts, bytes.NewReader(msg))
}

// waitMessages waits until addr's mailbox holds n messages and returns them.
func (s *site) waitMessages(t *testing.T, addr string, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		list, err := s.srv.st.List(addr)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) >= n {
			var out [][]byte
			for _, m := range list {
				b, err := s.srv.st.Read(addr, m.ID)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, b)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d message(s), want %d; logs:\n%s", addr, len(list), n, s.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testMessage(from, to, subject, body string) []byte {
	return []byte(crlf(fmt.Sprintf("From: %s\nTo: %s\nSubject: %s\nDate: Mon, 02 Jan 2026 15:04:05 +0000\nMessage-ID: <%s@test>\n\n%s", from, to, subject, strings.ReplaceAll(subject, " ", "."), body)))
}

// crlf gives every line of s a CRLF ending.
func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// TestRelayBetweenTwoServers is the relay issue's proof: A routes b.test
// to B over real sockets.
func TestRelayBetweenTwoServers(t *testing.T) {
	b := newSite(t, "b.test", "")
	b.addUser(t, "alice@b.test")
	a := newSite(t, "a.test", fmt.Sprintf("[relay]\nretry_min = \"1h\"\nroutes = { \"b.test\" = %q }\n", b.srv.addrs["listen.smtp"]))
	a.addUser(t, "bob@a.test")

	t.Run("submission on A arrives in B's mailbox", func(t *testing.T) {
		msg := testMessage("bob@a.test", "alice@b.test", "first", "hello\r\n")
		if err := a.submit(t, "bob@a.test", []string{"alice@b.test"}, msg); err != nil {
			t.Fatal(err)
		}
		got := b.waitMessages(t, "alice@b.test", 1)
		if !bytes.HasSuffix(got[0], msg) {
			t.Fatalf("B stored:\n%q\nsent %q", got[0], msg)
		}
	})

	t.Run("550 from B bounces into the sender's mailbox on A", func(t *testing.T) {
		msg := testMessage("bob@a.test", "nobody@b.test", "to nobody", "hello\r\n")
		if err := a.submit(t, "bob@a.test", []string{"nobody@b.test"}, msg); err != nil {
			t.Fatal(err)
		}
		got := a.waitMessages(t, "bob@a.test", 1)
		for _, want := range []string{"Return-Path: <>", "multipart/report", "report-type=delivery-status", "Final-Recipient: rfc822; nobody@b.test", "Status: 5.1.1", "Subject: to nobody"} {
			if !bytes.Contains(got[0], []byte(want)) {
				t.Errorf("bounce lacks %q:\n%s", want, got[0])
			}
		}
	})

	t.Run("B down: queued; B up and flush: delivered exactly once", func(t *testing.T) {
		bAddr := b.srv.addrs["listen.smtp"]
		b.stop(t)
		msg := testMessage("bob@a.test", "alice@b.test", "while down", "queued\r\n")
		if err := a.submit(t, "bob@a.test", []string{"alice@b.test"}, msg); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "A to record a failed attempt", func() bool {
			entries, _ := a.srv.st.QueueEntries()
			return len(entries) == 1 && entries[0].Attempts > 0
		})
		// B comes back on the same address; retry_min is an hour, so only
		// a flush delivers it now.
		b.cfg.Listen.SMTP = bAddr
		b.start(t)
		if _, err := callServer(a.cfg.DataDir, request{Op: "queue.flush"}); err != nil {
			t.Fatal(err)
		}
		got := b.waitMessages(t, "alice@b.test", 2)
		if !bytes.HasSuffix(got[1], msg) {
			t.Fatalf("second message:\n%s", got[1])
		}
		waitFor(t, "A's queue to empty", func() bool {
			entries, _ := a.srv.st.QueueEntries()
			return len(entries) == 0
		})
		if list, _ := b.srv.st.List("alice@b.test"); len(list) != 2 {
			t.Fatalf("alice has %d messages, want exactly 2", len(list))
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pop3Fetch logs in over pop3s, retrieves every message and deletes them.
func pop3Fetch(t *testing.T, addr, user string) [][]byte {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	p := newPOP3Client(conn)
	mustOK := func(cmd string) string {
		line, err := p.ok(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return line
	}
	mustOK("")
	mustOK("USER " + user)
	mustOK("PASS pw-" + user)
	var n int
	fmt.Sscanf(mustOK("STAT"), "+OK %d", &n)
	var out [][]byte
	for i := 1; i <= n; i++ {
		msg, err := p.multi(fmt.Sprintf("RETR %d", i))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msg)
		mustOK(fmt.Sprintf("DELE %d", i))
	}
	mustOK("QUIT")
	return out
}

// TestSMTPInPOP3OutByteExact: what a sender hands the MX is what RETR gives
// back, after the trace headers: dot lines, 8-bit text, a 5 MiB attachment.
func TestSMTPInPOP3OutByteExact(t *testing.T) {
	s := newSite(t, "example.test", "")
	s.addUser(t, "alice@example.test")
	var body bytes.Buffer
	body.WriteString(".leading dot\r\n..two dots\r\n.\r\nGrüße, ¡hola! \xff\xfe raw 8-bit\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	chunk := bytes.Repeat([]byte("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4"), 1)
	for body.Len() < 5<<20 {
		body.Write(chunk)
		body.WriteString("\r\n")
	}
	body.WriteString("--b--\r\n")
	msg := append(testMessage("bob@other.test", "alice@example.test", "big", ""), body.Bytes()...)

	c, err := smtp.Dial(s.srv.addrs["listen.smtp"])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("bob@other.test", []string{"alice@example.test"}, bytes.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	got := pop3Fetch(t, s.srv.addrs["listen.pop3s"], "alice@example.test")
	if len(got) != 1 {
		t.Fatalf("fetched %d messages", len(got))
	}
	if !bytes.HasSuffix(got[0], msg) {
		t.Fatalf("RETR did not return the message byte-exact (got %d octets, sent %d)", len(got[0]), len(msg))
	}
	for _, h := range []string{"Return-Path: <bob@other.test>\r\n", "Delivered-To: alice@example.test\r\n", "Received: from "} {
		if !bytes.Contains(got[0][:len(got[0])-len(msg)], []byte(h)) {
			t.Errorf("trace headers lack %q", h)
		}
	}
	if list, _ := s.srv.st.List("alice@example.test"); len(list) != 0 {
		t.Fatalf("%d messages left after DELE and QUIT", len(list))
	}
}

// TestSharedCopiesKeepTheirOwnHeads: one transaction for two mailboxes,
// with a small message (whose copies' heads the store keeps with the shared
// body) and a big one (whose copies keep theirs in the mailboxes): each
// mailbox retrieves the message byte-exact under its own Delivered-To, and
// the second mailbox still does after the first deleted its copies.
func TestSharedCopiesKeepTheirOwnHeads(t *testing.T) {
	s := newSite(t, "example.test", "")
	rcpts := []string{"alice@example.test", "carol@example.test"}
	for _, r := range rcpts {
		s.addUser(t, r)
	}
	small := append(testMessage("bob@other.test", "alice@example.test", "small", ""), "a few lines\r\n"...)
	big := append(testMessage("bob@other.test", "alice@example.test", "big", ""), bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz\r\n"), 4000)...)
	for _, msg := range [][]byte{small, big} {
		c, err := smtp.Dial(s.srv.addrs["listen.smtp"])
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SendMail("bob@other.test", rcpts, bytes.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
		c.Quit()
	}
	for _, r := range rcpts {
		got := pop3Fetch(t, s.srv.addrs["listen.pop3s"], r)
		if len(got) != 2 {
			t.Fatalf("%s fetched %d messages, want 2", r, len(got))
		}
		for i, msg := range [][]byte{small, big} {
			if !bytes.HasSuffix(got[i], msg) {
				t.Errorf("%s message %d: RETR did not return the message byte-exact", r, i+1)
				continue
			}
			head := got[i][:len(got[i])-len(msg)]
			if n := bytes.Count(head, []byte("\r\nDelivered-To: ")); n != 1 || !bytes.Contains(head, []byte("\r\nDelivered-To: "+r+"\r\n")) {
				t.Errorf("%s message %d: head %q, want one Delivered-To naming %s", r, i+1, head, r)
			}
		}
	}
}

// TestBackupWhileDelivering: a backup taken while messages arrive opens as a
// store and holds every message acknowledged before it started.
func TestBackupWhileDelivering(t *testing.T) {
	s := newSite(t, "example.test", "")
	s.addUser(t, "alice@example.test")
	send := func(i int) {
		c, err := smtp.Dial(s.srv.addrs["listen.smtp"])
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		msg := testMessage("x@other.test", "alice@example.test", fmt.Sprintf("n%d", i), "x\r\n")
		if err := c.SendMail("x@other.test", []string{"alice@example.test"}, bytes.NewReader(msg)); err != nil {
			t.Error(err)
		}
	}
	for i := 0; i < 20; i++ {
		send(i)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 20; ; i++ {
			select {
			case <-stop:
				return
			default:
				send(i)
			}
		}
	}()
	path := filepath.Join(t.TempDir(), "backup.db")
	if _, err := backupFile(s.cfg, path); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done

	restored := t.TempDir()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(restored, "minimail.db"), raw, 0o600)
	cfg := *s.cfg
	cfg.DataDir = restored
	r, err := adminDo(&cfg, request{Op: "user.list"})
	if err != nil || len(r.Users) != 1 {
		t.Fatalf("restored users: %v %v", r.Users, err)
	}
	st, err := openStoreForTest(restored)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	list, err := st.List("alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) < 20 {
		t.Fatalf("backup holds %d messages, want at least the 20 acknowledged before it", len(list))
	}
}

// TestSmokeWithThirdPartyClients sends with swaks and fetches and deletes
// with curl, as users' own tools would. CI installs both; elsewhere the test
// is skipped unless MINIMAIL_REQUIRE_CLIENTS is set.
func TestSmokeWithThirdPartyClients(t *testing.T) {
	for _, tool := range []string{"swaks", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
				t.Fatalf("%s not installed", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	s := newSite(t, "example.test", "")
	s.addUser(t, "alice@example.test")
	s.addUser(t, "bob@example.test")
	host, port, _ := net.SplitHostPort(s.srv.addrs["listen.submission"])
	out, err := execCommand("swaks", "--server", host, "--port", port, "--tls", "--tls-verify", "--tls-ca-path", filepath.Join(s.dir, "cert.pem"),
		"--tls-sni", "mx.example.test",
		"--auth", "LOGIN", "--auth-user", "bob@example.test", "--auth-password", "pw-bob@example.test",
		"--from", "bob@example.test", "--to", "alice@example.test", "--header", "Subject: swaks smoke", "--body", "sent by swaks")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	s.waitMessages(t, "alice@example.test", 1)

	url := "pop3s://" + s.srv.addrs["listen.pop3s"] + "/1"
	out, err = execCommand("curl", "-sS", "--cacert", filepath.Join(s.dir, "cert.pem"), "--connect-to", "mx.example.test:"+strings.Split(s.srv.addrs["listen.pop3s"], ":")[1]+":"+s.srv.addrs["listen.pop3s"],
		"-u", "alice@example.test:pw-alice@example.test", "pop3s://mx.example.test:"+strings.Split(s.srv.addrs["listen.pop3s"], ":")[1]+"/1")
	if err != nil {
		t.Fatalf("curl RETR %s: %v\n%s", url, err, out)
	}
	if !strings.Contains(out, "Subject: swaks smoke") || !strings.Contains(out, "sent by swaks") {
		t.Fatalf("curl fetched:\n%s", out)
	}
	out, err = execCommand("curl", "-sS", "-k", "-u", "alice@example.test:pw-alice@example.test", "-X", "DELE 1", "-I", "--ssl-reqd",
		"pop3://"+s.srv.addrs["listen.pop3"]+"/")
	if err != nil {
		t.Fatalf("curl DELE: %v\n%s", err, out)
	}
	waitFor(t, "the mailbox to empty after curl's DELE and QUIT", func() bool {
		list, _ := s.srv.st.List("alice@example.test")
		return len(list) == 0
	})
}

// execCommand runs a third-party tool with a time limit and returns its
// combined output.
func execCommand(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func openStoreForTest(dir string) (*store.Store, error) {
	return store.Open(dir, store.Options{})
}

// TestMXChecksSenderAuthentication: the MX listener runs SPF, DKIM and
// DMARC through [relay] dns: a forged From of a p=reject domain is refused,
// an Authentication-Results header claiming our name is replaced.
func TestMXChecksSenderAuthentication(t *testing.T) {
	s := newSite(t, "example.test", "")
	s.addUser(t, "alice@example.test")
	s.dns.Add(t, `strict.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"`)
	s.dns.Add(t, `_dmarc.strict.test. 60 IN TXT "v=DMARC1; p=reject"`)
	s.dns.Add(t, `friendly.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`)

	send := func(from string, msg []byte) error {
		c, err := smtp.Dial(s.srv.addrs["listen.smtp"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.SendMail(from, []string{"alice@example.test"}, bytes.NewReader(msg))
	}

	forged := testMessage("ceo@strict.test", "alice@example.test", "wire money", "now\n")
	err := send("ceo@strict.test", forged)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("forged p=reject From: %v, want 550 5.7.1", err)
	}

	withForgedAR := append([]byte("Authentication-Results: mx.example.test; dkim=pass header.d=friendly.test\r\n"),
		testMessage("a@friendly.test", "alice@example.test", "hi", "hello\n")...)
	if err := send("a@friendly.test", withForgedAR); err != nil {
		t.Fatal(err)
	}
	got := s.waitMessages(t, "alice@example.test", 1)[0]
	if n := bytes.Count(got, []byte("Authentication-Results: mx.example.test")); n != 1 {
		t.Fatalf("%d Authentication-Results headers with our name, want 1:\n%s", n, got)
	}
	if bytes.Contains(got, []byte("dkim=pass")) || !bytes.Contains(got, []byte("spf=pass")) {
		t.Fatalf("the forged verdict survived or SPF was not checked:\n%s", got)
	}
}

// TestQueueSurvivesKill9: a message acknowledged by a server that is then
// killed with SIGKILL is delivered, exactly once, after a restart.
func TestQueueSurvivesKill9(t *testing.T) {
	b := newSite(t, "b.test", "")
	b.addUser(t, "alice@b.test")
	bAddr := b.srv.addrs["listen.smtp"]
	b.stop(t) // B is down while A accepts the message

	cfg := initSite(t)
	sub := freePort(t)
	setListen(t, cfg, map[string]string{"submission": sub})
	dnsSrv := dnstest.Start(t)
	appendConfig(t, cfg, fmt.Sprintf("\n[relay.routes]\n\"b.test\" = %q\n", bAddr),
		`dns       = ""`, fmt.Sprintf("dns = %q\nretry_min = \"200ms\"", dnsSrv.Addr))
	if r := minimail(t, "", "--config", cfg, "user", "add", "--password", "pw-bob@example.test", "bob@example.test"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	a, logs := startServe(t, cfg, 1)
	c, err := smtp.DialStartTLS(sub, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "bob@example.test", "pw-bob@example.test")); err != nil {
		t.Fatal(err)
	}
	msg := testMessage("bob@example.test", "alice@b.test", "survive", "kill -9\n")
	if err := c.SendMail("bob@example.test", []string{"alice@b.test"}, bytes.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	a.Process.Kill() // SIGKILL: no shutdown, no flush
	a.Wait()

	b.cfg.Listen.SMTP = bAddr
	b.start(t)
	startServe(t, cfg, 1)
	got := b.waitMessages(t, "alice@b.test", 1)
	if !bytes.HasSuffix(got[0], msg) {
		t.Fatalf("delivered:\n%s\nfirst run's log:\n%s", got[0], logs.String())
	}
	time.Sleep(500 * time.Millisecond) // a second delivery would land by now
	if list, _ := b.srv.st.List("alice@b.test"); len(list) != 1 {
		t.Fatalf("alice has %d copies, want exactly 1", len(list))
	}
}

// appendConfig adds text to a config file and replaces old with new in it.
func appendConfig(t *testing.T, path, text, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.Contains(s, old) {
		t.Fatalf("%s lacks %q", path, old)
	}
	s = strings.Replace(s, old, new, 1) + text
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestControlSocketPathTooLongIsAClearError(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, strings.Repeat("d", 120))
	if err := os.Mkdir(long, 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "minimail.toml")
	os.WriteFile(p, []byte(fmt.Sprintf("hostname = \"mx.a.test\"\ndomains = [\"a.test\"]\ndata_dir = %q\n", long)), 0o600)
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = startServer(cfg, slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "shorter data_dir") {
		t.Fatalf("err = %v", err)
	}
	// The failed start released the store.
	st, err := openStoreForTest(long)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
}

// TestFullDiskGives451AndLosesNothing runs the server with a file size
// limit (RLIMIT_FSIZE, the same EFBIG/ENOSPC path as a full disk): once
// the database cannot grow, DATA gets a temporary 451, never a 250 or a
// 5xx, the server keeps running, and after a restart every acknowledged
// message is there and nothing else.
func TestFullDiskGives451AndLosesNothing(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	cfg := initSite(t)
	smtpAddr := freePort(t)
	setListen(t, cfg, map[string]string{"smtp": smtpAddr})
	dnsSrv := dnstest.Start(t) // the MX's SPF/DMARC lookups go here
	appendConfig(t, cfg, "", `dns       = ""`, fmt.Sprintf("dns = %q", dnsSrv.Addr))
	if r := minimail(t, "", "--config", cfg, "user", "add", "--password", "a long passphrase", "alice@example.test"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	// bbolt grows its file in doublings while small: 1 MiB is reached
	// after a few hundred 4 KiB messages.
	cmd := exec.Command(prlimit, "--fsize=1048576", binary, "--config", cfg, "serve")
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "serve to listen", func() bool { return strings.Contains(logs.String(), "msg=listening") })

	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 64)
	acked := map[string]bool{}
	var refusal error
	for i := 0; i < 2000 && refusal == nil; i++ {
		subject := fmt.Sprintf("n%04d", i)
		msg := testMessage("x@other.test", "alice@example.test", subject, body)
		if err := c.SendMail("x@other.test", []string{"alice@example.test"}, bytes.NewReader(msg)); err != nil {
			refusal = err
			break
		}
		acked[subject] = true
	}
	var se *smtp.SMTPError
	if !errors.As(refusal, &se) || se.Code/100 != 4 {
		t.Fatalf("after %d messages: %v, want a 4xx once the file cannot grow\n%s", len(acked), refusal, logs.String())
	}
	if len(acked) == 0 {
		t.Fatal("no message was accepted before the limit")
	}
	// Still serving: the session goes on, and a new one is greeted.
	if err := c.Noop(); err != nil {
		t.Fatalf("session after the refusal: %v", err)
	}
	c2, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatalf("new session after the refusal: %v", err)
	}
	c2.Close()

	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve exit after SIGINT: %v\n%s", err, logs.String())
	}
	st, err := openStoreForTest(filepath.Join(filepath.Dir(cfg), "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	list, err := st.List("alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range list {
		b, err := st.Read("alice@example.test", m.ID)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, []byte("Subject: "))
		subject := string(b[i+9 : i+14])
		if !acked[subject] || seen[subject] {
			t.Fatalf("stored %q: not acknowledged, or twice", subject)
		}
		seen[subject] = true
	}
	if len(seen) != len(acked) {
		t.Fatalf("%d messages acknowledged, %d stored", len(acked), len(seen))
	}
}

// TestServeSIGTERMLetsTheTransactionInProgressFinish: a message half sent
// when SIGTERM arrives is still accepted with 250 and stored; new
// connections are refused; the process then exits 0.
func TestServeSIGTERMLetsTheTransactionInProgressFinish(t *testing.T) {
	cfg := initSite(t)
	smtpAddr := freePort(t)
	setListen(t, cfg, map[string]string{"smtp": smtpAddr})
	dnsSrv := dnstest.Start(t)
	appendConfig(t, cfg, "", `dns       = ""`, fmt.Sprintf("dns = %q", dnsSrv.Addr))
	if r := minimail(t, "", "--config", cfg, "user", "add", "--password", "a long passphrase", "alice@example.test"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	cmd, logs := startServe(t, cfg, 1)

	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("x@other.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("alice@example.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	msg := testMessage("x@other.test", "alice@example.test", "in flight", "first half\n")
	if _, err := w.Write(msg[:len(msg)/2]); err != nil {
		t.Fatal(err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, "the server to start draining", func() bool { return strings.Contains(logs.String(), "shutting down") })
	if conn, err := net.DialTimeout("tcp", smtpAddr, time.Second); err == nil {
		// The listener is closed; at most a connection racing the close
		// is greeted with 421.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if !strings.HasPrefix(line, "421") && line != "" {
			t.Fatalf("a new connection during shutdown got %q", line)
		}
	}

	if _, err := w.Write(msg[len(msg)/2:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA during shutdown: %v, want 250", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exit: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit after the transaction finished")
	}
	st, err := openStoreForTest(filepath.Join(filepath.Dir(cfg), "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	list, _ := st.List("alice@example.test")
	if len(list) != 1 {
		t.Fatalf("%d messages stored, want the one in flight", len(list))
	}
	got, _ := st.Read("alice@example.test", list[0].ID)
	if !bytes.HasSuffix(got, msg) {
		t.Fatalf("stored:\n%s", got)
	}
}

// TestOneIDFromThe250ReplyToTheQueue: the id a client reads in the 250
// after DATA is the message's id in the log, in queue list and for queue
// drop (SPEC: one id per accepted message).
func TestOneIDFromThe250ReplyToTheQueue(t *testing.T) {
	// far.test routes to a port nobody listens on: the message stays queued.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	a := newSite(t, "a.test", fmt.Sprintf("[relay]\nretry_min = \"1h\"\nroutes = { \"far.test\" = %q }\n", deadAddr))
	a.addUser(t, "bob@a.test")
	id := submitForID(t, a, "bob@a.test", []string{"carol@far.test"}, testMessage("bob@a.test", "carol@far.test", "one id", "x\r\n"))

	waitFor(t, "the queue to try once", func() bool {
		entries, _ := a.srv.st.QueueEntries()
		return len(entries) == 1 && entries[0].Attempts > 0
	})
	for _, ev := range []string{"msg=queued", "msg=deferred"} {
		found := false
		for _, line := range strings.Split(a.logs.String(), "\n") {
			if strings.Contains(line, ev) && strings.Contains(line, "id="+id) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s line with id=%s:\n%s", ev, id, a.logs)
		}
	}
	if r := minimail(t, "", "--config", a.cfg.path, "queue", "list"); r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Fatalf("queue list: exit %d %q %s, lacks %s", r.code, r.stdout, r.stderr, id)
	}
	if r := minimail(t, "", "--config", a.cfg.path, "queue", "drop", id); r.code != 0 {
		t.Fatalf("queue drop %s: exit %d %s", id, r.code, r.stderr)
	}
	if entries, _ := a.srv.st.QueueEntries(); len(entries) != 0 {
		t.Fatalf("queue after drop: %+v", entries)
	}
}

// TestRecipientDelimiter: with the default recipient_delimiter ("+"),
// mail to alice+news@ reaches alice with Delivered-To naming the
// extension; with recipient_delimiter = "" it is an unknown user.
func TestRecipientDelimiter(t *testing.T) {
	s := newSite(t, "example.test", "")
	s.addUser(t, "alice@example.test")
	send := func() error {
		c, err := smtp.Dial(s.srv.addrs["listen.smtp"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.SendMail("bob@other.test", []string{"alice+news@example.test"},
			bytes.NewReader(testMessage("bob@other.test", "alice+news@example.test", "tagged", "x\r\n")))
	}
	if err := send(); err != nil {
		t.Fatalf("to alice+news@: %v", err)
	}
	got := s.waitMessages(t, "alice@example.test", 1)
	if !bytes.Contains(got[0], []byte("\r\nDelivered-To: alice+news@example.test\r\n")) {
		t.Fatalf("stored:\n%s", got[0])
	}

	s.stop(t)
	off := ""
	s.cfg.RecipientDelimiter = &off
	s.start(t)
	var se *smtp.SMTPError
	if err := send(); !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
		t.Fatalf("to alice+news@ with recipient_delimiter = \"\": %v, want 550 5.1.1", err)
	}
}

// TestLowDiskRefusesMailAtMAIL: below limits.min_free_bytes of free disk
// (here more than any disk has) MAIL gets 452 4.3.1 before any message is
// sent, the server keeps serving, and the refusal has its log line. The
// free space is the real statfs of the data directory.
func TestLowDiskRefusesMailAtMAIL(t *testing.T) {
	cfg := initSite(t)
	smtpAddr := freePort(t)
	setListen(t, cfg, map[string]string{"smtp": smtpAddr})
	dnsSrv := dnstest.Start(t)
	appendConfig(t, cfg, "", `dns       = ""`, fmt.Sprintf("dns = %q", dnsSrv.Addr))
	appendConfig(t, cfg, "", "[limits]\n", "[limits]\nmin_free_bytes = 1152921504606846976 # 1 EiB\n")
	if r := minimail(t, "", "--config", cfg, "user", "add", "--password", "a long passphrase", "alice@example.test"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	_, logs := startServe(t, cfg, 1)
	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Mail("x@other.test", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("MAIL on a disk below min_free_bytes: %v, want 452 4.3.1", err)
	}
	if err := c.Noop(); err != nil {
		t.Fatalf("session after the refusal: %v", err)
	}
	waitFor(t, "the refusal's log line", func() bool {
		return strings.Contains(logs.String(), "msg=rejected") && strings.Contains(logs.String(), "reason=unavailable")
	})
}
