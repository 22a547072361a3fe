package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"minimail/mta/msgauth"
	"minimail/mta/remote/smtptest"
	"minimail/store"
)

// sendmailSite is a.test with a DKIM key, alice and bob, and far.test
// routed to sink.
func sendmailSite(t *testing.T, sink *smtptest.Server, extra string) *site {
	t.Helper()
	_, pemKey, err := msgauth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "mail.key")
	if err := os.WriteFile(keyPath, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	a := newSite(t, "a.test", fmt.Sprintf("%s[dkim]\nselector = \"mail\"\nkey = %q\n[relay]\nroutes = { \"far.test\" = %q }\n", extra, keyPath, sink.Addr))
	a.addUser(t, "alice@a.test")
	a.addUser(t, "bob@a.test")
	return a
}

func invokingUser(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// TestSendmail_TReadsToCcBccAndDropsBcc: -t sends to To:, Cc: and Bcc:,
// every copy without the Bcc: field, each with what submission adds
// (Received, Date, Message-ID, From with -F's name), the remote copy
// DKIM-signed for -f's domain.
func TestSendmail_TReadsToCcBccAndDropsBcc(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a := sendmailSite(t, sink, "")
	msg := "To: alice@a.test\nCc: dave@far.test\nBcc: bob@a.test\nSubject: cron report\n\nall fine\n"
	r := minimail(t, msg, "--config", a.cfg.path, "sendmail", "-t", "-oi", "-f", "alice@a.test", "-FCron Daemon")
	if r.code != 0 {
		t.Fatalf("sendmail -t: exit %d: %s", r.code, r.stderr)
	}
	remote := sink.Wait(t)
	if remote.From != "alice@a.test" || strings.Join(remote.Rcpts, ",") != "dave@far.test" {
		t.Errorf("sink got MAIL FROM %s RCPT %v", remote.From, remote.Rcpts)
	}
	if !bytes.Contains(remote.Data, []byte("DKIM-Signature:")) || !bytes.Contains(remote.Data, []byte("d=a.test")) {
		t.Errorf("the remote copy is not DKIM-signed for a.test:\n%s", remote.Data)
	}
	copies := map[string][]byte{"dave@far.test": remote.Data}
	for _, u := range []string{"alice@a.test", "bob@a.test"} {
		copies[u] = a.waitMessages(t, u, 1)[0]
	}
	for who, m := range copies {
		for _, want := range []string{"Received: by mx.a.test (minimail sendmail, from userid ", "\r\nDate: ", "\r\nMessage-ID: <",
			"\r\nFrom: \"Cron Daemon\" <alice@a.test>\r\n", "\r\nTo: alice@a.test\r\n", "\r\nCc: dave@far.test\r\n", "\r\n\r\nall fine\r\n"} {
			if !bytes.Contains(m, []byte(want)) {
				t.Errorf("%s's copy lacks %q:\n%s", who, want, m)
			}
		}
		// No Bcc: field, and no one but bob learns of bob's copy (a
		// search for "bcc" anywhere would also hit the DKIM signature's
		// base64 about once in a hundred runs).
		if bytes.Contains(bytes.ToLower(m), []byte("\r\nbcc:")) || (who != "bob@a.test" && bytes.Contains(m, []byte("bob@a.test"))) {
			t.Errorf("%s's copy names the blind copy:\n%s", who, m)
		}
	}
	if strings.Contains(a.logs.String(), "listener=sendmail") == false {
		t.Errorf("no log line for the sendmail submission:\n%s", a.logs)
	}
}

// TestSendmail_DefaultSenderIsTheUserAtHostname, and arguments are
// recipients; a bare name is that user in the first local domain.
func TestSendmail_DefaultSenderIsTheUserAtHostname(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a := sendmailSite(t, sink, "")
	r := minimail(t, "Subject: x\n\nbody\n", "--config", a.cfg.path, "sendmail", "alice")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	m := a.waitMessages(t, "alice@a.test", 1)[0]
	want := "Return-Path: <" + invokingUser(t) + "@mx.a.test>"
	if !bytes.Contains(m, []byte(want)) || !bytes.Contains(m, []byte("\r\nFrom: <"+invokingUser(t)+"@mx.a.test>\r\n")) {
		t.Errorf("want %s and a From: of the same address:\n%s", want, m)
	}
}

// TestSendmail_LoneDotEndsTheMessageUnlessI: without -i a line of one dot
// ends the message, as in sendmail; with -i or -oi it is text.
func TestSendmail_LoneDotEndsTheMessageUnlessI(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a := sendmailSite(t, sink, "")
	msg := "Subject: dots\n\nbefore\n.\nafter\n"
	for i, flags := range [][]string{nil, {"-i"}, {"-oi"}} {
		args := append(append([]string{"--config", a.cfg.path, "sendmail"}, flags...), "alice@a.test")
		if r := minimail(t, msg, args...); r.code != 0 {
			t.Fatalf("sendmail %v: exit %d: %s", flags, r.code, r.stderr)
		}
		got := body(a.waitMessages(t, "alice@a.test", i+1)[i])
		want := "before\r\n"
		if flags != nil {
			want = "before\r\n.\r\nafter\r\n"
		}
		if string(got) != want {
			t.Errorf("sendmail %v: body %q, want %q", flags, got, want)
		}
	}
}

func body(m []byte) []byte {
	_, b, _ := bytes.Cut(m, []byte("\r\n\r\n"))
	return b
}

// TestSendmail_ExitCodes: 64 for bad usage (no recipients, a flag or mode
// it does not have, a flag without its argument), 65 for a message
// refused for good.
func TestSendmail_ExitCodes(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a := sendmailSite(t, sink, "")
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		say   string
	}{
		{"no recipients", "Subject: x\n\nx\n", nil, 64, "no recipients"},
		{"-t and no To/Cc/Bcc", "Subject: x\n\nx\n", []string{"-t"}, 64, "no recipients"},
		{"a mode it does not have", "", []string{"-bs"}, 64, "-bs is not supported"},
		{"-f without its argument", "", []string{"alice@a.test", "-f"}, 64, "-f needs an argument"},
		{"the null sender", "x\n", []string{"-f", "<>", "alice@a.test"}, 64, "null sender"},
		{"unknown local user", "Subject: x\n\nx\n", []string{"nobody@a.test"}, 65, "5.1.1"},
		{"ignored habits", "Subject: x\n\nx\n", []string{"-odi", "-oem", "-B8BITMIME", "-N", "never", "alice@a.test"}, 0, ""},
	} {
		r := minimail(t, tc.stdin, append([]string{"--config", a.cfg.path, "sendmail"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.say) {
			t.Errorf("%s: exit %d %q, want %d and %q", tc.name, r.code, r.stderr, tc.code, tc.say)
		}
	}
}

// TestSendmail_ServerDownQueuesInTheStore: with no server running the
// message goes into the store's queue (durably: the process exits), and
// the next serve sends it.
func TestSendmail_ServerDownQueuesInTheStore(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a := sendmailSite(t, sink, "")
	a.stop(t)
	r := minimail(t, "Subject: while down\n\nqueued\n", "--config", a.cfg.path, "sendmail", "dave@far.test", "alice@a.test")
	if r.code != 0 {
		t.Fatalf("server down: exit %d: %s", r.code, r.stderr)
	}
	st, err := openStoreForTest(a.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := st.QueueEntries()
	local, _ := st.List("alice@a.test")
	st.Close()
	if err != nil || len(entries) != 1 || entries[0].Rcpts[0].Addr != "dave@far.test" || len(local) != 1 {
		t.Fatalf("after sendmail with the server down: queue %+v (%v), alice has %d", entries, err, len(local))
	}
	if len(sink.Messages()) != 0 {
		t.Fatal("sent with no server running")
	}
	a.start(t)
	m := sink.Wait(t)
	if !bytes.Contains(m.Data, []byte("Subject: while down")) || !bytes.Contains(m.Data, []byte("(minimail sendmail, from userid")) ||
		m.From != invokingUser(t)+"@mx.a.test" {
		t.Fatalf("sink got MAIL FROM %s:\n%s", m.From, m.Data)
	}
}

// TestSendmail_StoreLockedIs75: the store held by another process that
// does not answer on the control socket (a server starting or stopping) is
// "try again later".
func TestSendmail_StoreLockedIs75(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a := sendmailSite(t, sink, "")
	a.stop(t)
	st, err := store.Open(a.cfg.DataDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := minimail(t, "Subject: x\n\nx\n", "--config", a.cfg.path, "sendmail", "alice@a.test")
	if r.code != 75 {
		t.Fatalf("store locked: exit %d %s, want 75", r.code, r.stderr)
	}
}

// TestSendmail_Sizes: a 10 MiB message under the default limit is taken;
// one over limits.max_message_bytes is refused (65), before or after its
// lines get their CRs, as SMTP counts them.
func TestSendmail_Sizes(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a := sendmailSite(t, sink, "")
	line := strings.Repeat("y", 1023) + "\n"
	big := "Subject: big\n\n" + strings.Repeat(line, 10<<10)
	if r := minimail(t, big, "--config", a.cfg.path, "sendmail", "alice@a.test"); r.code != 0 {
		t.Fatalf("10 MiB: exit %d %s", r.code, r.stderr)
	}
	if got := a.waitMessages(t, "alice@a.test", 1)[0]; len(got) < 10<<20 {
		t.Fatalf("stored %d bytes", len(got))
	}

	small := sendmailSite(t, sink, "max_message_bytes = 100000\n")
	for name, msg := range map[string]string{
		"over the limit as read":     "Subject: x\n\n" + strings.Repeat("z", 100000),
		"over the limit once CRLF'd": "Subject: x\n\n" + strings.Repeat("z\n", 49995),
	} {
		if r := minimail(t, msg, "--config", small.cfg.path, "sendmail", "alice@a.test"); r.code != 65 || !strings.Contains(r.stderr, "exceeds 100000 bytes") {
			t.Errorf("%s: exit %d %q, want 65", name, r.code, r.stderr)
		}
	}
	if list, _ := small.srv.st.List("alice@a.test"); len(list) != 0 {
		t.Errorf("a refused message was stored")
	}
}

// TestSendmail_CalledAsSendmail: a symlink named sendmail runs the
// command directly, with sendmail's -C naming the config.
func TestSendmail_CalledAsSendmail(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a := sendmailSite(t, sink, "")
	link := filepath.Join(t.TempDir(), "sendmail")
	if err := os.Symlink(binary, link); err != nil {
		t.Fatal(err)
	}
	for i, env := range []struct {
		env  string
		args []string
	}{
		{"MINIMAIL_CONFIG=", []string{"-C", a.cfg.path, "-t"}},
		{"MINIMAIL_CONFIG=" + a.cfg.path, []string{"-t", "-i"}},
	} {
		cmd := exec.Command(link, env.args...)
		cmd.Env = append(os.Environ(), env.env)
		cmd.Stdin = strings.NewReader("To: alice@a.test\nSubject: via link\n\nx\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail %v: %v\n%s", env.args, err, out)
		}
		a.waitMessages(t, "alice@a.test", i+1)
	}
}

// TestEnvelopeSender: root and the service user may send as anyone; any
// other user only as itself in a local domain.
func TestEnvelopeSender(t *testing.T) {
	cfg := &Config{Hostname: "mx.a.test", Domains: []string{"a.test", "b.test"}, DataDir: "/var/lib/minimail"}
	trusted := invoker{name: "root", trusted: true}
	joe := invoker{name: "joe", uid: 1000}
	for _, tc := range []struct {
		who    invoker
		sender string
		want   string // "" = refused
	}{
		{trusted, "", "root@mx.a.test"},
		{trusted, "anyone@elsewhere.test", "anyone@elsewhere.test"},
		{trusted, "<noreply@a.test>", "noreply@a.test"},
		{joe, "", "joe@mx.a.test"},
		{joe, "joe@a.test", "joe@a.test"},
		{joe, "Joe+reports@B.test", "Joe+reports@B.test"},
		{joe, "alice@a.test", ""},
		{joe, "joe@elsewhere.test", ""},
		{joe, "joe", ""},
		{trusted, "<>", ""},
	} {
		got, err := envelopeSender(cfg, tc.who, tc.sender)
		if tc.want == "" && err == nil || tc.want != "" && got != tc.want {
			t.Errorf("%s -f %q: %q, %v; want %q", tc.who.name, tc.sender, got, err, tc.want)
		}
	}
}

func TestParseSendmailArgs(t *testing.T) {
	o, err := parseSendmailArgs([]string{"-t", "-oi", "-fbob@a.test", "-F", "Bob B", "-C/etc/x.toml", "-odi", "-R", "hdrs", "a@x.test", "--", "-weird@x.test"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.fromHeader || !o.ignoreDots || o.sender != "bob@a.test" || o.fullName != "Bob B" || o.config != "/etc/x.toml" ||
		strings.Join(o.rcpts, " ") != "a@x.test -weird@x.test" {
		t.Fatalf("%+v", o)
	}
	for _, bad := range [][]string{{"-bp"}, {"-q"}, {"-x"}, {"-F"}, {"--help"}} {
		if _, err := parseSendmailArgs(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestSendmail_WhoMaySendAsWhom, over the built binary as three accounts,
// with the server running as the service user as the unit runs it: root
// and the service user may set any sender; another user may not use
// someone else's address (64), and sends as itself over listen.sendmail;
// with the server stopped that user is told to try again later (75).
func TestSendmail_WhoMaySendAsWhom(t *testing.T) {
	requireRoot(t)
	svc, other := newServiceUser(t), newServiceUser(t)
	root := openDir(t)
	etc, data, run := filepath.Join(root, "etc"), filepath.Join(root, "data"), filepath.Join(root, "run")
	if r := minimail(t, "", "init", "--domain", "example.test", "--hostname", "mx.example.test", "--dir", etc, "--data-dir", data, "--service-user", svc.name); r.code != 0 {
		t.Fatal(r.stderr)
	}
	cfg := filepath.Join(etc, "minimail.toml")
	os.Chmod(etc, 0o755) // the other user may read the config, not the data
	os.Chmod(cfg, 0o644)
	// /run/minimail as the unit's RuntimeDirectory= makes it.
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(run, svc.uid, svc.gid)
	sock := filepath.Join(run, "sendmail.sock")
	setListen(t, cfg, map[string]string{"smtp": freePort(t), "sendmail": sock})
	serve := serveAs(cfg, svc.credential())
	logs := startServing(t, serve, 2)
	wantMode(t, sock, 0o666, svc.uid, -1)
	if r := minimail(t, "", "--config", cfg, "user", "add", "--password", "a long password", "alice@example.test"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	msg := "Subject: who\n\nx\n"
	if r := minimail(t, msg, "--config", cfg, "sendmail", "-f", "anyone@elsewhere.test", "alice"); r.code != 0 {
		t.Errorf("root -f anyone: exit %d %s", r.code, r.stderr)
	}
	if r := minimailAs(t, svc.credential(), msg, "--config", cfg, "sendmail", "-f", "robot@elsewhere.test", "alice"); r.code != 0 {
		t.Errorf("service user -f robot: exit %d %s", r.code, r.stderr)
	}
	r := minimailAs(t, other.credential(), msg, "--config", cfg, "sendmail", "-f", "alice@example.test", "alice")
	if r.code != 64 || !strings.Contains(r.stderr, other.name+" may send only as "+other.name+"@") {
		t.Errorf("other -f alice: exit %d %q, want 64", r.code, r.stderr)
	}
	r = minimailAs(t, other.credential(), msg, "--config", cfg, "sendmail", "-f", other.name+"@example.test", "alice")
	if r.code != 0 {
		t.Errorf("other -f itself: exit %d %q, want 0 (over %s)", r.code, r.stderr, sock)
	}
	waitFor(t, "three messages for alice", func() bool {
		return strings.Count(logs.String(), "listener=sendmail") == 3
	})
	for _, from := range []string{"from=anyone@elsewhere.test", "from=robot@elsewhere.test",
		fmt.Sprintf("user=%s uid=%d from=%s@example.test", other.name, other.uid, other.name)} {
		if !strings.Contains(logs.String(), from) {
			t.Errorf("no sendmail line with %s:\n%s", from, logs)
		}
	}
	stopServing(t, serve, logs)
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("%s is still there after the server stopped", sock)
	}
	r = minimailAs(t, other.credential(), msg, "--config", cfg, "sendmail", "alice")
	if r.code != 75 || !strings.Contains(r.stderr, "not running") {
		t.Errorf("other with the server stopped: exit %d %q, want 75", r.code, r.stderr)
	}
	if r := minimail(t, msg, "--config", cfg, "sendmail", "alice"); r.code != 0 {
		t.Errorf("root with the server stopped: exit %d %q, want 0 (queued in the store)", r.code, r.stderr)
	}
}

func TestSendmail_HelpExitsZero(t *testing.T) {
	r := minimail(t, "", "sendmail", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "usage: minimail sendmail [-t]") {
		t.Fatalf("sendmail --help: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
}
