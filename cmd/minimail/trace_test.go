package main

import (
	"crypto/tls"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"minimail/mta/remote/smtptest"
)

// submitForID submits msg as user to rcpts and returns the id of the 250
// reply.
func submitForID(t *testing.T, s *site, user string, rcpts []string, msg []byte) string {
	t.Helper()
	c, err := smtp.DialStartTLS(s.srv.addrs["listen.submission"], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, "pw-"+user)); err != nil {
		t.Fatal(err)
	}
	return sendForID(t, c, user, rcpts, msg)
}

// sendForID runs one transaction on c and returns the id its 250 reply
// names.
func sendForID(t *testing.T, c *smtp.Client, from string, rcpts []string, msg []byte) string {
	t.Helper()
	if err := c.Mail(from, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(msg)
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	_, id, ok := strings.Cut(resp.StatusText, "id=")
	if !ok || len(id) != 16 {
		t.Fatalf("250 reply %q names no id", resp.StatusText)
	}
	return id
}

// traceLines runs `minimail trace Q` and returns its lines.
func traceLines(t *testing.T, s *site, q string) []string {
	t.Helper()
	r := minimail(t, "", "--config", s.cfg.path, "trace", q)
	if r.code != 0 {
		t.Fatalf("trace %s: exit %d\n%s%s", q, r.code, r.stdout, r.stderr)
	}
	return strings.Split(strings.TrimSpace(r.stdout), "\n")
}

// kindsOf returns the second field (the kind) of each trace line.
func kindsOf(lines []string) string {
	var k []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 1 {
			k = append(k, f[1])
		}
	}
	return strings.Join(k, " ")
}

// lineOf returns the first line of kind, or fails.
func lineOf(t *testing.T, lines []string, kind string) string {
	t.Helper()
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 1 && f[1] == kind {
			return l
		}
	}
	t.Fatalf("no %s event in:\n%s", kind, strings.Join(lines, "\n"))
	return ""
}

