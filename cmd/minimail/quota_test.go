package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// mxClient opens an SMTP session with s's MX, greeted.
func mxClient(t *testing.T, s *site) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.srv.addrs["listen.smtp"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// replyCode is "452 4.2.2" for an SMTP error, "250" for none.
func replyCode(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	if err != nil {
		return err.Error()
	}
	return "250"
}

// sendMX sends msg from x@remote.test to rcpts over s's MX and returns the
// reply to each RCPT and to the end of DATA ("-" when DATA was not reached).
func sendMX(t *testing.T, s *site, rcpts []string, msg string) (rcptReplies []string, data string) {
	t.Helper()
	c := mxClient(t, s)
	if err := c.Mail("x@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for _, r := range rcpts {
		err := c.Rcpt(r, nil)
		rcptReplies = append(rcptReplies, replyCode(err))
		if err == nil {
			accepted++
		}
	}
	if accepted == 0 {
		return rcptReplies, "-"
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(msg))
	return rcptReplies, replyCode(w.Close())
}

func used(t *testing.T, s *site, addr string) int64 {
	t.Helper()
	n, _, err := s.srv.st.Usage(addr)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestQuota_EndToEnd runs the quota of SPEC Addressing over a real serve and
// the built binary: overflow at DATA (552 5.2.2) with the other recipients'
// copies stored and the full one bounced, a mailbox at its quota refused at
// RCPT (452 4.2.2), space freed by POP3 DELE and QUIT, `user quota` and
// `user list`.
func TestQuota_EndToEnd(t *testing.T) {
	s := newSite(t, "example.test", "max_mailbox_bytes = 3000\n")
	for _, u := range []string{"alice@example.test", "bob@example.test", "carol@example.test"} {
		s.addUser(t, u)
	}
	cfg := filepath.Join(s.dir, "minimail.toml")
	big := "From: x@remote.test\r\nSubject: big\r\n\r\n" + strings.Repeat("x", 1700) + "\r\n"

	t.Run("a message that fits is stored", func(t *testing.T) {
		if _, data := sendMX(t, s, []string{"alice@example.test"}, big); data != "250" {
			t.Fatalf("DATA: %s, want 250", data)
		}
	})
	t.Run("a message past the only recipient's quota is 552 5.2.2 after DATA", func(t *testing.T) {
		before := used(t, s, "alice@example.test")
		rcpt, data := sendMX(t, s, []string{"alice@example.test"}, big)
		if rcpt[0] != "250" || data != "552 5.2.2" {
			t.Fatalf("RCPT %s, DATA %s; want 250 then 552 5.2.2", rcpt[0], data)
		}
		if after := used(t, s, "alice@example.test"); after != before {
			t.Errorf("alice's use went from %d to %d", before, after)
		}
	})
	t.Run("a full mailbox does not block another recipient; its sender gets a bounce", func(t *testing.T) {
		// bob submits to alice (no room for it) and carol: carol's copy is
		// stored, the reply is 250, and bob's bounce names alice and 5.2.2.
		if err := s.submit(t, "bob@example.test", []string{"alice@example.test", "carol@example.test"}, []byte("From: bob@example.test\r\nTo: alice@example.test\r\nSubject: both\r\n\r\n"+strings.Repeat("y", 1700)+"\r\n")); err != nil {
			t.Fatalf("submission: %v, want 250", err)
		}
		if got := s.waitMessages(t, "carol@example.test", 1); !strings.Contains(string(got[0]), "Subject: both") {
			t.Fatalf("carol's copy:\n%s", got[0])
		}
		bounce := s.waitMessages(t, "bob@example.test", 1)[0]
		for _, want := range []string{"Final-Recipient: rfc822; alice@example.test", "Status: 5.2.2"} {
			if !strings.Contains(string(bounce), want) {
				t.Errorf("bounce lacks %q:\n%s", want, bounce)
			}
		}
		if n, _ := s.srv.st.List("alice@example.test"); len(n) != 1 {
			t.Errorf("alice holds %d messages, want 1", len(n))
		}
	})
	t.Run("user quota over the control socket; a mailbox at its quota is 452 4.2.2 at RCPT", func(t *testing.T) {
		if r := minimail(t, "", "--config", cfg, "user", "quota", "alice@example.test", "100"); r.code != 0 || !strings.Contains(r.stdout, "100 bytes") {
			t.Fatalf("user quota: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		rcpt, data := sendMX(t, s, []string{"alice@example.test", "carol@example.test"}, "From: x@remote.test\r\nSubject: small\r\n\r\nhi\r\n")
		if rcpt[0] != "452 4.2.2" || rcpt[1] != "250" || data != "250" {
			t.Fatalf("RCPT alice %s, carol %s, DATA %s; want 452 4.2.2, 250, 250", rcpt[0], rcpt[1], data)
		}
		r := minimail(t, "", "--config", cfg, "user", "list")
		for _, want := range []string{
			`(?m)^alice@example\.test\t\S+\t\d+ of 100 bytes$`,
			`(?m)^carol@example\.test\t\S+\t\d+ of 3000 bytes \(default\)$`,
		} {
			if !regexp.MustCompile(want).MatchString(r.stdout) {
				t.Errorf("user list lacks %s:\n%s", want, r.stdout)
			}
		}
	})
	t.Run("POP3 DELE and QUIT free the space", func(t *testing.T) {
		small := "From: x@remote.test\r\nSubject: small\r\n\r\nhi\r\n"
		if rcpt, _ := sendMX(t, s, []string{"alice@example.test"}, small); rcpt[0] != "452 4.2.2" {
			t.Fatalf("RCPT %s before POP3, want 452 4.2.2", rcpt[0])
		}
		if got := pop3Fetch(t, s.srv.addrs["listen.pop3s"], "alice@example.test"); len(got) != 1 {
			t.Fatalf("fetched %d messages, want 1", len(got))
		}
		if n := used(t, s, "alice@example.test"); n != 0 {
			t.Fatalf("alice uses %d bytes after DELE and QUIT", n)
		}
		if r := minimail(t, "", "--config", cfg, "user", "quota", "alice@example.test", "1000"); r.code != 0 {
			t.Fatalf("user quota: exit %d: %s", r.code, r.stderr)
		}
		rcpt, data := sendMX(t, s, []string{"alice@example.test"}, small)
		if rcpt[0] != "250" || data != "250" {
			t.Fatalf("RCPT %s, DATA %s after the space was freed; want 250, 250", rcpt[0], data)
		}
	})
	t.Run("user quota 0 restores the default; a negative one is a usage error", func(t *testing.T) {
		if r := minimail(t, "", "--config", cfg, "user", "quota", "alice@example.test", "0"); r.code != 0 {
			t.Fatalf("user quota 0: exit %d: %s", r.code, r.stderr)
		}
		if r := minimail(t, "", "--config", cfg, "user", "list"); !regexp.MustCompile(`(?m)^alice@example\.test\t\S+\t\d+ of 3000 bytes \(default\)$`).MatchString(r.stdout) {
			t.Errorf("user list after quota 0:\n%s", r.stdout)
		}
		if r := minimail(t, "", "--config", cfg, "user", "quota", "alice@example.test", "-5"); r.code != 2 {
			t.Errorf("user quota -5: exit %d, want 2: %s", r.code, r.stderr)
		}
		if r := minimail(t, "", "--config", cfg, "user", "quota", "nobody@example.test", "5"); r.code != 1 || !strings.Contains(r.stderr, "no such user") {
			t.Errorf("user quota for nobody: exit %d: %s", r.code, r.stderr)
		}
	})
}

// TestUserQuota_Offline: with no server running, user quota and user list
// open the store themselves.
func TestUserQuota_Offline(t *testing.T) {
	cfg := initSite(t)
	if r := minimail(t, "", "--config", cfg, "user", "add", "--password", "correct horse", "dan@example.test"); r.code != 0 {
		t.Fatalf("user add: %s", r.stderr)
	}
	if r := minimail(t, "", "--config", cfg, "user", "list"); !strings.Contains(r.stdout, "\t0 bytes, no quota\n") {
		t.Errorf("user list without quotas:\n%s", r.stdout)
	}
	if r := minimail(t, "", "--config", cfg, "user", "quota", "dan@example.test", "5000"); r.code != 0 {
		t.Fatalf("user quota: exit %d: %s", r.code, r.stderr)
	}
	if r := minimail(t, "", "--config", cfg, "user", "list"); !strings.Contains(r.stdout, "dan@example.test\t") || !strings.Contains(r.stdout, "\t0 of 5000 bytes\n") {
		t.Errorf("user list after user quota:\n%s", r.stdout)
	}
}
