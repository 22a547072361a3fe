package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"minimail/mta/mailaddr"
	"minimail/mta/remote/smtptest"
	"minimail/store"
)

func TestQueueDeliversRemoteAndLocalRecipients(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, func(o *Options) { o.LocalDomains = []string{"A.test."} })
	id := e.enqueue("bob@a.test", "x@b.test", "bob@a.test", "y@B.test")
	e.runOnce()

	msgs := b.Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].Rcpts, " ") != "x@b.test y@B.test" {
		t.Fatalf("b.test got %+v, want one transaction for both recipients", msgs)
	}
	if got := e.mailbox("bob@a.test"); len(got) != 1 || !strings.Contains(string(got[0]), "Subject: lunch") {
		t.Fatalf("local mailbox: %q", got)
	}
	if all := e.entries(); len(all) != 0 {
		t.Fatalf("queue not empty after delivery: %+v", all)
	}
	logs := e.logs.String()
	for _, want := range []string{"msg=queued id=" + id, "msg=sent id=" + id + " rcpt=x@b.test via=remote", "msg=delivered id=" + id + " rcpt=bob@a.test via=local"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestQueueLocalDomainsNeverLeaveTheMachine(t *testing.T) {
	e := newEnv(t, nil, func(o *Options) {
		o.Remote = remoteFunc(func(rcpts []string) error {
			t.Errorf("local recipients %v sent to the network", rcpts)
			return nil
		})
	})
	e.enqueue("bob@a.test", "bob@a.test", "nobody@a.test")
	e.runOnce()
	box := e.mailbox("bob@a.test")
	if len(box) != 2 {
		t.Fatalf("bob has %d messages, want the mail and a bounce for nobody@", len(box))
	}
	d := mustDSN(t, box[1])
	if r := d.rcpts[0]; r.Get("Final-Recipient") != "rfc822; nobody@a.test" || r.Get("Status") != "5.1.1" {
		t.Fatalf("bounce for unknown local user: %v", r.Map())
	}
}

// remoteFunc is a Deliverer answering every recipient of a call alike.
type remoteFunc func(rcpts []string) error

func (f remoteFunc) Deliver(_ context.Context, _ string, rcpts []string, _ []byte) []error {
	err := f(rcpts)
	out := make([]error, len(rcpts))
	for i := range out {
		out[i] = err
	}
	return out
}

func TestQueueRetryBackoffWithFakeClock(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: tempFail(2)})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, nil)
	e.enqueue("bob@a.test", "x@b.test")

	e.runOnce() // 451
	en := e.entries()[0]
	if en.Attempts != 1 || !en.NextAttempt.Equal(t0.Add(5*time.Minute)) || !strings.Contains(en.LastError, "451") {
		t.Fatalf("after one 451: attempts %d next %v last error %q", en.Attempts, en.NextAttempt, en.LastError)
	}
	if r := en.Rcpts[0]; r.State != store.RcptPending || r.Status != "4.3.0" {
		t.Fatalf("recipient after 451: %+v", r)
	}

	e.clock.Add(4 * time.Minute)
	e.runOnce() // not due yet
	if b.Sessions() != 1 {
		t.Fatalf("%d sessions: retried before the backoff ran out", b.Sessions())
	}

	e.clock.Set(t0.Add(5 * time.Minute))
	e.runOnce() // 451 again: the wait doubles
	if en := e.entries()[0]; !en.NextAttempt.Equal(t0.Add(15 * time.Minute)) {
		t.Fatalf("second retry at %v, want 10 minutes after the second attempt", en.NextAttempt)
	}
	e.clock.Set(t0.Add(15 * time.Minute))
	e.runOnce() // 250
	if len(e.entries()) != 0 || len(b.Messages()) != 1 {
		t.Fatalf("after 250: queue %+v, %d messages delivered", e.entries(), len(b.Messages()))
	}
	e.clock.Add(time.Hour)
	e.runOnce()
	if len(b.Messages()) != 1 {
		t.Fatalf("delivered %d times, want exactly once", len(b.Messages()))
	}
}

func TestQueueBackoffDoublesUpToTheCap(t *testing.T) {
	q := New(nil, Options{RetryMin: 5 * time.Minute, RetryMax: time.Hour})
	want := []time.Duration{5, 10, 20, 40, 60, 60, 60}
	for i, w := range want {
		if got := q.backoff(i + 1); got != w*time.Minute {
			t.Errorf("backoff after attempt %d = %v, want %v", i+1, got, w*time.Minute)
		}
	}
	if got := q.backoff(1000); got != time.Hour {
		t.Errorf("backoff(1000) = %v", got)
	}
}