// TestTraceFollowsAMessageThroughEveryStage is issue 19's proof: one
// message to a local and a remote recipient (the remote first answers 451,
// then 250) traced by its 250 id, its Message-ID and a recipient; a bounce
// traced to its DSN and the DSN itself; a POP3 retrieval and deletion; the
// same trace from a stopped server.
func TestTraceFollowsAMessageThroughEveryStage(t *testing.T) {
	var datas atomic.Int32
	sink := smtptest.Start(t, smtptest.Options{
		Rcpt: func(rcpt string) error {
			if strings.HasPrefix(rcpt, "dave@") {
				return smtptest.Reply(550, 5, 1, 1, "no such user dave")
			}
			return nil
		},
		Data: func(smtptest.Message) error {
			if datas.Add(1) == 1 {
				return smtptest.Reply(451, 4, 3, 0, "try again later")
			}
			return nil
		},
	})
	// retry_min is an hour: the retry happens when the test flushes the
	// queue, never by waiting.
	a := newSite(t, "a.test", fmt.Sprintf("[relay]\nretry_min = \"1h\"\nroutes = { \"remote.test\" = %q }\n", sink.Addr))
	a.addUser(t, "bob@a.test")
	a.addUser(t, "alice@a.test")

	msg := testMessage("bob@a.test", "alice@a.test, carol@remote.test", "trace proof", "hello\r\n")
	id := submitForID(t, a, "bob@a.test", []string{"alice@a.test", "carol@remote.test"}, msg)
	waitFor(t, "the first attempt to be deferred", func() bool {
		entries, _ := a.srv.st.QueueEntries()
		return len(entries) == 1 && entries[0].Attempts > 0
	})
	// A flush that comes while the first attempt is still finishing skips
	// the entry (it is in flight): flush until the retry has happened.
	waitFor(t, "the queue to empty after a flush", func() bool {
		if _, err := callServer(a.cfg.DataDir, request{Op: "queue.flush"}); err != nil {
			t.Fatal(err)
		}
		entries, _ := a.srv.st.QueueEntries()
		return len(entries) == 0
	})

	// One id: the Received field of the stored copy and the sink's copy
	// name the id of the 250 reply, as every trace line does.
	for _, m := range [][]byte{a.waitMessages(t, "alice@a.test", 1)[0], sink.Wait(t).Data} {
		if !strings.Contains(string(m), " id "+id) {
			t.Errorf("Received lacks id %s:\n%s", id, m)
		}
	}

	const want = "received delivered queued attempt deferred attempt sent"
	lines := traceLines(t, a, id)
	t.Logf("trace %s:\n%s", id, strings.Join(lines, "\n"))
	if got := kindsOf(lines); got != want {
		t.Fatalf("trace %s: kinds %q, want %q:\n%s", id, got, want, strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if !strings.Contains(l, "id="+id) {
			t.Errorf("line without id=%s: %s", id, l)
		}
	}
	for kind, facts := range map[string][]string{
		"received":  {"listener=submission", "user=bob@a.test", "from=bob@a.test", "rcpt=alice@a.test", "rcpt=carol@remote.test", "message_id=<trace.proof@test>"},
		"delivered": {"mailbox=alice@a.test"},
		"attempt":   {"addr=" + sink.Addr},
		"deferred":  {"rcpt=carol@remote.test", "451"},
		"sent":      {"rcpt=carol@remote.test", `reply="250 2.0.0 OK: queued"`},
	} {
		l := lineOf(t, lines, kind)
		for _, f := range facts {
			if !strings.Contains(l, f) {
				t.Errorf("%s event lacks %s: %s", kind, f, l)
			}
		}
	}
	for _, q := range []string{"<trace.proof@test>", "trace.proof@test", "carol@remote.test", "Alice@A.test"} {
		if got := kindsOf(traceLines(t, a, q)); got != want {
			t.Errorf("trace %s: kinds %q, want %q", q, got, want)
		}
	}

	t.Run("a bounce names its DSN, which is traceable", func(t *testing.T) {
		bid := submitForID(t, a, "bob@a.test", []string{"dave@remote.test"}, testMessage("bob@a.test", "dave@remote.test", "to dave", "x\r\n"))
		a.waitMessages(t, "bob@a.test", 1)
		waitFor(t, "the bounced entry to leave the queue", func() bool {
			entries, _ := a.srv.st.QueueEntries()
			return len(entries) == 0
		})
		lines := traceLines(t, a, bid)
		if got := kindsOf(lines); got != "received queued attempt bounced" {
			t.Fatalf("trace %s: %q:\n%s", bid, got, strings.Join(lines, "\n"))
		}
		bounced := lineOf(t, lines, "bounced")
		_, dsn, ok := strings.Cut(bounced, " dsn=")
		if !ok || !strings.Contains(bounced, "550") {
			t.Fatalf("bounced event names no DSN or reply: %s", bounced)
		}
		dsn, _, _ = strings.Cut(dsn, " ")
		dl := traceLines(t, a, dsn)
		t.Logf("bounce:\n%s\nDSN:\n%s", strings.Join(lines, "\n"), strings.Join(dl, "\n"))
		if got := kindsOf(dl); got != "queued delivered" || !strings.Contains(dl[0], "dsn_for="+bid) || !strings.Contains(dl[1], "mailbox=bob@a.test") {
			t.Fatalf("trace of the DSN %s:\n%s", dsn, strings.Join(dl, "\n"))
		}
		// The DSN's headers name the original id.
		got := a.waitMessages(t, "bob@a.test", 1)
		if !strings.Contains(string(got[0]), "X-Minimail-Queue-ID: "+bid) {
			t.Errorf("the DSN does not name %s:\n%s", bid, got[0])
		}
	})

	t.Run("POP3 retrieval and deletion", func(t *testing.T) {
		if got := pop3Fetch(t, a.srv.addrs["listen.pop3s"], "alice@a.test"); len(got) != 1 {
			t.Fatalf("alice fetched %d messages, want 1", len(got))
		}
		lines := traceLines(t, a, id)
		t.Logf("after POP3:\n%s", strings.Join(lines, "\n"))
		if got := kindsOf(lines); got != want+" retrieved deleted" {
			t.Fatalf("trace %s after POP3: %q", id, got)
		}
		if l := lineOf(t, lines, "deleted"); !strings.Contains(l, "mailbox=alice@a.test") || !strings.Contains(l, "client=127.0.0.1") {
			t.Errorf("deleted event: %s", l)
		}
	})

	t.Run("a stopped server's store answers too", func(t *testing.T) {
		a.stop(t)
		if got := kindsOf(traceLines(t, a, id)); got != want+" retrieved deleted" {
			t.Fatalf("trace %s on a stopped server: %q", id, got)
		}
		if r := minimail(t, "", "--config", a.cfg.path, "trace", "0123456789abcdef"); r.code != 1 || !strings.Contains(r.stderr, "no trace events") {
			t.Errorf("unknown id: exit %d %q, want 1 and a clear error", r.code, r.stderr)
		}
		if r := minimail(t, "", "--config", a.cfg.path, "trace", "two words"); r.code != 2 {
			t.Errorf("malformed id: exit %d %q, want 2", r.code, r.stderr)
		}
	})
}

// TestTraceOfMailFromTheMX: mail that arrives on the MX listener is
// traced from its 250 id: received (listener, client, HELO, the checks'
// verdicts) and delivered.
func TestTraceOfMailFromTheMX(t *testing.T) {
	a := newSite(t, "a.test", "")
	a.addUser(t, "alice@a.test")
	c, err := smtp.Dial(a.srv.addrs["listen.smtp"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mx.other.test"); err != nil {
		t.Fatal(err)
	}
	id := sendForID(t, c, "bob@other.test", []string{"alice@a.test"}, testMessage("bob@other.test", "alice@a.test", "from afar", "hi\r\n"))
	lines := traceLines(t, a, id)
	if got := kindsOf(lines); got != "received delivered" {
		t.Fatalf("trace %s: %q:\n%s", id, got, strings.Join(lines, "\n"))
	}
	for _, f := range []string{"listener=smtp", "client=127.0.0.1", "helo=mx.other.test", "from=bob@other.test", "checks=", "message_id=<from.afar@test>"} {
		if !strings.Contains(lines[0], f) {
			t.Errorf("received event lacks %s: %s", f, lines[0])
		}
	}
}

// TestTraceOfMailFromSendmail: a message handed in with `minimail
// sendmail` is traced by its recipient: received on listener sendmail with
// the Unix user, then delivered.
func TestTraceOfMailFromSendmail(t *testing.T) {
	a := newSite(t, "a.test", "")
	a.addUser(t, "alice@a.test")
	if r := minimail(t, "Subject: cron\n\nx\n", "--config", a.cfg.path, "sendmail", "alice@a.test"); r.code != 0 {
		t.Fatalf("sendmail: exit %d %s", r.code, r.stderr)
	}
	lines := traceLines(t, a, "alice@a.test")
	if got := kindsOf(lines); got != "received delivered" || !strings.Contains(lines[0], "listener=sendmail") || !strings.Contains(lines[0], "user=") {
		t.Fatalf("trace alice@a.test: %q:\n%s", got, strings.Join(lines, "\n"))
	}
}
