package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"minimail/mta/delivery"
	"minimail/mta/mailaddr"
	"minimail/store"
)

// entryState is one entry during a pass. Its groups finish concurrently,
// so every change and every store write of the entry happens under mu:
// the last write always holds every result known so far.
type entryState struct {
	mu        sync.Mutex
	e         store.QueueEntry
	log       *slog.Logger
	attempted bool // some recipient was tried this pass
	dropped   bool // the entry left the store meanwhile (queue drop)
	// events are trace events waiting for the next write of the entry,
	// which carries them into the store (trace.go).
	events []store.Event

	// ctx and wg are the pass's, for the notices it starts (see sendDSN).
	ctx context.Context
	wg  *sync.WaitGroup

	bodyOnce sync.Once
	body     []byte
	bodyErr  error
}

// loadBody reads the message once, when a delivery slot is free: a long
// queue waiting for slots does not hold every body in memory.
func (es *entryState) loadBody(spool Spool) ([]byte, error) {
	es.bodyOnce.Do(func() { es.body, es.bodyErr = spool.QueueBody(es.e.ID) })
	return es.body, es.bodyErr
}

// group is the pending recipients of one entry bound for one place.
type group struct {
	domain string // "" for local delivery
	idx    []int  // into e.Rcpts
}

// process makes one attempt for every pending recipient of entry id,
// records the results, sends the notices they call for, and schedules or
// removes the entry. It reads the entry afresh: the caller's view may be
// older than the last attempt's results. Unless force is set (Flush), an
// entry that is not due is left alone.
func (q *Queue) process(ctx context.Context, id uint64, force bool, wg *sync.WaitGroup) {
	e, err := q.spool.QueueEntry(id)
	if err != nil {
		if !errors.Is(err, store.ErrNoQueueEntry) {
			q.log.Error("queue read failed", "id", FormatID(id), "err", err)
		}
		return
	}
	if !force && e.NextAttempt.After(q.opts.Now()) {
		q.noteNext(e.NextAttempt)
		return
	}
	es := &entryState{e: e, log: q.log.With("id", EntryID(e)), ctx: ctx, wg: wg}
	var groups sync.WaitGroup
	for _, g := range q.groups(e) {
		groups.Add(1)
		go func() {
			defer groups.Done()
			q.deliverGroup(ctx, es, g)
		}()
	}
	groups.Wait()
	q.finish(es)
}

// groups splits e's pending recipients by destination: all local domains
// together (one store transaction), each remote domain on its own (one
// connection, RFC 5321 does not let one transaction span two domains' MXs).
func (q *Queue) groups(e store.QueueEntry) []group {
	by := map[string][]int{}
	for i, r := range e.Rcpts {
		if r.State != store.RcptPending {
			continue
		}
		d := mailaddr.Domain(r.Addr)
		if q.local[d] {
			d = ""
		}
		by[d] = append(by[d], i)
	}
	out := make([]group, 0, len(by))
	for _, d := range sortedKeys(by) {
		out = append(out, group{domain: d, idx: by[d]})
	}
	return out
}

func (q *Queue) deliverGroup(ctx context.Context, es *entryState, g group) {
	release, ok := q.acquire(ctx, g.domain)
	if !ok {
		return // shutting down: the recipients stay pending as they were
	}
	defer release()
	// A copy of the entry: the other groups' record calls change es.e
	// (its LastError, their own recipients) under es.mu meanwhile. This
	// group's recipients are changed by this group alone.
	es.mu.Lock()
	e := es.e
	es.mu.Unlock()
	rcpts := make([]string, len(g.idx))
	for i, j := range g.idx {
		rcpts[i] = e.Rcpts[j].Addr
	}
	from := e.From
	body, err := es.loadBody(q.spool)
	var res []error
	var attempts attemptLog
	ctx = attempts.context(ctx)
	// offered: the next hop offers DSN, so it reports success itself
	// (RFC 3461 5.2.1); local delivery and a hop without DSN leave that
	// to this server.
	offered := false
	switch {
	case err != nil:
		res = make([]error, len(rcpts))
		for i := range res {
			res[i] = fmt.Errorf("read queued message: %w", err)
		}
	case g.domain == "" && q.opts.Local != nil:
		res = q.deliverLocal(e, from, rcpts, body)
	case g.domain != "" && q.opts.Remote != nil:
		if d, ok := q.opts.Remote.(dsnDeliverer); ok {
			res, offered = d.DeliverDSN(ctx, from, rcpts, body, dsnOf(e, g.idx))
		} else {
			res = q.opts.Remote.Deliver(ctx, from, rcpts, body)
		}
	default:
		res = make([]error, len(rcpts))
		for i := range res {
			res[i] = errNotConfigured
		}
	}
	if len(res) != len(rcpts) {
		res = make([]error, len(rcpts))
		for i := range res {
			res[i] = fmt.Errorf("deliverer returned a wrong number of results")
		}
	}
	q.record(ctx, es, g, res, offered, attempts.list())
}