// TestQueueNegativeDurationsTakeTheDefaults: a negative retry delay or
// maximum age means nothing a queue can do, so it is taken as unset, like
// zero; before, it retried at once in a busy loop, or bounced every
// message on its first deferral. A negative DelayNotice still sends none.
func TestQueueNegativeDurationsTakeTheDefaults(t *testing.T) {
	q := New(nil, Options{RetryMin: -time.Minute, RetryMax: -time.Hour, MaxAge: -time.Hour, DelayNotice: -1})
	if q.backoff(1) != 5*time.Minute || q.backoff(100) != time.Hour || q.opts.MaxAge != 5*24*time.Hour || q.opts.DelayNotice > 0 {
		t.Errorf("backoff %v..%v, max age %v, delay notice %v", q.backoff(1), q.backoff(100), q.opts.MaxAge, q.opts.DelayNotice)
	}
	q = New(nil, Options{})
	if q.opts.DelayNotice != 4*time.Hour {
		t.Errorf("default delay notice %v", q.opts.DelayNotice)
	}
}

func TestQueueDownThenUpAndFlushDeliversExactlyOnce(t *testing.T) {
	addr := smtptest.DownAddr(t)
	e := newEnv(t, map[string]string{"b.test": addr}, nil)
	id := e.enqueue("bob@a.test", "x@b.test")
	e.runOnce()
	if en := e.entries(); len(en) != 1 || !strings.Contains(en[0].Rcpts[0].LastError, "no answer") {
		t.Fatalf("with B down: %+v", en)
	}
	if !strings.Contains(e.logs.String(), "msg=deferred id="+id) {
		t.Errorf("no deferred event logged:\n%s", e.logs)
	}

	b := smtptest.Start(t, smtptest.Options{Addr: addr})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- e.q.Run(ctx) }()
	e.q.Flush() // the clock stands still: only Flush makes the entry due
	m := b.Wait(t)
	e.waitFinished()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m.From != "bob@a.test" || m.Rcpts[0] != "x@b.test" {
		t.Fatalf("delivered %+v", m)
	}
	e.runOnce()
	if n := len(b.Messages()); n != 1 || len(e.entries()) != 0 {
		t.Fatalf("%d deliveries, queue %+v: want exactly one and an empty queue", n, e.entries())
	}
}

// blocker is a Deliverer that holds every call until its context ends, as
// a slow remote server would at shutdown.
type blocker struct{ entered chan struct{} }

func (b blocker) Deliver(ctx context.Context, _ string, rcpts []string, _ []byte) []error {
	b.entered <- struct{}{}
	<-ctx.Done()
	out := make([]error, len(rcpts))
	for i := range out {
		out[i] = &tempError{ctx.Err()}
	}
	return out
}

type tempError struct{ error }

func (tempError) Temporary() bool { return true }

func TestQueueShutdownLeavesInterruptedMailDue(t *testing.T) {
	b := blocker{entered: make(chan struct{}, 1)}
	e := newEnv(t, nil, func(o *Options) { o.Remote = b })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- e.q.Run(ctx) }()
	e.enqueue("bob@a.test", "x@b.test")
	<-b.entered
	cancel()
	if err := <-done; err != nil { // Run waits for the delivery in flight
		t.Fatal(err)
	}
	all := e.entries()
	if len(all) != 1 || all[0].Attempts != 0 || all[0].Rcpts[0].Attempts != 0 || all[0].NextAttempt.After(t0) {
		t.Fatalf("interrupted entry %+v: want it untouched and due", all)
	}

	srv := smtptest.Start(t, smtptest.Options{})
	e.opts.Remote = nil
	e.routes = map[string]string{"b.test": srv.Addr}
	e.restart()
	e.runOnce()
	if len(srv.Messages()) != 1 || len(e.entries()) != 0 {
		t.Fatalf("after restart: delivered %d, queue %+v", len(srv.Messages()), e.entries())
	}
}

func TestQueueRunDeliversNewMailAtOnce(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- e.q.Run(ctx) }()
	for i := range 3 {
		e.enqueue("bob@a.test", fmt.Sprintf("u%d@b.test", i))
		b.Wait(t)
		e.waitFinished()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(b.Messages()) != 3 || len(e.entries()) != 0 {
		t.Fatalf("delivered %d, queue %+v", len(b.Messages()), e.entries())
	}
}

