package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"minimail/mta/msgauth"
	"minimail/mta/remote/smtptest"
	"minimail/mta/srs"
)

// TestForwardWithSRS is issue 16's forwarding proof over real sockets: an
// alias (added with the CLI while serve runs) with two users and a remote
// target, reached also through a second alias; the remote target is a
// loopback sink (relay.routes), and so is the original sender's domain.
func TestForwardWithSRS(t *testing.T) {
	forwardee := smtptest.Start(t, smtptest.Options{}) // remote.test: where the alias forwards
	origin := smtptest.Start(t, smtptest.Options{})    // other.test: the original sender's
	s := newSite(t, "example.test", dkimConfig(t)+fmt.Sprintf("[relay]\nretry_min = \"1h\"\nroutes = { \"remote.test\" = %q, \"other.test\" = %q }\n", forwardee.Addr, origin.Addr))
	cfg := filepath.Join(s.dir, "minimail.toml")
	s.addUser(t, "alice@example.test")
	s.addUser(t, "carol@example.test")
	for _, a := range [][]string{
		{"sales@example.test", "alice@example.test", "carol@example.test", "Fwd@remote.test"},
		{"team@example.test", "sales@example.test", "fwd@remote.test"},
	} {
		if r := minimail(t, "", append([]string{"--config", cfg, "alias", "add"}, a...)...); r.code != 0 {
			t.Fatalf("alias add %v: exit %d: %s", a, r.code, r.stderr)
		}
	}

	// Signed by other.test: the forwarded copy must carry it unchanged.
	msg := []byte("DKIM-Signature: v=1; a=rsa-sha256; d=other.test; s=s; h=from:subject; bh=x; b=x\r\n" +
		string(testMessage("bob@other.test", "sales@example.test", "forward me", "hello\r\n")))
	if err := s.mx(t, []string{"sales@example.test", "team@example.test"}, msg); err != nil {
		t.Fatal(err)
	}
	s.waitMessages(t, "alice@example.test", 1)
	s.waitMessages(t, "carol@example.test", 1)
	got := forwardee.Wait(t)
	waitQueueEmpty(t, s)
	if n := len(forwardee.Messages()); n != 1 {
		t.Fatalf("the remote target got %d copies, want 1", n)
	}
	for _, box := range []string{"alice@example.test", "carol@example.test"} {
		if n := len(s.waitMessages(t, box, 1)); n != 1 {
			t.Errorf("%s has %d copies, want 1", box, n)
		}
	}
	if len(got.Rcpts) != 1 || !strings.EqualFold(got.Rcpts[0], "fwd@remote.test") {
		t.Errorf("forwarded to %v, want fwd@remote.test once", got.Rcpts)
	}
	srsAddr := got.From
	if !strings.HasPrefix(srsAddr, "SRS0=") || !strings.HasSuffix(srsAddr, "=other.test=bob@example.test") {
		t.Fatalf("forwarded with MAIL FROM %q, want SRS0=...=other.test=bob@example.test", srsAddr)
	}
	// The site signs (it has a DKIM key), but not mail it forwards from
	// the MX: the copy is the message as sent, trace fields in front.
	if !bytes.HasSuffix(got.Data, msg) || bytes.Count(got.Data, []byte("DKIM-Signature:")) != 1 {
		t.Errorf("the forwarded copy is not the message as sent with trace fields in front:\n%s", got.Data)
	}

	// The remote target bounces: to the SRS address, from the null sender.
	bounce := []byte("From: MAILER-DAEMON@remote.test\r\nTo: " + srsAddr + "\r\nSubject: Undelivered Mail\r\n\r\nmailbox full\r\n")
	if err := sendFrom(t, s, "", []string{srsAddr}, bounce); err != nil {
		t.Fatalf("bounce to %s: %v", srsAddr, err)
	}
	back := origin.Wait(t)
	if back.From != "" || len(back.Rcpts) != 1 || back.Rcpts[0] != "bob@other.test" || !bytes.HasSuffix(back.Data, bounce) {
		t.Fatalf("reversed bounce: from %q to %v, want <> to bob@other.test:\n%s", back.From, back.Rcpts, back.Data)
	}

	// Forged (another hash) and expired SRS addresses are refused at RCPT.
	local := strings.TrimSuffix(srsAddr, "@example.test")
	p, err := srs.Parse(local)
	if err != nil {
		t.Fatal(err)
	}
	forgedHash := "AAAA"
	if strings.EqualFold(p.Hash, forgedHash) {
		forgedHash = "BBBB"
	}
	secret, err := s.srv.st.SRSSecret()
	if err != nil {
		t.Fatal(err)
	}
	old := &srs.Rewriter{Secret: secret, Now: func() time.Time { return time.Now().Add(-30 * 24 * time.Hour) }}
	expired, _ := old.Forward("bob@other.test", "example.test")
	for name, rcpt := range map[string]string{
		"forged hash":      "SRS0=" + forgedHash + "=" + p.Stamp + "=other.test=bob@example.test",
		"another original": "SRS0=" + p.Hash + "=" + p.Stamp + "=victim.test=bob@example.test",
		"expired":          expired,
	} {
		var se *smtp.SMTPError
		err := sendFrom(t, s, "", []string{rcpt}, bounce)
		if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
			t.Errorf("%s: RCPT TO:<%s>: %v, want 550 5.1.1", name, rcpt, err)
		}
	}
	if n := len(origin.Messages()); n != 1 {
		t.Errorf("the original sender got %d messages, want the one bounce", n)
	}

	// A message that has looped (more Received fields than the hop
	// limit) is not forwarded again.
	looped := append([]byte(strings.Repeat("Received: from a.test by b.test; Mon, 02 Jan 2026 15:04:05 +0000\r\n", 51)),
		testMessage("bob@other.test", "team@example.test", "loop", "x\r\n")...)
	var se *smtp.SMTPError
	if err := sendFrom(t, s, "bob@other.test", []string{"team@example.test"}, looped); !errors.As(err, &se) || se.Code != 554 || se.EnhancedCode != (smtp.EnhancedCode{5, 4, 6}) {
		t.Errorf("a looping message: %v, want 554 5.4.6", err)
	}

	// alias add with a remote target works offline too.
	s.stop(t)
	if r := minimail(t, "", "--config", cfg, "alias", "add", "phone@example.test", "me@remote.test"); r.code != 0 {
		t.Fatalf("offline alias add: exit %d: %s", r.code, r.stderr)
	}
	if r := minimail(t, "", "--config", cfg, "alias", "list"); !strings.Contains(r.stdout, "phone@example.test\tme@remote.test\n") {
		t.Errorf("alias list: %q", r.stdout)
	}
}

