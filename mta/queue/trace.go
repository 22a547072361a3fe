package queue

import (
	"context"
	"strconv"
	"sync"
	"time"

	"minimail/mta/delivery"
	"minimail/store"
)

// Trace events of the queue (`minimail trace`). Each is written with the
// store change it describes: queued with the new entry, attempt, sent and
// deferred with the entry update that records the results, bounced with
// the update (or the removal) that marks the sender told.

// attemptLog collects the SMTP sessions a remote delivery reports through
// its context (delivery.WithAttempts): *remote.Client does.
type attemptLog struct {
	mu       sync.Mutex
	attempts []delivery.Attempt
}

func (l *attemptLog) context(ctx context.Context) context.Context {
	return delivery.WithAttempts(ctx, func(a delivery.Attempt) {
		l.mu.Lock()
		l.attempts = append(l.attempts, a)
		l.mu.Unlock()
	})
}

func (l *attemptLog) list() []delivery.Attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.attempts
}

// tracedLocal is a LocalDeliverer that takes the message's Trace: it
// records a delivered event per copy under the message's id; *mda.Agent
// has it.
type tracedLocal interface {
	DeliverTraced(t delivery.Trace, from string, rcpts []string, msg []byte) []error
}

func queuedEvent(id, from string, rcpts []string, msg []byte, now time.Time, extra []store.Fact) store.Event {
	facts := []store.Fact{{Key: "from", Value: from}}
	for _, r := range rcpts {
		facts = append(facts, store.Fact{Key: store.FactRcpt, Value: r})
	}
	facts = append(facts, store.Fact{Key: "size", Value: strconv.Itoa(len(msg))})
	if mid := delivery.MessageID(msg); mid != "" {
		facts = append(facts, store.Fact{Key: store.FactMessageID, Value: mid})
	}
	facts = append(facts, extra...)
	return store.Event{Time: now, Kind: store.EventQueued, ID: id, Facts: facts}
}

// attemptEvents are the attempt events of one remote delivery.
func attemptEvents(id string, now time.Time, attempts []delivery.Attempt) []store.Event {
	out := make([]store.Event, 0, len(attempts))
	for _, a := range attempts {
		facts := []store.Fact{{Key: "host", Value: a.Host}, {Key: "addr", Value: a.Addr}, {Key: "tls", Value: a.TLS}}
		if a.Err != "" {
			facts = append(facts, store.Fact{Key: "err", Value: a.Err})
		}
		out = append(out, store.Event{Time: now, Kind: store.EventAttempt, ID: id, Facts: facts})
	}
	return out
}

// rcptEvent is what became of one recipient: sent, deferred or bounced.
func rcptEvent(kind, id string, now time.Time, r *store.QueueRcpt, facts ...store.Fact) store.Event {
	f := append([]store.Fact{{Key: store.FactRcpt, Value: r.Addr}}, facts...)
	return store.Event{Time: now, Kind: kind, ID: id, Facts: f}
}

// bouncedEvent is a failed recipient's last event: the reply that failed
// it and the id of the notice that tells the sender ("none" when nobody
// is told: a null sender, or NOTIFY without FAILURE).
func bouncedEvent(id string, now time.Time, r *store.QueueRcpt, dsnID string) store.Event {
	return rcptEvent(store.EventBounced, id, now, r, store.Fact{Key: "reply", Value: r.LastError}, store.Fact{Key: store.FactDSN, Value: dsnID})
}

// traceMargin is how much longer than MaxAge trace events are kept.
const traceMargin = 24 * time.Hour

// prunePerPass bounds the events one pass deletes, so a pass after a long
// stop holds the store's writer briefly; the next passes take the rest.
const prunePerPass = 1000

// indexPerPass bounds the events one pass adds to the trace index.
const indexPerPass = 5000

// tracePruner is a Spool that keeps trace events; *store.Store is one.
type tracePruner interface {
	IndexTrace(limit int) (int, error)
	PruneTrace(before time.Time, limit int) (int, error)
}

// pruneTrace brings the trace index up to date (in one commit for all the
// events since the last pass, rather than pages of its own in each
// delivery's), then drops the events older than TraceKeep; both a bounded
// number per pass.
func (q *Queue) pruneTrace() {
	p, ok := q.spool.(tracePruner)
	if !ok {
		return
	}
	if _, err := p.IndexTrace(indexPerPass); err != nil {
		q.log.Error("trace index failed", "err", err)
		return
	}
	n, err := p.PruneTrace(q.opts.Now().Add(-q.opts.TraceKeep), prunePerPass)
	if err != nil {
		q.log.Error("trace prune failed", "err", err)
	} else if n > 0 {
		q.log.Info("trace pruned", "events", n)
	}
}
