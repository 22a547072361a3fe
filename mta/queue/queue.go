// Package queue is minimail's outbound mail queue: it keeps every accepted
// message on disk until each recipient has been delivered or bounced, and
// survives crashes and restarts without losing or repeating a recipient.
//
// Each message is one store entry (see store.QueueEntry) with a state per
// recipient: pending, sent or failed. A delivery pass takes the entries that
// are due, groups their pending recipients by destination domain (one group
// for all local domains, which never leave the machine) and hands each group
// to Local or Remote. The result for every recipient is committed to the
// store as soon as it is known, before anything else happens, so a recipient
// the next hop accepted is never sent again; a crash between the remote 250
// and that commit is the one window where RFC 5321 6.1 allows a duplicate.
//
// Whether a failure is final travels inside the error: a Temporary() bool
// method of either deliverer's errors decides, and an error without one is
// temporary (minimail/mta/delivery holds that one rule). A DSN reports the
// Status(), Diagnostic() and RemoteMTA() an error has.
//
// A 5xx fails a recipient at once; a 4xx or an unreachable host leaves it
// pending, retried with exponential backoff from RetryMin up to RetryMax
// until MaxAge, when it fails as expired. Failed recipients are reported to
// the sender in one RFC 3464 delivery status notification per pass, and a
// single delay notice goes out once an entry has waited DelayNotice; with
// RFC 3461 parameters (EnqueueDSN), NOTIFY decides which of these a
// recipient gets and asks for success notices too (rfc3461.go). Every
// notice is itself an entry, queued in the commit that marks it sent.
// Nothing is ever reported to the null sender, so a bounce never bounces.
//
// Log lines carry a stable event name and the queue id: queued, delivered,
// deferred, bounced (one per recipient and attempt), dsn (a notice sent),
// finished (the entry left the queue), dropped.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"minimail/mta/delivery"
	"minimail/mta/mailaddr"
	"minimail/store"
)

// Deliverer sends to remote servers: one call per destination domain,
// returning one error per recipient (nil = accepted); *remote.Client
// satisfies it. When it also has DeliverDSN (dsnDeliverer), the RFC 3461
// parameters are passed on to next hops that offer DSN.
type Deliverer interface {
	Deliver(ctx context.Context, from string, rcpts []string, msg []byte) []error
}

// dsnDeliverer is a Deliverer that passes RFC 3461 parameters on and
// says whether the next hop offered DSN.
type dsnDeliverer interface {
	DeliverDSN(ctx context.Context, from string, rcpts []string, msg []byte, p delivery.DSN) ([]error, bool)
}

// LocalDeliverer stores mail in local mailboxes, one error per recipient;
// *mda.Agent satisfies it. When it also has DeliverTraced (tracedLocal),
// every local group goes through that, with the entry's id (forwarded
// copies are queued under it), its delivered events, and whether it is one
// of the queue's own notices (stored past a full mailbox's quota: a bounce
// refused would be lost).
type LocalDeliverer interface {
	Deliver(from string, rcpts []string, msg []byte) []error
}

// Spool is the durable storage of queued messages; *store.Store satisfies
// it. Each call commits to disk before it returns. An entry that is not
// there (any more) is an error wrapping store.ErrNoQueueEntry.
type Spool interface {
	EnqueueMessage(e store.QueueEntry, body []byte) (id uint64, err error)
	QueueEntries() ([]store.QueueEntry, error) // without bodies
	QueueEntry(id uint64) (store.QueueEntry, error)
	QueueBody(id uint64) ([]byte, error)
	UpdateQueueEntry(e store.QueueEntry) error
	// DeleteQueueEntry writes events (trace events) in the same commit.
	DeleteQueueEntry(id uint64, events ...store.Event) error
	// EnqueueNotice updates e and stores the notice n in one commit.
	EnqueueNotice(e, n store.QueueEntry, body []byte) (id uint64, err error)
}

// Options configure a Queue. Zero durations and limits take the defaults
// named on each field.
type Options struct {
	// Hostname names this MTA in DSNs (Reporting-MTA, MAILER-DAEMON@).
	Hostname string
	// LocalDomains are delivered through Local, never to the network.
	LocalDomains []string
	Remote       Deliverer
	Local        LocalDeliverer
	// Now is the clock; nil is time.Now. Tests step it by hand.
	Now func() time.Time
	// RetryMin is the first retry delay (5 minutes); each further one
	// doubles, up to RetryMax (1 hour, like Postfix's maximal backoff).
	RetryMin time.Duration
	RetryMax time.Duration
	// MaxAge is how long a recipient is retried before it bounces
	// (5 days, RFC 5321 4.5.4.1 suggests 4-5 days).
	MaxAge time.Duration
	// DelayNotice is when the sender hears that mail is still waiting
	// (4 hours); negative sends no delay notice.
	DelayNotice time.Duration
	// MaxReturnBytes bounds the message a failure notice returns whole
	// for RET=FULL (50000 octets, Postfix's bounce_size_limit); a bigger
	// one is returned as its header only, and the notice says so.
	MaxReturnBytes int
	// MaxConcurrent bounds deliveries in progress (20); MaxPerDomain
	// bounds them per destination domain (4).
	MaxConcurrent int
	MaxPerDomain  int
	// Logger gets the queue's events; nil discards.
	Logger *slog.Logger
	// TraceKeep is how long trace events are kept (MaxAge plus a day, so
	// a message's whole life stays traceable until it expires and a while
	// after); the spool prunes older ones in each pass, when it can.
	TraceKeep time.Duration
	// Metrics gets what the queue counts; nil counts nothing.
	Metrics Metrics
}