func TestQueueFlushMakesEntriesDue(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: tempFail(1)})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, nil)
	e.enqueue("bob@a.test", "x@b.test")
	e.runOnce()
	e.runOnce()
	if b.Sessions() != 1 {
		t.Fatalf("%d sessions before flush", b.Sessions())
	}
	e.q.Flush()
	e.runOnce()
	if len(b.Messages()) != 1 || len(e.entries()) != 0 {
		t.Fatalf("flush did not deliver: %+v", e.entries())
	}
}

func TestQueuePermanentFailureBouncesToLocalSender(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: func(rcpt string) error {
		if rcpt == "x@b.test" {
			return smtptest.Reply(550, 5, 1, 1, "no such user")
		}
		return nil
	}})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, nil)
	id := e.enqueue("bob@a.test", "x@b.test", "ok@b.test")
	e.runOnce()

	if msgs := b.Messages(); len(msgs) != 1 || strings.Join(msgs[0].Rcpts, ",") != "ok@b.test" {
		t.Fatalf("b.test got %+v", msgs)
	}
	if all := e.entries(); len(all) != 0 {
		t.Fatalf("queue after bounce: %+v", all)
	}
	box := e.mailbox("bob@a.test")
	if len(box) != 1 {
		t.Fatalf("bob has %d messages, want the bounce", len(box))
	}
	if !strings.HasPrefix(string(box[0]), "Return-Path: <>\r\n") {
		t.Errorf("bounce not sent from the null sender:\n%s", box[0])
	}
	d := mustDSN(t, box[0])
	if got := d.header.Get("From"); got != "Mail Delivery System <MAILER-DAEMON@mx.a.test>" {
		t.Errorf("From: %q", got)
	}
	if len(d.rcpts) != 1 {
		t.Fatalf("%d recipient blocks, want only x@b.test", len(d.rcpts))
	}
	r := d.rcpts[0]
	for field, want := range map[string]string{
		"Final-Recipient": "rfc822; x@b.test",
		"Action":          "failed",
		"Status":          "5.1.1",
		"Diagnostic-Code": "smtp; 550 5.1.1 no such user",
	} {
		if got := r.Get(field); got != want {
			t.Errorf("%s: %q, want %q", field, got, want)
		}
	}
	if !strings.Contains(d.headers, "Subject: lunch") || strings.Contains(d.headers, "see you at noon") {
		t.Errorf("returned header part %q: want the header without the body", d.headers)
	}
	if !strings.Contains(e.logs.String(), "msg=bounced id="+id+" rcpt=x@b.test") {
		t.Errorf("no bounced event:\n%s", e.logs)
	}
}

func TestQueueNoBounceForBounce(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(550, 5, 1, 1, "no such user") }})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, nil)
	id := e.enqueue("", "x@b.test")
	e.runOnce()
	e.runOnce()
	if all := e.entries(); len(all) != 0 {
		t.Fatalf("queue holds %+v: a bounce of a bounce?", all)
	}
	if box := e.mailbox("bob@a.test"); len(box) != 0 {
		t.Fatalf("unexpected mail: %q", box)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "msg=bounced id="+id) || strings.Contains(logs, "msg=dsn") {
		t.Errorf("want a bounced event and no dsn:\n%s", logs)
	}
}

func TestQueueBounceToRemoteSenderIsQueued(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(550, 5, 1, 1, "no such user") }})
	e := newEnv(t, map[string]string{"b.test": b.Addr, "c.test": smtptest.DownAddr(t)}, nil)
	e.enqueue("carol@c.test", "x@b.test")
	e.runOnce()
	all := e.entries()
	if len(all) != 1 || all[0].From != "" || all[0].Rcpts[0].Addr != "carol@c.test" {
		t.Fatalf("queue %+v, want one bounce from <> to carol@c.test", all)
	}
	body, err := e.st.QueueBody(all[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := mustDSN(t, body); d.rcpts[0].Get("Final-Recipient") != "rfc822; x@b.test" {
		t.Fatalf("bounce about %v", d.rcpts[0].Map())
	}
}

func TestQueueRestartLosesNothingAndSendsNothingTwice(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{})
	cAddr := smtptest.DownAddr(t)
	e := newEnv(t, map[string]string{"b.test": b.Addr, "c.test": cAddr}, nil)
	e.enqueue("bob@a.test", "x@b.test", "y@c.test")
	e.runOnce() // b.test accepts, c.test is down

	e.restart()
	all := e.entries()
	if len(all) != 1 || all[0].Rcpts[0].State != store.RcptSent || all[0].Rcpts[1].State != store.RcptPending {
		t.Fatalf("after restart: %+v", all)
	}
	c := smtptest.Start(t, smtptest.Options{Addr: cAddr})
	e.runUntilEmpty(5)
	if n, m := len(b.Messages()), len(c.Messages()); n != 1 || m != 1 {
		t.Fatalf("b.test got %d, c.test got %d: want each exactly once", n, m)
	}
}