// errNotConfigured keeps mail queued when a deliverer is missing.
var errNotConfigured = errors.New("no deliverer configured for this destination")

// deliverLocal hands a group of local recipients to the mda (see
// LocalDeliverer for what the Trace tells it).
func (q *Queue) deliverLocal(e store.QueueEntry, from string, rcpts []string, body []byte) []error {
	if d, ok := q.opts.Local.(tracedLocal); ok {
		return d.DeliverTraced(delivery.Trace{ID: EntryID(e), Notice: e.Notice}, from, rcpts, body)
	}
	return q.opts.Local.Deliver(from, rcpts, body)
}

// record applies one group's results and commits them before anything
// else happens, logging included.
func (q *Queue) record(ctx context.Context, es *entryState, g group, res []error, dsnOffered bool, attempts []delivery.Attempt) {
	via := "remote"
	if g.domain == "" {
		via = "local"
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	shutdown := ctx.Err() != nil
	type event struct {
		name  string
		attrs []any
	}
	var events []event
	now := q.opts.Now().UTC()
	id := EntryID(es.e)
	var traces []store.Event
	// The reply that settled the session, the same for all its recipients.
	var reply, host string
	if len(attempts) > 0 {
		last := attempts[len(attempts)-1]
		reply, host = last.Reply, last.Host
	}
	for i, j := range g.idx {
		r := &es.e.Rcpts[j]
		err := res[i]
		temporary := delivery.Temporary(err)
		if temporary && shutdown {
			// Cut short by shutdown, not the remote's verdict: leave the
			// recipient as it was, to be retried after the restart.
			continue
		}
		r.Attempts++
		es.attempted = true
		// "sent" when the next hop took it, "delivered" when a local
		// mailbox did: the words of the SMTP servers' lines.
		name := "sent"
		if via == "local" {
			name = "delivered"
		}
		switch {
		case err == nil:
			r.State = store.RcptSent
			r.LastError, r.Status, r.Diagnostic, r.RemoteMTA = "", "", "", ""
			r.SuccessAction = successAction(es.e, r, via == "local", dsnOffered)
			if via == "remote" {
				// Local copies have their delivered event from the store.
				traces = append(traces, rcptEvent(store.EventSent, id, now, r,
					store.Fact{Key: "host", Value: host}, store.Fact{Key: "reply", Value: reply}))
			}
		case temporary:
			name = "deferred"
			setFailure(r, err)
			es.e.LastError = r.LastError
			traces = append(traces, rcptEvent(store.EventDeferred, id, now, r, store.Fact{Key: "reply", Value: r.LastError}))
		default:
			name = "bounced"
			r.State = store.RcptFailed
			setFailure(r, err)
		}
		attrs := []any{"rcpt", r.Addr, "via", via, "attempt", r.Attempts}
		if err != nil {
			attrs = append(attrs, "status", r.Status, "err", r.LastError)
		}
		events = append(events, event{name, attrs})
	}
	if len(events) == 0 {
		return
	}
	// A bounced recipient's event waits for its notice (notify), which
	// names the DSN's id.
	es.events = append(es.events, attemptEvents(id, now, attempts)...)
	es.events = append(es.events, traces...)
	q.save(es)
	for _, ev := range events {
		es.log.Info(ev.name, ev.attrs...)
		q.count(ev.name)
	}
}

// count reports one recipient's outcome, by its log event, to Metrics.
func (q *Queue) count(event string) {
	switch m := q.opts.Metrics; {
	case m == nil:
	case event == "sent", event == "delivered":
		m.Delivered()
	case event == "bounced":
		m.Bounced()
	}
}

// save writes es.e; the caller holds es.mu.
func (q *Queue) save(es *entryState) {
	if es.dropped {
		return
	}
	// A copy carries the events, so that es.e does not keep them.
	e := es.e
	e.Events = es.events
	err := q.spool.UpdateQueueEntry(e)
	if err == nil {
		es.events = nil
	}
	if err != nil {
		if errors.Is(err, store.ErrNoQueueEntry) {
			es.dropped = true
			es.log.Info("dropped during delivery")
			return
		}
		es.log.Error("queue update failed", "err", err)
	}
}

// finish schedules the next attempt or expires what waited too long, sends
// the notices owed, and removes the entry once nothing is left to do.
func (q *Queue) finish(es *entryState) {
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.dropped {
		return
	}
	e := &es.e
	now := q.opts.Now().UTC()
	if es.attempted {
		e.Attempts++
	}
	age := now.Sub(e.Created)
	pending := 0
	for i := range e.Rcpts {
		r := &e.Rcpts[i]
		if r.State != store.RcptPending {
			continue
		}
		if age >= q.opts.MaxAge {
			// RFC 3463 4.4.7: delivery time expired.
			r.State = store.RcptFailed
			r.LastError = fmt.Sprintf("gave up after %s: %s", age.Round(time.Minute), r.LastError)
			r.Status = "4.4.7"
			es.log.Info("bounced", "rcpt", r.Addr, "attempt", r.Attempts, "status", r.Status, "err", r.LastError)
			q.count("bounced")
			continue
		}
		pending++
	}
	switch {
	case pending > 0 && !es.attempted:
		// Cut short by shutdown: stay due, to be tried after the restart.
	case pending > 0:
		e.NextAttempt = now.Add(q.backoff(e.Attempts))
		if expiry := e.Created.Add(q.opts.MaxAge); e.NextAttempt.After(expiry) {
			e.NextAttempt = expiry // one last try when the time is up
		}
	default:
		// Only notices are left; if they fail, try them again later.
		e.NextAttempt = now.Add(q.opts.RetryMin)
	}
	q.save(es)
	if es.dropped {
		return
	}

	q.notify(es, now)
	if done(e) {
		if err := q.spool.DeleteQueueEntry(e.ID, es.events...); err != nil && !errors.Is(err, store.ErrNoQueueEntry) {
			es.log.Error("queue delete failed", "err", err)
			return
		}
		sent := 0
		for _, r := range e.Rcpts {
			if r.State == store.RcptSent {
				sent++
			}
		}
		es.log.Info("finished", "sent", sent, "failed", len(e.Rcpts)-sent, "attempts", e.Attempts)
		return
	}
	q.save(es)
	q.noteNext(e.NextAttempt)
}

// done reports whether every recipient is delivered or failed, and told
// where a notice is owed.
func done(e *store.QueueEntry) bool {
	for _, r := range e.Rcpts {
		if r.State == store.RcptPending || owesNotice(r) {
			return false
		}
	}
	return true
}

// backoff is the wait after the nth attempt: RetryMin doubled each time,
// capped at RetryMax.
func (q *Queue) backoff(n int) time.Duration {
	d := q.opts.RetryMin
	for i := 1; i < n && d < q.opts.RetryMax; i++ {
		d *= 2
	}
	return min(d, q.opts.RetryMax)
}

// setFailure records err's text and DSN fields on r.
func setFailure(r *store.QueueRcpt, err error) {
	r.LastError = err.Error()
	r.Status, r.Diagnostic, r.RemoteMTA = describe(err)
}

// describe extracts what a DSN reports from a delivery error: the RFC 3463
// status, the Diagnostic-Code and the remote MTA, where the error knows them
// (remote's errors know all three, mda's the status); an error that says
// none gets the bare class of its verdict.
func describe(err error) (status, diagnostic, remoteMTA string) {
	var st interface{ Status() string }
	if errors.As(err, &st) {
		status = st.Status()
	}
	var dg interface{ Diagnostic() string }
	if errors.As(err, &dg) {
		diagnostic = dg.Diagnostic()
	}
	var rm interface{ RemoteMTA() string }
	if errors.As(err, &rm) {
		remoteMTA = rm.RemoteMTA()
	}
	if status == "" {
		status = "5.0.0"
		if delivery.Temporary(err) {
			status = "4.0.0"
		}
	}
	return status, diagnostic, remoteMTA
}