// Metrics is what a Queue reports for monitoring, one call per recipient
// and outcome, as the "delivered"/"sent" and "bounced" log lines record
// them. The methods must not block.
type Metrics interface {
	// Delivered is one recipient stored in a local mailbox or accepted by
	// the next hop.
	Delivered()
	// Bounced is one recipient failed for good (a 5xx, or expired).
	Bounced()
}

// Queue is the outbound queue over one spool. It is safe for concurrent
// use; Run (or RunOnce) does the deliveries.
type Queue struct {
	spool Spool
	opts  Options
	log   *slog.Logger
	local map[string]bool
	wake  chan struct{}
	sem   chan struct{} // MaxConcurrent slots

	mu       sync.Mutex
	inflight map[uint64]bool
	// reflush: entries in flight when a Flush came; each runs again,
	// forced, as soon as its attempt ends (a flush skips none).
	reflush  map[uint64]bool
	domains  map[string]*domainSlots
	fresh    []uint64  // enqueued since the last scan
	flush    bool      // Flush was called: the next scan takes everything
	needScan bool      // fresh overflowed
	earliest time.Time // the earliest known next attempt; zero if none
	notes    time.Time // next attempts noted since the last scan began
	running  sync.WaitGroup
}

type domainSlots struct {
	ch    chan struct{}
	users int
}

// New returns a queue over spool. Entries already in it (from before a
// crash or restart) are picked up by the first pass.
func New(spool Spool, opts Options) *Queue {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// Unset (zero) or meaningless (negative) values take the defaults; only
	// DelayNotice has a meaning for a negative value: no notice.
	opts.RetryMin = positiveOr(opts.RetryMin, 5*time.Minute)
	opts.RetryMax = max(positiveOr(opts.RetryMax, time.Hour), opts.RetryMin)
	opts.MaxAge = positiveOr(opts.MaxAge, 5*24*time.Hour)
	if opts.DelayNotice == 0 {
		opts.DelayNotice = 4 * time.Hour
	}
	opts.MaxReturnBytes = positiveOr(opts.MaxReturnBytes, DefaultMaxReturnBytes)
	opts.TraceKeep = max(opts.TraceKeep, opts.MaxAge+traceMargin)
	opts.MaxConcurrent = positiveOr(opts.MaxConcurrent, 20)
	opts.MaxPerDomain = positiveOr(opts.MaxPerDomain, 4)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q := &Queue{
		spool:    spool,
		opts:     opts,
		log:      log,
		local:    map[string]bool{},
		wake:     make(chan struct{}, 1),
		sem:      make(chan struct{}, opts.MaxConcurrent),
		inflight: map[uint64]bool{},
		reflush:  map[uint64]bool{},
		domains:  map[string]*domainSlots{},
	}
	for _, d := range opts.LocalDomains {
		q.local[mailaddr.NormalDomain(d)] = true
	}
	return q
}

// positiveOr returns v, or def when v is not positive.
func positiveOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// FormatID shows a store number, the id of entries queued before message ids.
func FormatID(id uint64) string { return strconv.FormatUint(id, 10) }

// EntryID is the id an entry goes by: its message id, or for entries
// queued before there was one, its number in the store.
func EntryID(e store.QueueEntry) string {
	if e.MsgID != "" {
		return e.MsgID
	}
	return FormatID(e.ID)
}

// Lister is the part of the spool Find reads.
type Lister interface {
	QueueEntries() ([]store.QueueEntry, error)
}

// Find returns the store number of the entry that goes by id (EntryID).
func Find(spool Lister, id string) (uint64, error) {
	id = strings.TrimSpace(id)
	entries, err := spool.QueueEntries()
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if EntryID(e) == id {
			return e.ID, nil
		}
	}
	return 0, fmt.Errorf("queue id %q: %w", id, store.ErrNoQueueEntry)
}

