package queue

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"minimail/mda"
	"minimail/mta/remote"
	"minimail/mta/remote/smtptest"
	"minimail/mta/srs"
)

// TestQueuedForwardFromALocalGroupGoesOutAtOnce: a queued message for a
// local alias that forwards (fwd@a.test -> x@b.test) is delivered by the
// local group through DeliverTraced, whose forwarded copy keeps the entry's
// id, is woken through Queued and sent by the running queue without a
// rescan, from the SRS address of the original sender.
func TestQueuedForwardFromALocalGroupGoesOutAtOnce(t *testing.T) {
	b := smtptest.Start(t, smtptest.Options{})
	e := newEnv(t, map[string]string{"b.test": b.Addr}, nil)
	if _, err := e.st.AddAliasRemote("fwd@a.test", []string{"x@b.test"}, func(a string) bool { return strings.HasSuffix(a, "@b.test") }); err != nil {
		t.Fatal(err)
	}
	secret, err := e.st.SRSSecret()
	if err != nil {
		t.Fatal(err)
	}
	agent := &mda.Agent{Mailboxes: e.st, Domains: []string{"a.test"}, Now: e.clock.Now,
		SRS: &srs.Rewriter{Secret: secret, Now: e.clock.Now}}
	opts := e.opts
	opts.Now = e.clock.Now
	opts.Logger = slog.New(slog.NewTextHandler(e.logs, nil))
	opts.Remote = &remote.Client{Hostname: "mx.a.test", Routes: e.routes, Timeout: 5 * time.Second}
	opts.Local = agent
	e.q = New(e.st, opts)
	agent.Queue = e.q

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- e.q.Run(ctx) }()
	id := e.enqueue("carol@c.test", "fwd@a.test")
	m := b.Wait(t)
	e.waitFinished()
	e.waitFinished()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.From, "SRS0=") || !strings.HasSuffix(m.From, "=c.test=carol@a.test") || len(m.Rcpts) != 1 || m.Rcpts[0] != "x@b.test" {
		t.Fatalf("forwarded from %q to %v", m.From, m.Rcpts)
	}
	if !strings.Contains(e.logs.String(), "msg=queued id="+id+" from="+strconv.Quote(m.From)) {
		t.Errorf("no queued line for the forwarded copy under id %s:\n%s", id, e.logs)
	}
	if n := len(e.entries()); n != 0 {
		t.Fatalf("queue holds %d entries", n)
	}
}
