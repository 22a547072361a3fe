package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// mx sends msg from a remote sender to rcpts on the site's MX.
func (s *site) mx(t *testing.T, rcpts []string, msg []byte) error {
	t.Helper()
	c, err := smtp.Dial(s.srv.addrs["listen.smtp"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.SendMail("bob@other.test", rcpts, bytes.NewReader(msg))
}

func deliveredToLines(msg []byte) []string {
	var out []string
	for _, line := range strings.Split(string(msg), "\r\n") {
		if v, ok := strings.CutPrefix(line, "Delivered-To: "); ok {
			out = append(out, v)
		}
	}
	return out
}

// TestAliasCommandsWhileServing runs alias add/list/del over the control
// socket of a running serve, with every refusal an exit 2 that says why.
func TestAliasCommandsWhileServing(t *testing.T) {
	s := newSite(t, "example.test", "")
	cfg := filepath.Join(s.dir, "minimail.toml")
	s.addUser(t, "alice@example.test")
	s.addUser(t, "carol@example.test")
	if !strings.Contains(s.logs.String(), `msg="postmaster reaches no mailbox" domain=example.test`) {
		t.Errorf("no postmaster warning at start:\n%s", s.logs)
	}
	ok := func(args ...string) string {
		t.Helper()
		r := minimail(t, "", append([]string{"--config", cfg, "alias"}, args...)...)
		if r.code != 0 {
			t.Fatalf("alias %v: exit %d: %s", args, r.code, r.stderr)
		}
		return r.stdout
	}
	refused := func(want string, args ...string) {
		t.Helper()
		r := minimail(t, "", append([]string{"--config", cfg, "alias"}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, want) {
			t.Errorf("alias %v: exit %d, stderr %q; want 2 and %q", args, r.code, r.stderr, want)
		}
	}
	ok("add", "sales@example.test", "alice@example.test", "carol@example.test")
	ok("add", "team@example.test", "sales@example.test")
	ok("add", "@example.test", "carol@example.test")
	refused("forwarding to an IP address is refused", "add", "fwd@example.test", "x@127.0.0.1")
	refused("needs quoting", "add", "fwd@example.test", "a..b@remote.test")
	refused("not a local domain", "add", "x@other.test", "alice@example.test")
	refused("user's mailbox", "add", "alice@example.test", "carol@example.test")
	refused("neither a user nor an alias", "add", "x@example.test", "nobody@example.test")
	refused("loop", "add", "loop@example.test", "loop@example.test")
	refused("local part of 65 octets", "add", strings.Repeat("l", 65)+"@example.test", "alice@example.test")
	refused("already exists", "add", "sales@example.test", "alice@example.test")
	refused("team@example.test", "del", "sales@example.test")
	if r := minimail(t, "", "--config", cfg, "user", "del", "carol@example.test"); r.code != 2 || !strings.Contains(r.stderr, "@example.test, sales@example.test") {
		t.Errorf("user del of an alias target: exit %d, %q", r.code, r.stderr)
	}
	if r := minimail(t, "", "--config", cfg, "alias", "add", "x@example.test"); r.code != 2 {
		t.Errorf("alias add without target: exit %d", r.code)
	}
	want := "@example.test\tcarol@example.test\nsales@example.test\talice@example.test,carol@example.test\nteam@example.test\tsales@example.test\n"
	if got := ok("list"); got != want {
		t.Errorf("alias list = %q, want %q", got, want)
	}
	ok("del", "team@example.test")
	if got := ok("list"); strings.Contains(got, "team@") {
		t.Errorf("after del: %q", got)
	}

	// Offline too.
	s.stop(t)
	ok("add", "team@example.test", "sales@example.test")
	refused("forwarding to an IP address is refused", "add", "fwd@example.test", "x@127.0.0.1")
	if got := ok("list"); !strings.Contains(got, "team@example.test\tsales@example.test") {
		t.Errorf("offline list: %q", got)
	}
}

// TestAliasDelivery: an alias with two users gives one copy each (also
// when a user is a recipient too), plus-addressing reaches an alias, the
// catch-all takes the rest, Delivered-To names what the sender wrote, and
// postmaster (with and without a domain) works once aliased.
func TestAliasDelivery(t *testing.T) {
	s := newSite(t, "example.test", "")
	cfg := filepath.Join(s.dir, "minimail.toml")
	s.addUser(t, "alice@example.test")
	s.addUser(t, "carol@example.test")
	var se *smtp.SMTPError
	if err := s.mx(t, []string{"postmaster@example.test"}, testMessage("bob@other.test", "postmaster@example.test", "pm", "x\r\n")); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("postmaster without alias: %v, want 550", err)
	}
	for _, a := range [][]string{{"sales@example.test", "alice@example.test", "carol@example.test"}, {"postmaster@example.test", "alice@example.test"}} {
		if r := minimail(t, "", append([]string{"--config", cfg, "alias", "add"}, a...)...); r.code != 0 {
			t.Fatalf("alias add %v: %s", a, r.stderr)
		}
	}
	if err := s.mx(t, []string{"Sales@example.test", "alice@example.test"}, testMessage("bob@other.test", "sales@example.test", "one", "x\r\n")); err != nil {
		t.Fatal(err)
	}
	a := s.waitMessages(t, "alice@example.test", 1)
	c := s.waitMessages(t, "carol@example.test", 1)
	if got := deliveredToLines(a[0]); len(got) != 1 || got[0] != "Sales@example.test" {
		t.Errorf("alice's Delivered-To: %q", got)
	}
	if got := deliveredToLines(c[0]); len(got) != 1 || got[0] != "Sales@example.test" {
		t.Errorf("carol's Delivered-To: %q", got)
	}

	if err := s.mx(t, []string{"sales+q3@example.test"}, testMessage("bob@other.test", "sales+q3@example.test", "two", "x\r\n")); err != nil {
		t.Fatal(err)
	}
	c = s.waitMessages(t, "carol@example.test", 2)
	if got := deliveredToLines(c[1]); len(got) != 1 || got[0] != "sales+q3@example.test" {
		t.Errorf("plus-addressed Delivered-To: %q", got)
	}

	if err := s.mx(t, []string{"whoever@example.test"}, nil); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("no catch-all yet: %v, want 550", err)
	}
	if r := minimail(t, "", "--config", cfg, "alias", "add", "@example.test", "carol@example.test"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if err := s.mx(t, []string{"Whoever@example.test"}, testMessage("bob@other.test", "whoever@example.test", "three", "x\r\n")); err != nil {
		t.Fatal(err)
	}
	c = s.waitMessages(t, "carol@example.test", 3)
	if got := deliveredToLines(c[2]); len(got) != 1 || got[0] != "Whoever@example.test" {
		t.Errorf("catch-all Delivered-To: %q", got)
	}

	for i, rcpt := range []string{"postmaster@example.test", "Postmaster"} {
		if err := s.mx(t, []string{rcpt}, testMessage("bob@other.test", rcpt, "pm", "x\r\n")); err != nil {
			t.Fatalf("to %s: %v", rcpt, err)
		}
		a = s.waitMessages(t, "alice@example.test", 3+i)
		if got := deliveredToLines(a[2+i]); len(got) != 1 || got[0] != "postmaster@example.test" {
			t.Errorf("to %s: Delivered-To %q", rcpt, got)
		}
	}
	// Once aliased, a restart does not warn.
	s.stop(t)
	s.start(t)
	if strings.Contains(s.logs.String(), "postmaster reaches no mailbox") {
		t.Errorf("warned with postmaster aliased:\n%s", s.logs)
	}
}

// TestSendAsAliasOverServe: serve wires the aliases into submission's
// send-as rule.
func TestSendAsAliasOverServe(t *testing.T) {
	s := newSite(t, "example.test", "")
	s.addUser(t, "alice@example.test")
	s.addUser(t, "carol@example.test")
	for _, a := range [][]string{{"sales@example.test", "alice@example.test"}, {"shop@example.test", "carol@example.test"}} {
		if _, err := s.srv.st.AddAlias(a[0], a[1:]); err != nil {
			t.Fatal(err)
		}
	}
	send := func(from string) error {
		c, err := smtp.DialStartTLS(s.srv.addrs["listen.submission"], &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewPlainClient("", "alice@example.test", "pw-alice@example.test")); err != nil {
			t.Fatal(err)
		}
		return c.SendMail(from, []string{"carol@example.test"}, bytes.NewReader(testMessage(from, "carol@example.test", "as "+from, "x\r\n")))
	}
	if err := send("sales@example.test"); err != nil {
		t.Fatalf("as own alias: %v", err)
	}
	s.waitMessages(t, "carol@example.test", 1)
	var se *smtp.SMTPError
	if err := send("shop@example.test"); !errors.As(err, &se) || se.Code != 553 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("as carol's alias: %v, want 553 5.7.1", err)
	}
}