// Enqueue stores a message for from ("" for the null sender) to rcpts
// under the message id id (the one its 250 reply gave; "" = a new one),
// returns the id once it is on disk, then wakes the runner. msg must be
// CRLF-only, as the SMTP server and buildDSN write it: it is sent on as it
// is stored.
func (q *Queue) Enqueue(id, from string, rcpts []string, msg []byte) (string, error) {
	return q.EnqueueDSN(id, from, rcpts, msg, delivery.DSN{})
}

// EnqueueDSN is Enqueue keeping the message's RFC 3461 parameters with it
// (submission's DSN): they decide the notices it gets and are passed on
// to next hops that offer DSN.
func (q *Queue) EnqueueDSN(id, from string, rcpts []string, msg []byte, p delivery.DSN) (string, error) {
	return q.EnqueueTraced(delivery.Trace{ID: id}, from, rcpts, msg, p)
}

// EnqueueTraced is EnqueueDSN under t.ID that also writes t.Events, then
// a queued event, in the same commit as the entry (see trace.go).
func (q *Queue) EnqueueTraced(t delivery.Trace, from string, rcpts []string, msg []byte, p delivery.DSN) (string, error) {
	id := t.ID
	if len(rcpts) == 0 {
		return "", errors.New("enqueue: no recipients")
	}
	if id == "" {
		id = delivery.NewID()
	}
	now := q.opts.Now().UTC()
	e := store.QueueEntry{MsgID: id, From: from, Created: now, NextAttempt: now, Ret: string(p.Ret), EnvID: p.EnvID}
	for i, r := range rcpts {
		qr := store.QueueRcpt{Addr: r, State: store.RcptPending}
		setRcptDSN(&qr, p.Rcpt(i))
		e.Rcpts = append(e.Rcpts, qr)
	}
	e.Events = append(append([]store.Event(nil), t.Events...), queuedEvent(id, from, rcpts, msg, now, nil))
	return q.enqueue(e, msg)
}

// enqueue stores a new entry and hands it to the runner.
func (q *Queue) enqueue(e store.QueueEntry, msg []byte) (string, error) {
	id, from, rcpts := e.MsgID, e.From, e.Rcpts
	n, err := q.spool.EnqueueMessage(e, msg)
	if err != nil {
		return "", err
	}
	q.log.Info("queued", "id", id, "from", from, "rcpts", len(rcpts), "size", len(msg))
	q.addFresh(n)
	return id, nil
}

// addFresh hands a new entry to the runner without a rescan, and wakes it.
func (q *Queue) addFresh(n uint64) {
	q.mu.Lock()
	if len(q.fresh) < maxFresh {
		q.fresh = append(q.fresh, n)
	} else {
		q.needScan = true
	}
	q.mu.Unlock()
	q.poke()
}

// Queued takes note of an entry another component committed to the spool
// (mda's forwarded copies, stored in one transaction with the local ones)
// and starts it like one from Enqueue.
func (q *Queue) Queued(e store.QueueEntry) {
	q.log.Info("queued", "id", EntryID(e), "from", e.From, "rcpts", len(e.Rcpts), "origin", "forward")
	q.addFresh(e.ID)
}

// List returns every queued entry, without bodies.
func (q *Queue) List() ([]store.QueueEntry, error) { return q.spool.QueueEntries() }

// Drop removes an entry. A delivery already under way for it may still
// complete, but nothing about it is recorded or retried afterwards.
func (q *Queue) Drop(id string) error {
	n, err := Find(q.spool, id)
	if err != nil {
		return err
	}
	// trace tells that the rest of the message's journey was called off,
	// and for whom.
	var events []store.Event
	if e, err := q.spool.QueueEntry(n); err == nil {
		facts := []store.Fact{}
		for _, r := range e.Rcpts {
			if r.State == store.RcptPending {
				facts = append(facts, store.Fact{Key: store.FactRcpt, Value: r.Addr})
			}
		}
		events = append(events, store.Event{Time: q.opts.Now().UTC(), Kind: store.EventDropped, ID: EntryID(e), Facts: facts})
	}
	if err := q.spool.DeleteQueueEntry(n, events...); err != nil {
		return fmt.Errorf("drop %s: %w", id, err)
	}
	q.log.Info("dropped", "id", id)
	return nil
}

// Flush makes every entry due now and wakes the runner.
func (q *Queue) Flush() {
	q.mu.Lock()
	q.flush = true
	q.mu.Unlock()
	q.poke()
}

func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// maxSleep bounds the runner's sleep, so an entry changed behind its back
// (by another process while serve was stopped, say) is seen soon.
const maxSleep = time.Minute

// maxFresh bounds the list of new entries kept for the runner; beyond it
// the runner rescans the store instead.
const maxFresh = 10000