// TestForwardFromSubmissionIsSigned: a local user's message to an alias
// that forwards leaves signed by us (the From is ours), the sender as is.
func TestForwardFromSubmissionIsSigned(t *testing.T) {
	forwardee := smtptest.Start(t, smtptest.Options{})
	s := newSite(t, "example.test", dkimConfig(t)+fmt.Sprintf("[relay]\nretry_min = \"1h\"\nroutes = { \"remote.test\" = %q }\n", forwardee.Addr))
	s.addUser(t, "alice@example.test")
	if _, err := s.srv.st.AddAliasRemote("fwd@example.test", []string{"x@remote.test"}, func(a string) bool { return strings.HasSuffix(a, "@remote.test") }); err != nil {
		t.Fatal(err)
	}
	if err := s.submit(t, "alice@example.test", []string{"fwd@example.test"}, testMessage("alice@example.test", "fwd@example.test", "signed", "x\r\n")); err != nil {
		t.Fatal(err)
	}
	got := forwardee.Wait(t)
	if got.From != "alice@example.test" {
		t.Errorf("MAIL FROM %q, want alice@example.test (a local sender is not rewritten)", got.From)
	}
	if !bytes.Contains(got.Data, []byte("DKIM-Signature:")) || !bytes.Contains(got.Data, []byte("d=example.test")) {
		t.Errorf("not signed:\n%s", got.Data)
	}
}

// dkimConfig writes a DKIM key and returns the [dkim] table naming it.
func dkimConfig(t *testing.T) string {
	t.Helper()
	_, pemBytes, err := msgauth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mail.key")
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("[dkim]\nselector = \"mail\"\nkey = %q\n", path)
}

// sendFrom sends msg over the site's MX with envelope sender from.
func sendFrom(t *testing.T, s *site, from string, rcpts []string, msg []byte) error {
	t.Helper()
	c, err := smtp.Dial(s.srv.addrs["listen.smtp"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.SendMail(from, rcpts, bytes.NewReader(msg))
}

// waitQueueEmpty waits until the site's queue holds nothing.
func waitQueueEmpty(t *testing.T, s *site) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		entries, err := s.srv.st.QueueEntries()
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue still holds %+v; logs:\n%s", entries, s.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestForwardRefusedBouncesToTheOriginalSender: when the remote target
// refuses a forwarded copy, the queue's failure notice goes to the SRS
// sender, which is reversed: it reaches the original sender's server.
func TestForwardRefusedBouncesToTheOriginalSender(t *testing.T) {
	forwardee := smtptest.Start(t, smtptest.Options{Rcpt: func(rcpt string) error {
		return smtptest.Reply(550, 5, 1, 1, "no such user")
	}})
	origin := smtptest.Start(t, smtptest.Options{})
	s := newSite(t, "example.test", fmt.Sprintf("[relay]\nretry_min = \"1h\"\nroutes = { \"remote.test\" = %q, \"other.test\" = %q }\n", forwardee.Addr, origin.Addr))
	if r := minimail(t, "", "--config", filepath.Join(s.dir, "minimail.toml"), "alias", "add", "old@example.test", "gone@remote.test"); r.code != 0 {
		t.Fatalf("alias add: exit %d: %s", r.code, r.stderr)
	}
	if err := s.mx(t, []string{"old@example.test"}, testMessage("bob@other.test", "old@example.test", "to a dead end", "x\r\n")); err != nil {
		t.Fatal(err)
	}
	dsn := origin.Wait(t)
	if dsn.From != "" || len(dsn.Rcpts) != 1 || dsn.Rcpts[0] != "bob@other.test" {
		t.Fatalf("notice from %q to %v, want <> to bob@other.test", dsn.From, dsn.Rcpts)
	}
	for _, want := range []string{"gone@remote.test", "5.1.1", "Subject: to a dead end"} {
		if !bytes.Contains(dsn.Data, []byte(want)) {
			t.Errorf("the notice does not name %q:\n%s", want, dsn.Data)
		}
	}
	waitQueueEmpty(t, s)
}
