package queue

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"minimail/mta/delivery"
	"minimail/mta/remote/smtptest"
	"minimail/mta/xtext"
	"minimail/store"
)

const dsnMsg = "From: bob@a.test\r\nSubject: lunch\r\nMessage-ID: <m1@a.test>\r\n\r\nsee you at noon\r\n"

func notify(n ...smtp.DSNNotify) *smtp.RcptOptions { return &smtp.RcptOptions{Notify: n} }

var (
	success = smtp.DSNNotifySuccess
	failure = smtp.DSNNotifyFailure
	delay   = smtp.DSNNotifyDelayed
	never   = smtp.DSNNotifyNever
)

func (e *env) enqueueDSN(from string, rcpts []string, p delivery.DSN) string {
	e.t.Helper()
	id, err := e.q.EnqueueDSN("", from, rcpts, []byte(dsnMsg), p)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// TestQueueDSN_SuccessForLocalRecipientsIsOneDeliveredNotice: two local
// recipients with NOTIFY=SUCCESS get one notice with Action: delivered,
// with the ENVID and each ORCPT (in xtext), once the copies are stored.
func TestQueueDSN_SuccessForLocalRecipientsIsOneDeliveredNotice(t *testing.T) {
	e := newEnv(t, nil, nil)
	for _, u := range []string{"carol@a.test", "dave@a.test"} {
		if err := e.st.AddUser(u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	orcpt := notify(success, failure)
	orcpt.OriginalRecipientType, orcpt.OriginalRecipient = smtp.DSNAddressTypeRFC822, "Carol+x=y@a.test"
	e.enqueueDSN("bob@a.test", []string{"carol@a.test", "dave@a.test"}, delivery.DSN{EnvID: "QQ 314", Rcpts: []*smtp.RcptOptions{orcpt, notify(success)}})
	e.runOnce()
	if n := len(e.mailbox("carol@a.test")) + len(e.mailbox("dave@a.test")); n != 2 {
		t.Fatalf("%d copies stored, want 2", n)
	}
	box := e.mailbox("bob@a.test")
	if len(box) != 1 {
		t.Fatalf("bob has %d messages, want one success notice", len(box))
	}
	if !strings.HasPrefix(string(box[0]), "Return-Path: <>\r\n") {
		t.Errorf("notice not from the null sender:\n%s", box[0])
	}
	d := mustDSN(t, box[0])
	if got := d.perMessage.Get("Original-Envelope-Id"); got != "QQ+20314" {
		t.Errorf("Original-Envelope-Id %q, want the ENVID in xtext", got)
	}
	if len(d.rcpts) != 2 {
		t.Fatalf("%d recipient blocks, want 2", len(d.rcpts))
	}
	for i, want := range []string{"rfc822;Carol+2Bx+3Dy@a.test", ""} {
		r := d.rcpts[i]
		if r.Get("Action") != "delivered" || r.Get("Status") != "2.0.0" || r.Get("Original-Recipient") != want {
			t.Errorf("recipient %d: %v", i, r.Map())
		}
	}
	if got, err := xtext.Decode(strings.TrimPrefix(d.rcpts[0].Get("Original-Recipient"), "rfc822;")); err != nil || got != "Carol+x=y@a.test" {
		t.Errorf("Original-Recipient decodes to %q, %v; want the ORCPT as given", got, err)
	}
	if got, err := xtext.Decode(d.perMessage.Get("Original-Envelope-Id")); err != nil || got != "QQ 314" {
		t.Errorf("Original-Envelope-Id decodes to %q, %v", got, err)
	}
	if !strings.Contains(d.headers, "Subject: lunch") || strings.Contains(d.headers, "noon") {
		t.Errorf("a success notice returns the header only: %q", d.headers)
	}
	if all := e.entries(); len(all) != 0 {
		t.Fatalf("queue holds %+v", all)
	}
}

// TestQueueDSN_NextHopWithoutDSNGetsARelayedNotice and with DSN none, the
// parameters being passed on instead.
func TestQueueDSN_SuccessToRemoteRecipients(t *testing.T) {
	for _, tt := range []struct {
		name       string
		offer      bool
		wantNotice bool
	}{{"next hop without DSN: relayed", false, true}, {"next hop with DSN: it reports", true, false}} {
		t.Run(tt.name, func(t *testing.T) {
			b := smtptest.Start(t, smtptest.Options{DSN: tt.offer})
			e := newEnv(t, map[string]string{"b.test": b.Addr}, nil)
			o := notify(success, failure)
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, "x@b.test"
			e.enqueueDSN("bob@a.test", []string{"x@b.test", "y@b.test"}, delivery.DSN{Ret: smtp.DSNReturnHeaders, EnvID: "env-1", Rcpts: []*smtp.RcptOptions{o, nil}})
			e.runOnce()
			m := b.Wait(t)
			box := e.mailbox("bob@a.test")
			if !tt.wantNotice {
				if len(box) != 0 {
					t.Fatalf("bob got %d notices from us; the next hop reports", len(box))
				}
				if m.MailOpts.Return != smtp.DSNReturnHeaders || m.MailOpts.EnvelopeID != "env-1" ||
					len(m.RcptOpts[0].Notify) != 2 || m.RcptOpts[0].OriginalRecipient != "x@b.test" || len(m.RcptOpts[1].Notify) != 0 {
					t.Fatalf("parameters at the next hop: %+v %+v", m.MailOpts, m.RcptOpts)
				}
			} else {
				if len(box) != 1 {
					t.Fatalf("bob has %d messages, want one relayed notice", len(box))
				}
				d := mustDSN(t, box[0])
				if len(d.rcpts) != 1 || d.rcpts[0].Get("Action") != "relayed" || d.rcpts[0].Get("Final-Recipient") != "rfc822; x@b.test" ||
					d.rcpts[0].Get("Original-Recipient") != "rfc822;x@b.test" || d.perMessage.Get("Original-Envelope-Id") != "env-1" {
					t.Fatalf("relayed notice: %v %v", d.perMessage.Map(), d.rcpts)
				}
			}
			if all := e.entries(); len(all) != 0 {
				t.Fatalf("queue holds %+v", all)
			}
		})
	}
}

// TestQueueDSN_FailureNotice: NOTIFY decides whether a 550 is reported,
// RET what comes back.
func TestQueueDSN_FailureNotice(t *testing.T) {
	big := dsnMsg + strings.Repeat("x", 200) + "\r\n"
	for _, tt := range []struct {
		name     string
		rcpt     *smtp.RcptOptions
		ret      smtp.DSNReturn
		msg      string
		maxRet   int
		wantDSN  bool
		wantType string
		wantBody bool
		wantNote string
	}{
		{"NOTIFY absent, RET absent: the header", nil, "", dsnMsg, 0, true, "text/rfc822-headers", false, "The header of your message is attached."},
		{"RET=HDRS: the header", notify(failure), smtp.DSNReturnHeaders, dsnMsg, 0, true, "text/rfc822-headers", false, "The header"},
		{"RET=FULL: the message", notify(success, failure), smtp.DSNReturnFull, dsnMsg, 0, true, "message/rfc822", true, "Your message is attached."},
		{"RET=FULL over the limit: the header, and why", notify(failure), smtp.DSNReturnFull, big, 100, true, "text/rfc822-headers", false, "over the 100-octet limit"},
		{"NOTIFY=NEVER: nothing", notify(never), smtp.DSNReturnFull, dsnMsg, 0, false, "", false, ""},
		{"NOTIFY=SUCCESS,DELAY: no failure notice", notify(success, delay), "", dsnMsg, 0, false, "", false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(550, 5, 1, 1, "no such user") }})
			e := newEnv(t, map[string]string{"b.test": b.Addr}, func(o *Options) { o.MaxReturnBytes = tt.maxRet })
			if _, err := e.q.EnqueueDSN("", "bob@a.test", []string{"x@b.test"}, []byte(tt.msg), delivery.DSN{Ret: tt.ret, EnvID: "E1", Rcpts: []*smtp.RcptOptions{tt.rcpt}}); err != nil {
				t.Fatal(err)
			}
			e.runOnce()
			if all := e.entries(); len(all) != 0 {
				t.Fatalf("queue holds %+v", all)
			}
			box := e.mailbox("bob@a.test")
			if !tt.wantDSN {
				if len(box) != 0 {
					t.Fatalf("bob got %d notices, want none", len(box))
				}
				return
			}
			if len(box) != 1 {
				t.Fatalf("bob has %d messages, want one failure notice", len(box))
			}
			d := mustDSN(t, box[0])
			if d.rcpts[0].Get("Action") != "failed" || d.perMessage.Get("Original-Envelope-Id") != "E1" {
				t.Errorf("failure notice %v %v", d.perMessage.Map(), d.rcpts[0].Map())
			}
			if d.headersType != tt.wantType || strings.Contains(d.headers, "noon") != tt.wantBody || !strings.Contains(d.headers, "Subject: lunch") {
				t.Errorf("returned part %s %q", d.headersType, d.headers)
			}
			if !strings.Contains(d.text, tt.wantNote) {
				t.Errorf("explanation lacks %q:\n%s", tt.wantNote, d.text)
			}
		})
	}
}

