package mta

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// countingMetrics records what a Server reports.
type countingMetrics struct {
	mu        sync.Mutex
	received  map[string]int
	delivered int
	rejected  map[string]int
}

func newCountingMetrics() *countingMetrics {
	return &countingMetrics{received: map[string]int{}, rejected: map[string]int{}}
}

func (m *countingMetrics) Received(l string) { m.mu.Lock(); m.received[l]++; m.mu.Unlock() }
func (m *countingMetrics) Delivered(n int)   { m.mu.Lock(); m.delivered += n; m.mu.Unlock() }
func (m *countingMetrics) Rejected(r string) { m.mu.Lock(); m.rejected[r]++; m.mu.Unlock() }

func (m *countingMetrics) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprintf("received %v delivered %d rejected %v", m.received, m.delivered, m.rejected)
}

func TestMetrics_CountEachOutcomeOnce(t *testing.T) {
	m := newCountingMetrics()
	e := newEnv(t, func(o *Options, _ *Local) { o.Metrics = m })

	// MX: one message to two local mailboxes, one to an unknown user
	// (the whole transaction refused), one relay attempt.
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")
	if r := cl.send("x@remote.test", []string{"alice@example.org", "bob@example.org"}, "Subject: a\r\n\r\na\r\n"); !strings.HasPrefix(r, "250 ") {
		t.Fatal(r)
	}
	cl.cmd("MAIL FROM:<x@remote.test>", "250 ")
	cl.cmd("RCPT TO:<nobody@example.org>", "550 5.1.1")
	cl.cmd("RSET", "250 ")
	cl.cmd("MAIL FROM:<x@remote.test>", "250 ")
	cl.cmd("RCPT TO:<y@elsewhere.test>", "550 5.7.1")
	cl.cmd("QUIT", "221 ")

	// Submission: a sender not the user's is refused at MAIL; a message
	// to a remote recipient is queued.
	sub := dialTLS(t, e.subsAddr, e.clientTLS)
	sub.login("alice@example.org")
	sub.cmd("MAIL FROM:<bob@example.org>", "553 5.7.1")
	if r := sub.send("alice@example.org", []string{"carol@remote.test"}, "From: <alice@example.org>\r\nSubject: b\r\n\r\nb\r\n"); !strings.HasPrefix(r, "250 ") {
		t.Fatal(r)
	}
	sub.cmd("QUIT", "221 ")
	e.mx.Shutdown(t.Context())
	e.sub.Shutdown(t.Context())

	m.mu.Lock()
	defer m.mu.Unlock()
	if want := map[string]int{"smtp": 1, "submissions": 1}; !mapsEqual(m.received, want) {
		t.Errorf("received %v, want %v", m.received, want)
	}
	if m.delivered != 2 {
		t.Errorf("delivered %d, want 2 (one per local mailbox)", m.delivered)
	}
	want := map[string]int{ReasonUnknownUser: 1, ReasonRelayDenied: 1, ReasonSenderDenied: 1}
	if !mapsEqual(m.rejected, want) {
		t.Errorf("rejected %v, want %v", m.rejected, want)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestReasonFor_CodesNameTheirReason(t *testing.T) {
	for _, tc := range []struct {
		code int
		ec   smtp.EnhancedCode
		want string
	}{
		{550, smtp.EnhancedCode{5, 1, 1}, ReasonUnknownUser},
		{552, smtp.EnhancedCode{5, 3, 4}, ReasonTooBig},
		{452, smtp.EnhancedCode{4, 2, 2}, ReasonMailboxFull},
		{552, smtp.EnhancedCode{5, 2, 2}, ReasonMailboxFull},
		{530, smtp.EnhancedCode{5, 7, 0}, ReasonAuthRequired},
		{553, smtp.EnhancedCode{5, 1, 7}, ReasonBadAddress},
		{553, smtp.EnhancedCode{5, 6, 7}, ReasonBadAddress},
		{550, smtp.EnhancedCode{5, 6, 0}, ReasonMalformed},
		{503, smtp.EnhancedCode{5, 5, 1}, ReasonProtocol},
		{550, smtp.EnhancedCode{5, 7, 1}, ReasonPolicy},
		{421, smtp.EnhancedCode{4, 3, 2}, ReasonUnavailable},
		{451, smtp.EnhancedCode{4, 3, 0}, ReasonUnavailable},
		{554, smtp.EnhancedCode{5, 0, 0}, ReasonOther},
	} {
		if got := reasonFor(tc.code, tc.ec); got != tc.want {
			t.Errorf("reasonFor(%d %v) = %s, want %s", tc.code, tc.ec, got, tc.want)
		}
		if !slices.Contains(Reasons, tc.want) {
			t.Errorf("%s is not in Reasons", tc.want)
		}
	}
}

func TestSubmitLocal_AddsWhatSubmissionAdds(t *testing.T) {
	m := newCountingMetrics()
	e := newEnv(t, func(o *Options, _ *Local) {
		o.Metrics = m
		o.Sign = func(domain string, msg []byte) ([]byte, error) {
			return []byte("DKIM-Signature: d=" + domain + "\r\n"), nil
		}
	})
	id, err := e.sub.SubmitLocal(LocalMessage{
		From: "root@example.org", FullName: `Cron "Daemon"`, User: "root", UID: 0,
		Rcpts:   []string{"alice@example.org", "carol@remote.test"},
		Message: []byte("Subject: report\nBcc: secret@remote.test\n\nall fine\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	box := e.mailbox("alice@example.org")
	if len(box) != 1 {
		t.Fatalf("alice has %d messages", len(box))
	}
	q := e.queue.entries()
	if len(q) != 1 || q[0].ID != id || q[0].From != "root@example.org" || !slices.Equal(q[0].Rcpts, []string{"carol@remote.test"}) {
		t.Fatalf("queued %+v, id %s", q, id)
	}
	for _, msg := range [][]byte{box[0], q[0].Msg} {
		s := string(msg)
		for _, want := range []string{"Received: by " + testHost + " (minimail sendmail, from userid 0, root)\r\n\tid " + id,
			"DKIM-Signature: d=example.org\r\n", `From: "Cron \"Daemon\"" <root@example.org>` + "\r\n", "\r\nDate: ", "\r\nMessage-ID: <"} {
			if !strings.Contains(s, want) {
				t.Errorf("missing %q in\n%s", want, s)
			}
		}
		if strings.Contains(s, "Bcc") || !onlyCRLF(msg) {
			t.Errorf("Bcc kept or bare LF:\n%q", s)
		}
	}
	if m.received["sendmail"] != 1 || m.delivered != 1 {
		t.Errorf("metrics: %s", m)
	}
}

func TestSubmitLocal_Refusals(t *testing.T) {
	m := newCountingMetrics()
	e := newEnv(t, func(o *Options, _ *Local) { o.Metrics = m; o.MaxMessageBytes = 1000; o.MaxRecipients = 2 })
	for _, tc := range []struct {
		name string
		msg  LocalMessage
		code int
	}{
		{"unknown local user", LocalMessage{From: "root@example.org", Rcpts: []string{"nobody@example.org", "carol@remote.test"}, Message: []byte("x\n")}, 550},
		{"too big", LocalMessage{From: "root@example.org", Rcpts: []string{"alice@example.org"}, Message: []byte("Subject: x\n\n" + strings.Repeat("x", 1000))}, 552},
		{"too big once CRLF", LocalMessage{From: "root@example.org", Rcpts: []string{"alice@example.org"}, Message: []byte("Subject: x\n\n" + strings.Repeat("x\n", 495))}, 552},
		{"over max recipients", LocalMessage{From: "root@example.org", Rcpts: []string{"alice@example.org", "bob@example.org", "c@remote.test"}, Message: []byte("x\n")}, 452},
		{"no recipients", LocalMessage{From: "root@example.org", Message: []byte("x\n")}, 554},
		{"bad sender", LocalMessage{From: "root", Rcpts: []string{"alice@example.org"}, Message: []byte("x\n")}, 553},
	} {
		_, err := e.sub.SubmitLocal(tc.msg)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != tc.code {
			t.Errorf("%s: %v, want %d", tc.name, err, tc.code)
		}
	}
	if n := len(e.mailbox("alice@example.org")); n != 0 || len(e.queue.entries()) != 0 {
		t.Errorf("refused messages stored: %d in the mailbox, %d queued", n, len(e.queue.entries()))
	}
	// Exactly the limit is taken, as on SMTP.
	exact := "Subject: x\r\n\r\n"
	exact += strings.Repeat("x", 1000-len(exact)-2) + "\r\n"
	if _, err := e.sub.SubmitLocal(LocalMessage{From: "root@example.org", Rcpts: []string{"alice@example.org"}, Message: []byte(exact)}); err != nil {
		t.Errorf("message of exactly the limit: %v", err)
	}
	if m.rejected[ReasonUnknownUser] != 1 || m.rejected[ReasonTooBig] != 2 {
		t.Errorf("metrics: %s", m)
	}
}
