package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"minimail/mta/remote/smtptest"
	"minimail/store"
)

// pythonDSN runs testdata/dsn_client.py with python3, skipping when it is
// not installed unless MINIMAIL_REQUIRE_CLIENTS is set.
func pythonDSN(t *testing.T) func(args ...string) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
			t.Fatal("python3 not installed")
		}
		t.Skip("python3 not installed")
	}
	script, err := filepath.Abs(filepath.Join("testdata", "dsn_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	return func(args ...string) string {
		t.Helper()
		out, err := execCommand(py, append([]string{script}, args...)...)
		if err != nil {
			t.Fatalf("python3 %s: %v\n%s", args[0], err, out)
		}
		return out
	}
}

// pyDSN is what dsn_client.py parse reads in a notice.
type pyDSN struct {
	ContentType  string              `json:"content_type"`
	ReportType   string              `json:"report_type"`
	From         string              `json:"from"`
	ReturnPath   string              `json:"return_path"`
	Parts        []string            `json:"parts"`
	PerMessage   map[string]string   `json:"per_message"`
	PerRecipient []map[string]string `json:"per_recipient"`
	Text         string              `json:"text"`
	Returned     string              `json:"returned"`
}

// TestDSNWithPythonSmtplib is the DSN issue's proof: Python's smtplib
// submits with RFC 3461 parameters over STARTTLS and AUTH, and Python's
// email reads every notice as multipart/report; report-type=delivery-status.
func TestDSNWithPythonSmtplib(t *testing.T) {
	py := pythonDSN(t)
	noDSN := smtptest.Start(t, smtptest.Options{})
	withDSN := smtptest.Start(t, smtptest.Options{DSN: true})
	reject := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(550, 5, 1, 1, "no such user") }})
	slow := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(451, 4, 3, 0, "busy") }})
	// delay_notice of 1ns: the delay notice is due at the first deferral,
	// so no test waits for the clock; retry_min keeps retries out.
	a := newSite(t, "a.test", fmt.Sprintf("[relay]\nretry_min = \"1h\"\ndelay_notice = \"1ns\"\nroutes = { \"nodsn.test\" = %q, \"dsn.test\" = %q, \"reject.test\" = %q, \"slow.test\" = %q }\n",
		noDSN.Addr, withDSN.Addr, reject.Addr, slow.Addr))
	a.addUser(t, "carol@a.test")

	submit := func(t *testing.T, user string, rcpts, mailOpts, rcptOpts []string) {
		t.Helper()
		a.addUser(t, user)
		host, port, _ := strings.Cut(a.srv.addrs["listen.submission"], ":")
		args, _ := json.Marshal(map[string]any{
			"host": host, "port": port, "cafile": filepath.Join(a.dir, "cert.pem"), "servername": "mx.a.test",
			"user": user, "password": "pw-" + user, "from": user, "rcpts": rcpts,
			"msg":          string(testMessage(user, rcpts[0], "dsn test", "body line\r\n")),
			"mail_options": mailOpts, "rcpt_options": rcptOpts,
		})
		out := py("send", string(args))
		var res struct {
			DSN     bool           `json:"dsn"`
			Refused map[string]any `json:"refused"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || !res.DSN || len(res.Refused) != 0 {
			t.Fatalf("smtplib: %s (%v); want DSN offered and nothing refused", out, err)
		}
	}
	parse := func(t *testing.T, msg []byte) pyDSN {
		t.Helper()
		path := filepath.Join(t.TempDir(), "dsn.eml")
		if err := os.WriteFile(path, msg, 0o600); err != nil {
			t.Fatal(err)
		}
		var d pyDSN
		if out := py("parse", path); json.Unmarshal([]byte(out), &d) != nil {
			t.Fatalf("parse: %s", out)
		}
		if d.ContentType != "multipart/report" || d.ReportType != "delivery-status" || len(d.Parts) != 3 ||
			d.Parts[1] != "message/delivery-status" || d.ReturnPath != "<>" || !strings.HasPrefix(d.From, "Mail Delivery System <MAILER-DAEMON@mx.a.test>") {
			t.Fatalf("not an RFC 3464 notice from the null sender: %+v", d)
		}
		if d.PerMessage["Reporting-MTA"] != "dns; mx.a.test" {
			t.Errorf("Reporting-MTA %q", d.PerMessage["Reporting-MTA"])
		}
		return d
	}
	// settled waits until user's message has left the queue along with
	// every notice about it, so that an absent notice is known absent.
	settled := func(t *testing.T, user string, done func(store.QueueEntry) bool) {
		t.Helper()
		waitFor(t, "the queue to settle for "+user, func() bool {
			entries, _ := a.srv.st.QueueEntries()
			for _, e := range entries {
				if e.From == "" || (e.From == user && !done(e)) {
					return false
				}
			}
			return true
		})
	}
	gone := func(store.QueueEntry) bool { return false }
	hdrs := []string{"RET=HDRS", "ENVID=QQ+20314"}
	succFail := []string{"NOTIFY=SUCCESS,FAILURE"}
	wantRcpt := func(t *testing.T, d pyDSN, action, final string) map[string]string {
		t.Helper()
		if len(d.PerRecipient) != 1 {
			t.Fatalf("%d recipient blocks: %+v", len(d.PerRecipient), d)
		}
		r := d.PerRecipient[0]
		if r["Action"] != action || r["Final-Recipient"] != "rfc822; "+final {
			t.Fatalf("recipient block %v, want Action %s for %s", r, action, final)
		}
		return r
	}

	t.Run("local recipient: delivered", func(t *testing.T) {
		submit(t, "u1@a.test", []string{"carol@a.test"}, hdrs, succFail)
		d := parse(t, a.waitMessages(t, "u1@a.test", 1)[0])
		r := wantRcpt(t, d, "delivered", "carol@a.test")
		if r["Status"] != "2.0.0" || d.PerMessage["Original-Envelope-Id"] != "QQ+20314" {
			t.Errorf("delivered notice %v %v", d.PerMessage, r)
		}
		if got := a.waitMessages(t, "carol@a.test", 1); !strings.Contains(string(got[0]), "body line") {
			t.Errorf("carol's copy:\n%s", got[0])
		}
	})

	t.Run("next hop without DSN: relayed", func(t *testing.T) {
		submit(t, "u2@a.test", []string{"x@nodsn.test"}, hdrs, []string{"NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;X+2Btag@nodsn.test"})
		noDSN.Wait(t)
		d := parse(t, a.waitMessages(t, "u2@a.test", 1)[0])
		if r := wantRcpt(t, d, "relayed", "x@nodsn.test"); r["Original-Recipient"] != "rfc822;X+2Btag@nodsn.test" {
			t.Errorf("Original-Recipient %q", r["Original-Recipient"])
		}
	})

	t.Run("next hop with DSN: the parameters pass on, no notice", func(t *testing.T) {
		submit(t, "u3@a.test", []string{"x@dsn.test"}, hdrs, succFail)
		m := withDSN.Wait(t)
		if m.MailOpts.Return != smtp.DSNReturnHeaders || m.MailOpts.EnvelopeID != "QQ 314" {
			t.Errorf("MAIL parameters at the sink: %+v", m.MailOpts)
		}
		if n := m.RcptOpts[0].Notify; len(n) != 2 || n[0] != smtp.DSNNotifySuccess || n[1] != smtp.DSNNotifyFailure {
			t.Errorf("RCPT parameters at the sink: %+v", m.RcptOpts)
		}
		settled(t, "u3@a.test", gone)
		if list, _ := a.srv.st.List("u3@a.test"); len(list) != 0 {
			t.Fatalf("u3 got %d notices; the next hop reports", len(list))
		}
	})

	t.Run("550: failure notice with the header only and the ENVID", func(t *testing.T) {
		submit(t, "u4@a.test", []string{"x@reject.test"}, hdrs, succFail)
		d := parse(t, a.waitMessages(t, "u4@a.test", 1)[0])
		r := wantRcpt(t, d, "failed", "x@reject.test")
		if r["Status"] != "5.1.1" || d.PerMessage["Original-Envelope-Id"] != "QQ+20314" || d.Parts[2] != "text/rfc822-headers" ||
			!strings.Contains(d.Returned, "Subject: dsn test") || strings.Contains(d.Returned, "body line") {
			t.Errorf("failure notice: %v %v %s %q", d.PerMessage, r, d.Parts[2], d.Returned)
		}
	})

	t.Run("NOTIFY=NEVER: no notice", func(t *testing.T) {
		submit(t, "u5@a.test", []string{"x@reject.test"}, hdrs, []string{"NOTIFY=NEVER"})
		settled(t, "u5@a.test", gone)
		if list, _ := a.srv.st.List("u5@a.test"); len(list) != 0 {
			t.Fatalf("u5 got %d notices with NOTIFY=NEVER", len(list))
		}
	})

	t.Run("deferred with NOTIFY=DELAY: delay notice", func(t *testing.T) {
		submit(t, "u6@a.test", []string{"x@slow.test"}, hdrs, []string{"NOTIFY=DELAY,FAILURE"})
		d := parse(t, a.waitMessages(t, "u6@a.test", 1)[0])
		if r := wantRcpt(t, d, "delayed", "x@slow.test"); r["Will-Retry-Until"] == "" {
			t.Errorf("delay notice %v", r)
		}
	})

	t.Run("deferred with NOTIFY=FAILURE alone: no delay notice", func(t *testing.T) {
		submit(t, "u7@a.test", []string{"y@slow.test"}, hdrs, []string{"NOTIFY=FAILURE"})
		settled(t, "u7@a.test", func(e store.QueueEntry) bool { return e.DelayNotified })
		if list, _ := a.srv.st.List("u7@a.test"); len(list) != 0 {
			t.Fatalf("u7 got %d notices without NOTIFY=DELAY", len(list))
		}
	})
}