// TestQueueDSN_DelayNotice: the delay notice goes to the recipients that
// asked for it (DELAY, or no NOTIFY at all) and to no one else.
func TestQueueDSN_DelayNotice(t *testing.T) {
	for _, tt := range []struct {
		name  string
		rcpts []*smtp.RcptOptions
		want  []string // recipients the notice names; nil: no notice
	}{
		{"NOTIFY absent means FAILURE,DELAY", nil, []string{"x@b.test", "y@b.test"}},
		{"NOTIFY=DELAY", []*smtp.RcptOptions{notify(delay), notify(failure)}, []string{"x@b.test"}},
		{"NOTIFY=FAILURE alone", []*smtp.RcptOptions{notify(failure), notify(failure)}, nil},
		{"NOTIFY=NEVER", []*smtp.RcptOptions{notify(never), notify(never)}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(451, 4, 3, 0, "busy") }})
			e := newEnv(t, map[string]string{"b.test": b.Addr}, func(o *Options) { o.DelayNotice = 30 * time.Minute })
			e.enqueueDSN("bob@a.test", []string{"x@b.test", "y@b.test"}, delivery.DSN{Rcpts: tt.rcpts})
			for e.clock.Now().Before(t0.Add(2 * time.Hour)) {
				e.runOnce()
				e.clock.Set(e.entries()[0].NextAttempt)
			}
			box := e.mailbox("bob@a.test")
			if tt.want == nil {
				if len(box) != 0 {
					t.Fatalf("bob got %d notices, want none", len(box))
				}
				if en := e.entries(); len(en) != 1 || !en[0].DelayNotified {
					t.Fatalf("entry %+v", en)
				}
				return
			}
			if len(box) != 1 {
				t.Fatalf("bob has %d messages, want one delay notice", len(box))
			}
			d := mustDSN(t, box[0])
			var got []string
			for _, r := range d.rcpts {
				if r.Get("Action") != "delayed" {
					t.Errorf("action %q", r.Get("Action"))
				}
				got = append(got, strings.TrimPrefix(r.Get("Final-Recipient"), "rfc822; "))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("delay notice names %v, want %v", got, tt.want)
			}
		})
	}
}

