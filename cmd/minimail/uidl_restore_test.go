package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// keepingPOP3 is a POP3 client that leaves mail on the server, as fetchmail
// --keep, getmail and Thunderbird's "leave messages on server" do: it
// retrieves only the messages whose UIDL it has not seen before.
type keepingPOP3 struct {
	user string
	seen map[string]bool
}

// sync logs in over pop3s, retrieves every message with an unseen UIDL,
// deletes nothing, and returns the subjects it retrieved.
func (k *keepingPOP3) sync(t *testing.T, s *site) []string {
	t.Helper()
	conn, err := tls.Dial("tcp", s.srv.addrs["listen.pop3s"], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	p := newPOP3Client(conn)
	for _, cmd := range []string{"", "USER " + k.user, "PASS pw-" + k.user} {
		if _, err := p.ok(cmd); err != nil {
			t.Fatal(err)
		}
	}
	listing, err := p.multi("UIDL")
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for _, line := range strings.Split(strings.TrimSpace(string(listing)), "\r\n") {
		n, uidl, ok := strings.Cut(line, " ")
		if !ok || k.seen[uidl] {
			continue
		}
		msg, err := p.multi("RETR " + n)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		k.seen[uidl] = true
		subjects = append(subjects, m.Header.Get("Subject"))
	}
	if _, err := p.ok("QUIT"); err != nil {
		t.Fatal(err)
	}
	return subjects
}

// mxSend delivers one message per subject to rcpt through the MX listener;
// a 250 means it is in the mailbox.
func mxSend(t *testing.T, s *site, rcpt string, subjects ...string) {
	t.Helper()
	for _, subject := range subjects {
		c, err := smtp.Dial(s.srv.addrs["listen.smtp"])
		if err != nil {
			t.Fatal(err)
		}
		msg := testMessage("x@other.test", rcpt, subject, "x\r\n")
		err = c.SendMail("x@other.test", []string{rcpt}, bytes.NewReader(msg))
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestPOP3ClientKeepingMailGetsNewMailAfterRestoreAndRecreate: backup, more
// mail, restore of that backup, then new mail: a client that leaves mail on
// the server must retrieve the new mail, whose ids the restored file hands
// out a second time. The same after the database is re-created from scratch.
func TestPOP3ClientKeepingMailGetsNewMailAfterRestoreAndRecreate(t *testing.T) {
	const alice = "alice@example.test"
	s := newSite(t, "example.test", "")
	s.addUser(t, alice)
	client := &keepingPOP3{user: alice, seen: map[string]bool{}}
	db := filepath.Join(s.cfg.DataDir, "minimail.db")
	step := func(name string, send []string, want ...string) {
		t.Helper()
		mxSend(t, s, alice, send...)
		if got := client.sync(t, s); !slices.Equal(got, want) {
			t.Fatalf("%s: client retrieved %q, want %q", name, got, want)
		}
	}

	step("first mail", []string{"one", "two"}, "one", "two")
	backup := filepath.Join(t.TempDir(), "backup.db")
	if _, err := backupFile(s.cfg, backup); err != nil {
		t.Fatal(err)
	}
	step("mail after the backup", []string{"three", "four"}, "three", "four")

	s.stop(t)
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	step("restored backup, no new mail", nil)
	step("new mail after the restore", []string{"five", "six"}, "five", "six")

	s.stop(t)
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	s.addUser(t, alice)
	step(fmt.Sprintf("new mail in a re-created %s", filepath.Base(db)), []string{"seven"}, "seven")
}