func TestQueueRestartBeforeFirstAttempt(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, nil)
	e.enqueue("bob@a.test", "x@b.test")
	e.restart()
	e.runOnce()
	if len(b.Messages()) != 1 || len(e.entries()) != 0 {
		t.Fatalf("queued mail lost across a restart: delivered %d, queue %+v", len(b.Messages()), e.entries())
	}
}

func TestQueueMaxAgeBounces(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(451, 4, 3, 0, "busy") }})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, func(o *Options) {
		o.MaxAge = 3 * time.Hour
		o.DelayNotice = -1
	})
	e.enqueue("bob@a.test", "x@b.test")
	e.runUntilEmpty(20)
	if got := e.clock.Now(); !got.Equal(t0.Add(3 * time.Hour)) {
		t.Errorf("last attempt at %v, want exactly at the maximum age", got)
	}
	box := e.mailbox("bob@a.test")
	if len(box) != 1 {
		t.Fatalf("bob has %d messages, want one bounce", len(box))
	}
	r := mustDSN(t, box[0]).rcpts[0]
	if r.Get("Action") != "failed" || r.Get("Status") != "4.4.7" || !strings.Contains(r.Get("Diagnostic-Code"), "451") {
		t.Fatalf("expiry bounce: %v", r.Map())
	}
}

func TestQueueDelayNoticeIsSentOnce(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(451, 4, 3, 0, "busy") }})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, func(o *Options) { o.DelayNotice = 30 * time.Minute })
	e.enqueue("bob@a.test", "x@b.test")
	for e.clock.Now().Before(t0.Add(3 * time.Hour)) {
		e.runOnce()
		e.clock.Set(e.entries()[0].NextAttempt)
	}
	box := e.mailbox("bob@a.test")
	if len(box) != 1 {
		t.Fatalf("bob has %d messages, want one delay notice", len(box))
	}
	d := mustDSN(t, box[0])
	if r := d.rcpts[0]; r.Get("Action") != "delayed" || r.Get("Will-Retry-Until") == "" {
		t.Fatalf("delay notice: %v", r.Map())
	}
	if en := e.entries(); len(en) != 1 || !en[0].DelayNotified {
		t.Fatalf("entry after delay notice: %+v", en)
	}
}

func TestQueueDrop(t *testing.T) {
	e := newEnv(t, map[string]string{"b.test": smtptest.DownAddr(t)}, nil)
	id := e.enqueue("bob@a.test", "x@b.test")
	if err := e.q.Drop(id); err != nil {
		t.Fatal(err)
	}
	if len(e.entries()) != 0 {
		t.Fatal("entry still listed after drop")
	}
	// trace says so, last, and for whom.
	events, err := e.st.Trace(id)
	if err != nil || len(events) == 0 {
		t.Fatalf("trace after drop: %v, %v", events, err)
	}
	if last := events[len(events)-1]; last.Kind != store.EventDropped || last.Get(store.FactRcpt) != "x@b.test" {
		t.Errorf("last trace event after drop: %+v", last)
	}
	if err := e.q.Drop(id); !errors.Is(err, store.ErrNoQueueEntry) {
		t.Errorf("second drop: %v", err)
	}
	for _, bad := range []string{"", "x1", "0", "-3"} {
		if err := e.q.Drop(bad); err == nil {
			t.Errorf("Drop(%q) accepted", bad)
		}
	}
}

// gate is a Deliverer that holds each call until released and records how
// many calls run at once, in total and per domain.
type gate struct {
	entered chan string
	release chan struct{}

	mu        sync.Mutex
	active    map[string]int
	total     int
	maxTotal  int
	maxDomain int
}

func (g *gate) Deliver(_ context.Context, _ string, rcpts []string, _ []byte) []error {
	d := mailaddr.Domain(rcpts[0])
	g.mu.Lock()
	g.active[d]++
	g.total++
	g.maxTotal = max(g.maxTotal, g.total)
	g.maxDomain = max(g.maxDomain, g.active[d])
	g.mu.Unlock()
	g.entered <- d
	<-g.release
	g.mu.Lock()
	g.active[d]--
	g.total--
	g.mu.Unlock()
	return make([]error, len(rcpts))
}