// TestQueueDSN_NoticeAsksForNoNotice: a notice to a remote sender goes
// from the null sender with NOTIFY=NEVER, and a failing notice is never
// reported.
func TestQueueDSN_NoticeAsksForNoNotice(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(550, 5, 1, 1, "no such user") }})
	c := smtptest.Start(t, smtptest.Options{DSN: true})
	e := newEnv(t, map[string]string{"b.test": b.Addr, "c.test": c.Addr}, nil)
	e.enqueueDSN("carol@c.test", []string{"x@b.test"}, delivery.DSN{Rcpts: []*smtp.RcptOptions{notify(failure)}})
	e.runOnce()
	m := c.Wait(t)
	if m.From != "" || len(m.RcptOpts) != 1 || len(m.RcptOpts[0].Notify) != 1 || m.RcptOpts[0].Notify[0] != never {
		t.Fatalf("notice sent from %q with %+v; want <> and NOTIFY=NEVER", m.From, m.RcptOpts)
	}
	if all := e.entries(); len(all) != 0 {
		t.Fatalf("queue holds %+v", all)
	}
}

// flakySpool fails EnqueueNotice while broken is set.
type flakySpool struct {
	*store.Store
	broken atomic.Bool
}

func (f *flakySpool) EnqueueNotice(e, n store.QueueEntry, body []byte) (uint64, error) {
	if f.broken.Load() {
		return 0, errors.New("input/output error")
	}
	return f.Store.EnqueueNotice(e, n, body)
}

// TestQueueDSN_SuccessNoticeIsNeitherLostNorRepeated: when the notice
// cannot be stored, the entry stays unmarked and the next pass sends it;
// after a restart nothing is sent again.
func TestQueueDSN_SuccessNoticeIsNeitherLostNorRepeated(t *testing.T) {
	e := newEnv(t, nil, nil)
	if err := e.st.AddUser("carol@a.test", "pw"); err != nil {
		t.Fatal(err)
	}
	fs := &flakySpool{Store: e.st}
	fs.broken.Store(true)
	opts := e.q.opts
	e.q = New(fs, opts)
	e.enqueueDSN("bob@a.test", []string{"carol@a.test"}, delivery.DSN{Rcpts: []*smtp.RcptOptions{notify(success)}})
	e.runOnce()
	if n := len(e.mailbox("carol@a.test")); n != 1 {
		t.Fatalf("carol has %d copies", n)
	}
	if n := len(e.mailbox("bob@a.test")); n != 0 {
		t.Fatalf("bob has %d notices although none could be stored", n)
	}
	all := e.entries()
	if len(all) != 1 || all[0].Rcpts[0].State != store.RcptSent || all[0].Rcpts[0].Notified || all[0].Rcpts[0].SuccessAction != "delivered" {
		t.Fatalf("entry after the failed notice: %+v", all)
	}
	fs.broken.Store(false)
	e.clock.Set(all[0].NextAttempt)
	e.restart()
	e.runOnce()
	e.clock.Add(24 * time.Hour)
	e.runOnce()
	if n := len(e.mailbox("carol@a.test")); n != 1 {
		t.Fatalf("carol has %d copies after the retry, want still 1", n)
	}
	box := e.mailbox("bob@a.test")
	if len(box) != 1 || mustDSN(t, box[0]).rcpts[0].Get("Action") != "delivered" {
		t.Fatalf("bob has %d messages, want exactly one delivered notice", len(box))
	}
	if all := e.entries(); len(all) != 0 {
		t.Fatalf("queue holds %+v", all)
	}
}