// Run delivers until ctx is done, then waits for deliveries in flight
// (which see ctx cancelled and stop early) and returns nil.
//
// It scans the whole queue when an attempt falls due, on Flush, and at
// least every maxSleep; a new message from Enqueue is started directly,
// without a scan, so a long deferred queue costs nothing per message.
func (q *Queue) Run(ctx context.Context) error {
	defer q.running.Wait()
	scan := true
	for {
		if scan {
			if err := q.pass(ctx, nil); err != nil {
				q.log.Error("queue scan failed", "err", err)
			}
		} else {
			q.startFresh(ctx)
		}
		timer := time.NewTimer(q.sleep())
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-q.wake:
			q.mu.Lock()
			scan = q.flush || q.needScan
			q.mu.Unlock()
		case <-timer.C:
			scan = true
		}
		timer.Stop()
	}
}

// RunOnce makes one delivery attempt for every due entry, using the
// queue's clock, and returns when they are all recorded.
func (q *Queue) RunOnce(ctx context.Context) error {
	var wg sync.WaitGroup
	err := q.pass(ctx, &wg)
	wg.Wait()
	return err
}

// sleep is how long the runner may wait for the earliest known attempt.
func (q *Queue) sleep() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.earliest.IsZero() {
		return maxSleep
	}
	return min(max(q.earliest.Sub(q.opts.Now()), 0), maxSleep)
}

// pass starts every due entry not already in flight and notes when the
// others fall due.
func (q *Queue) pass(ctx context.Context, wg *sync.WaitGroup) error {
	q.mu.Lock()
	flush := q.flush
	q.flush, q.needScan = false, false
	// Entries enqueued from here on may miss the scan: they stay fresh.
	q.fresh = nil
	q.notes = time.Time{}
	q.mu.Unlock()

	q.pruneTrace()
	entries, err := q.spool.QueueEntries()
	if err != nil {
		q.mu.Lock()
		q.flush = q.flush || flush
		q.mu.Unlock()
		return err
	}
	now := q.opts.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	var next time.Time
	for _, e := range entries {
		if q.inflight[e.ID] {
			if flush {
				q.reflush[e.ID] = true
			}
			continue // it notes its next attempt when done
		}
		if !flush && e.NextAttempt.After(now) {
			next = earlier(next, e.NextAttempt)
			continue
		}
		q.start(ctx, e.ID, flush, wg)
	}
	// Attempts scheduled while the scan ran are not in its snapshot.
	q.earliest = earlier(next, q.notes)
	return nil
}

// startFresh starts the entries enqueued since the last scan.
func (q *Queue) startFresh(ctx context.Context) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range q.fresh {
		if !q.inflight[id] {
			q.start(ctx, id, false, nil)
		}
	}
	q.fresh = nil
}

// start processes one entry in its own goroutine; the caller holds q.mu.
// An entry is in flight at most once: process reads it afresh from the
// store, so a stale snapshot can never resend a recipient already sent.
func (q *Queue) start(ctx context.Context, id uint64, force bool, wg *sync.WaitGroup) {
	q.inflight[id] = true
	q.running.Add(1)
	if wg != nil {
		wg.Add(1)
	}
	go func() {
		defer func() {
			q.mu.Lock()
			delete(q.inflight, id)
			if q.reflush[id] {
				delete(q.reflush, id)
				if ctx.Err() == nil {
					q.start(ctx, id, true, wg)
				}
			}
			q.mu.Unlock()
			q.running.Done()
			if wg != nil {
				wg.Done()
			}
			q.poke() // the runner recomputes its sleep
		}()
		q.process(ctx, id, force, wg)
	}()
}

// noteNext records an entry's next attempt for the runner's timer.
func (q *Queue) noteNext(t time.Time) {
	q.mu.Lock()
	q.earliest = earlier(q.earliest, t)
	q.notes = earlier(q.notes, t)
	q.mu.Unlock()
}

// earlier returns the earlier of two times, a zero time meaning none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// acquire waits for a delivery slot, in total and for domain.
func (q *Queue) acquire(ctx context.Context, domain string) (release func(), ok bool) {
	q.mu.Lock()
	ds := q.domains[domain]
	if ds == nil {
		ds = &domainSlots{ch: make(chan struct{}, q.opts.MaxPerDomain)}
		q.domains[domain] = ds
	}
	ds.users++
	q.mu.Unlock()
	done := func() {
		q.mu.Lock()
		if ds.users--; ds.users == 0 {
			delete(q.domains, domain)
		}
		q.mu.Unlock()
	}
	select {
	case ds.ch <- struct{}{}:
	case <-ctx.Done():
		done()
		return nil, false
	}
	select {
	case q.sem <- struct{}{}:
	case <-ctx.Done():
		<-ds.ch
		done()
		return nil, false
	}
	return func() {
		<-q.sem
		<-ds.ch
		done()
	}, true
}

// sortedKeys keeps delivery order stable, for logs and tests.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