func TestQueueConcurrencyLimits(t *testing.T) {
	g := &gate{entered: make(chan string, 100), release: make(chan struct{}), active: map[string]int{}}
	e := newEnv(t, nil, func(o *Options) {
		o.Remote = g
		o.MaxConcurrent = 3
		o.MaxPerDomain = 2
	})
	const n = 6
	for i := range n {
		e.enqueue("bob@a.test", fmt.Sprintf("u%d@b.test", i))
		e.enqueue("bob@a.test", fmt.Sprintf("u%d@c.test", i))
	}
	done := make(chan error)
	go func() { done <- e.q.RunOnce(t.Context()) }()
	for range 2 * n {
		<-g.entered
		g.release <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g.maxTotal > 3 || g.maxDomain > 2 {
		t.Fatalf("%d deliveries at once (%d to one domain), limits are 3 and 2", g.maxTotal, g.maxDomain)
	}
	if len(e.entries()) != 0 {
		t.Fatal("queue not empty")
	}
}

func BenchmarkEnqueue(b *testing.B) {
	msg := []byte("From: bob@a.test\r\nSubject: bench\r\n\r\n" + strings.Repeat("x", 4000) + "\r\n")
	for _, callers := range []int{1, 32} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			st, err := store.Open(b.TempDir(), store.Options{BcryptCost: 4})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			q := New(st, Options{Hostname: "mx.a.test"})
			before := st.Commits()
			var wg sync.WaitGroup
			per := (b.N + callers - 1) / callers
			b.ResetTimer()
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if _, err := q.Enqueue("", "bob@a.test", []string{"x@b.test"}, msg); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(st.Commits()-before)/float64(per*callers), "commits/op")
		})
	}
}

// failingSpool is a Spool that cannot read or write, as on a broken disk.
type failingSpool struct {
	Spool
	err error
}

func (f failingSpool) EnqueueMessage(store.QueueEntry, []byte) (uint64, error) { return 0, f.err }
func (f failingSpool) QueueEntries() ([]store.QueueEntry, error)               { return nil, f.err }

// TestQueue_SpoolFailureIsTheCallersToSee: Enqueue says the message is not
// on disk (the SMTP server then answers 451), and a pass says it could not
// read the queue.
func TestQueue_SpoolFailureIsTheCallersToSee(t *testing.T) {
	broken := errors.New("input/output error")
	q := New(failingSpool{err: broken}, Options{Hostname: "mx.a.test"})
	if id, err := q.Enqueue("", "a@a.test", []string{"b@b.test"}, []byte("Subject: x\r\n\r\nx\r\n")); !errors.Is(err, broken) {
		t.Errorf("Enqueue = %q, %v; want the spool's error", id, err)
	}
	if err := q.RunOnce(context.Background()); !errors.Is(err, broken) {
		t.Errorf("RunOnce = %v; want the spool's error", err)
	}
}

// stepper is a Deliverer whose calls each wait for a reply from the test:
// nil delivers, an error is each recipient's result.
type stepper struct {
	entered chan struct{}
	reply   chan error
}

func (s stepper) Deliver(_ context.Context, _ string, rcpts []string, _ []byte) []error {
	s.entered <- struct{}{}
	err := <-s.reply
	out := make([]error, len(rcpts))
	for i := range out {
		out[i] = err
	}
	return out
}

// A flush that comes while an entry's attempt is under way is not lost:
// the entry runs again as soon as that attempt ends, not at its next retry
// time an hour later.
func TestFlushDuringAnAttemptRunsTheEntryAgain(t *testing.T) {
	s := stepper{entered: make(chan struct{}, 2), reply: make(chan error)}
	e := newEnv(t, nil, func(o *Options) { o.Remote = s; o.RetryMin = time.Hour; o.RetryMax = time.Hour })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- e.q.Run(ctx) }()
	defer func() { cancel(); <-done }()

	e.enqueue("bob@a.test", "x@b.test")
	hang := time.After(30 * time.Second) // a guard against hanging, not a timing
	select {
	case <-s.entered:
	case <-hang:
		t.Fatal("the first attempt never started")
	}
	e.q.Flush()
	for { // until the runner's pass has seen the flush and the entry in flight
		e.q.mu.Lock()
		seen := len(e.q.reflush) == 1
		e.q.mu.Unlock()
		if seen {
			break
		}
		select {
		case <-hang:
			t.Fatal("the flush never reached the runner")
		case <-time.After(time.Millisecond):
		}
	}
	s.reply <- &tempError{errors.New("451 try later")}
	select {
	case <-s.entered:
	case <-hang:
		t.Fatal("the flushed entry was not tried again after its attempt")
	}
	s.reply <- nil
	for len(e.entries()) != 0 {
		select {
		case <-hang:
			t.Fatalf("queue not empty: %+v", e.entries())
		case <-time.After(time.Millisecond):
		}
	}
}
