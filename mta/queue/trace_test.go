package queue

import (
	"strings"
	"testing"
	"time"

	"minimail/mta/remote/smtptest"
	"minimail/store"
)

// traceKinds returns "kind kind ..." of the events trace shows for q.
func (e *env) traceKinds(q string) (string, []store.Event) {
	e.t.Helper()
	evs, err := e.st.Trace(q)
	if err != nil {
		e.t.Fatalf("Trace(%s): %v", q, err)
	}
	var k []string
	for _, ev := range evs {
		k = append(k, ev.Kind)
	}
	return strings.Join(k, " "), evs
}

func TestQueueTrace_ExpiryBouncesToRemoteSenderWithTheDSNsID(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(451, 4, 3, 0, "busy") }})
	e := newEnv(t, map[string]string{"b.test": b.Addr, "c.test": smtptest.DownAddr(t)}, func(o *Options) {
		o.MaxAge = 2 * time.Hour
		o.RetryMin = time.Hour
		o.DelayNotice = -1
	})
	id := e.enqueue("carol@c.test", "x@b.test")
	for range 3 {
		e.runOnce()
		e.clock.Add(time.Hour)
	}
	got, evs := e.traceKinds(id)
	if want := "queued attempt deferred attempt deferred attempt deferred bounced"; got != want {
		t.Fatalf("trace %s: %s, want %s", id, got, want)
	}
	bounced := evs[len(evs)-1]
	if !strings.Contains(bounced.Get("reply"), "gave up after 2h0m") || bounced.Get(store.FactDSN) == "" {
		t.Fatalf("bounced event %+v", bounced)
	}
	if !bounced.Time.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("bounced at %v, want the queue's clock %v", bounced.Time, t0.Add(2*time.Hour))
	}
	dsn := bounced.Get(store.FactDSN)
	got, evs = e.traceKinds(dsn)
	if !strings.HasPrefix(got, "queued") || evs[0].Get("dsn_for") != id || evs[0].Get(store.FactRcpt) != "carol@c.test" {
		t.Fatalf("trace of the DSN %s: %s %+v", dsn, got, evs)
	}
	// The DSN is queued for carol: trace by recipient finds it.
	if got, _ := e.traceKinds("carol@c.test"); !strings.HasPrefix(got, "queued") {
		t.Errorf("trace carol@c.test: %s", got)
	}
}

func TestQueueTrace_NullSenderBounceNamesNoDSN(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{Rcpt: func(string) error { return smtptest.Reply(550, 5, 1, 1, "no such user") }})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, nil)
	id := e.enqueue("", "x@b.test")
	e.runOnce()
	got, evs := e.traceKinds(id)
	if got != "queued attempt bounced" || evs[2].Get(store.FactDSN) != "none" || !strings.Contains(evs[2].Get("reply"), "550 5.1.1") {
		t.Fatalf("trace %s: %s %+v", id, got, evs)
	}
}

func TestQueueTrace_PrunedAfterMaxAgeAndAMargin(t *testing.T) {
	e := newEnv(t, nil, func(o *Options) { o.MaxAge = time.Hour })
	old := store.Event{Time: t0.Add(-time.Hour - traceMargin - time.Second), Kind: store.EventQueued, ID: "old"}
	kept := store.Event{Time: t0.Add(-time.Hour - traceMargin + time.Second), Kind: store.EventQueued, ID: "kept"}
	if err := e.st.RecordEvents([]store.Event{old, kept}); err != nil {
		t.Fatal(err)
	}
	e.runOnce()
	if _, err := e.st.Trace("old"); err == nil {
		t.Error("an event older than max_age plus the margin survived a pass")
	}
	if _, err := e.st.Trace("kept"); err != nil {
		t.Errorf("an event within max_age plus the margin was pruned: %v", err)
	}
}
