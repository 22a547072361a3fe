// Package mda is the local delivery agent: it resolves local recipients,
// adds the trace headers a mailbox copy carries (Return-Path, Delivered-To)
// and appends one copy per recipient to the store, all recipients in a
// single durable transaction. Messages arrive CRLF-only (the SMTP server
// normalises each once, and the queue's notices are written so) and are
// stored as they arrive.
//
// The copies differ only in their trace headers, so each recipient's
// Delivery carries its own few header lines and shares one message slice
// with the others, which the store keeps once: memory for a delivery does
// not grow with the recipients beyond their headers.
//
// Each failure is an *Error that says whether to retry (Temporary) and the
// RFC 3463 status to report (Status), so that callers act on it without
// knowing this package: a recipient with no mailbox is permanent, storage
// trouble temporary.
//
// Quotas (store.Delivery): each copy is judged against its own mailbox, so
// a full one fails its recipient alone, with 5.2.2 (permanent: this message
// will not fit); Resolve reports a mailbox already at its quota with 4.2.2
// (temporary: it may be emptied). Notices (DeliverTraced with Trace.Notice) are stored even
// past the quota: a bounce must not be lost, and it exceeds it by its size.
//
// Forwarding (forward.go): an alias may name remote addresses. Their copy
// goes to the outbound queue in the same store transaction as the local
// copies, one queue entry per message with each remote address once, its
// envelope sender rewritten with SRS when the original sender is not
// local. An SRS address at a local domain is reversed here too: a bounce
// to it is queued for the original sender; one with a bad hash or an
// expired timestamp has no mailbox (5.1.1).
package mda

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"minimail/mta/delivery"
	"minimail/mta/srs"
	"minimail/store"
)

// Mailboxes is what delivery needs from storage.
type Mailboxes interface {
	LookupUser(addr string) (string, error)
	AppendMany(ds []store.Delivery) ([]uint64, error)
	// LookupRecipient is LookupUser that also returns the quota that
	// applies to the user's mailbox (its own, else defaultQuota; 0 = none)
	// and, when there is one, the octets the mailbox holds: in one read.
	LookupRecipient(addr string, defaultQuota int64) (store.Recipient, error)
	// Expand returns the mailboxes and remote addresses an alias
	// (local@domain, or @domain for a catch-all) reaches, or
	// store.ErrNoAlias.
	Expand(addr string) (store.Expansion, error)
	// AppendAndEnqueue is AppendMany that also queues the forwarded
	// copies, all in one commit.
	AppendAndEnqueue(ds []store.Delivery, out []store.Outgoing) ([]uint64, []store.QueueEntry, error)
}

// Queue is told of the entries Deliver committed, so that its runner
// starts them at once; *queue.Queue satisfies it.
type Queue interface {
	Queued(e store.QueueEntry)
}

// Error is a delivery failure for one recipient. Temporary failures (storage
// trouble) should be retried; permanent ones (no such user) bounced. The
// verdict travels inside the error (Temporary), so callers need no
// sentinel of this package (see minimail/mta/delivery for the rule).
type Error struct {
	Rcpt      string
	Err       error
	temporary bool
	status    string // "" for the defaults of Status
}

func (e *Error) Error() string   { return fmt.Sprintf("deliver to %s: %v", e.Rcpt, e.Err) }
func (e *Error) Unwrap() error   { return e.Err }
func (e *Error) Temporary() bool { return e.temporary }

// Status returns the RFC 3463 status a delivery status notification
// reports: 5.1.1 (bad destination mailbox) for a recipient with no
// mailbox, 4.2.2 for one already at its quota, 5.2.2 for a message that
// would take it past (RFC 3463 3.3: mailbox full), the mere class for
// storage trouble.
func (e *Error) Status() string {
	if e.status != "" {
		return e.status
	}
	if e.temporary {
		return "4.0.0"
	}
	return "5.1.1"
}

// ErrUnknownUser is wrapped by the Error for a recipient with no mailbox.
var ErrUnknownUser = errors.New("no such user here")

// ErrMailboxFull is wrapped by the Error for a mailbox already at its quota
// (Resolve) or that a message would take past it (Deliver).
var ErrMailboxFull = errors.New("mailbox full")

// Agent delivers to local mailboxes.
type Agent struct {
	Mailboxes Mailboxes
	// Delimiter holds the characters that start an address extension
	// (Postfix's recipient_delimiter): with "+", bob+shop@d reaches bob@d
	// when there is no user bob+shop@d. "" turns extensions off.
	Delimiter string
	// DefaultQuota is the quota in octets of a mailbox without one of its
	// own (limits.max_mailbox_bytes); 0 means none.
	DefaultQuota int64

	// Domains are the local domains: a sender in one is not rewritten
	// when forwarded, and an SRS address reversed to one is delivered
	// here.
	Domains []string
	// SRS rewrites forwarded senders and reverses bounces; nil forwards
	// with the sender unchanged and treats SRS addresses as any other.
	SRS *srs.Rewriter
	// Queue is woken for forwarded copies; nil leaves them to the
	// runner's next scan.
	Queue Queue
	// MaxHops refuses to forward a message with more Received fields
	// (a forwarding loop between two servers); 0 = DefaultMaxHops.
	MaxHops int
	// Now is the clock of queue entries; nil = time.Now.
	Now func() time.Time
}

// Resolve returns the canonical address of a local recipient (for an
// alias, that of its first mailbox), or an *Error wrapping ErrUnknownUser
// (permanent), ErrMailboxFull (temporary, 4.2.2: the mailbox is already
// at its quota; for an alias, every mailbox it reaches is) or a storage
// error (temporary). The lookup order is lookup's.
func (a *Agent) Resolve(rcpt string) (string, error) {
	t, err := a.lookup(rcpt)
	if err != nil {
		return "", err
	}
	if len(t.mailboxes) == 0 && len(t.remote) > 0 {
		return t.remote[0], nil // forwarded only: no quota here
	}
	var full error
	for i, addr := range t.mailboxes {
		var r store.Recipient
		if i < len(t.rooms) {
			r = t.rooms[i]
		} else if r, err = a.Mailboxes.LookupRecipient(addr, a.DefaultQuota); err != nil {
			return "", appendError(rcpt, err)
		}
		if r.Quota > 0 && r.Used >= r.Quota {
			full = &Error{Rcpt: rcpt, Err: fmt.Errorf("%w: %s: %d of %d octets used", ErrMailboxFull, addr, r.Used, r.Quota), temporary: true, status: "4.2.2"}
			continue
		}
		return addr, nil
	}
	return "", full
}

// target is what a recipient resolves to: its mailboxes, the remote
// addresses it forwards to, and the address its copies' Delivered-To
// names.
type target struct {
	mailboxes []string
	// rooms are the first mailboxes' quotas and use, where lookup read
	// them already (a user found by its address): Resolve looks up the
	// others.
	rooms       []store.Recipient
	remote      []string
	deliveredTo string
}

// lookup is Resolve without the quota. The order: a user with the whole
// address, an alias with it, then without the extension (see Delimiter)
// a user and an alias, then the domain's catch-all (@domain). A user's
// Delivered-To is its own spelling with the extension written kept
// (deliveredTo); an alias's, the address as the sender wrote it. An SRS0
// address is reversed (reverse) after the whole-address steps and before
// the others: a forged one must not reach a catch-all.
func (a *Agent) lookup(rcpt string) (target, error) {
	if a.SRS != nil && srs.IsSRS(rcpt[:max(strings.LastIndexByte(rcpt, '@'), 0)]) {
		t, err := a.lookupWhole(rcpt)
		if err == nil || !errors.Is(err, ErrUnknownUser) {
			return t, err
		}
		return a.reverse(rcpt)
	}
	base, _, hasExt := a.splitExtension(rcpt)
	type step struct {
		addr  string
		alias bool
	}
	steps := []step{{rcpt, false}, {rcpt, true}}
	if hasExt {
		steps = append(steps, step{base, false}, step{base, true})
	}
	if at := strings.LastIndexByte(rcpt, '@'); at >= 0 {
		steps = append(steps, step{rcpt[at:], true})
	}
	for _, st := range steps {
		if !st.alias {
			r, err := a.Mailboxes.LookupRecipient(st.addr, a.DefaultQuota)
			switch {
			case err == nil:
				return target{mailboxes: []string{r.Address}, rooms: []store.Recipient{r}, deliveredTo: a.deliveredTo(rcpt, r.Address)}, nil
			case !errors.Is(err, store.ErrNoUser):
				return target{}, &Error{Rcpt: rcpt, Err: err, temporary: true}
			}
			continue
		}
		x, err := a.Mailboxes.Expand(st.addr)
		switch {
		case err == nil && len(x.Mailboxes)+len(x.Remote) > 0:
			return target{mailboxes: x.Mailboxes, remote: x.Remote, deliveredTo: rcpt}, nil
		case err == nil, errors.Is(err, store.ErrNoAlias):
		default:
			return target{}, &Error{Rcpt: rcpt, Err: err, temporary: true}
		}
	}
	return target{}, &Error{Rcpt: rcpt, Err: ErrUnknownUser}
}

// MaySendAs reports whether user may send as addr on submission (MAIL FROM
// and From:): its own address, with or without an extension, and any alias
// that delivers to it, directly or through other aliases (with or without
// an extension); never a catch-all.
func (a *Agent) MaySendAs(user, addr string) bool {
	if strings.HasPrefix(addr, "@") {
		return false
	}
	// What addr delivers to, by lookup's order without the catch-all: the
	// first user or alias found decides.
	cands := []string{addr}
	if base, _, ok := a.splitExtension(addr); ok {
		cands = append(cands, base)
	}
	for _, c := range cands {
		if got, err := a.Mailboxes.LookupUser(c); err == nil {
			return strings.EqualFold(got, user)
		}
		if x, err := a.Mailboxes.Expand(c); err == nil {
			for _, b := range x.Mailboxes {
				if strings.EqualFold(b, user) {
					return true
				}
			}
			return false
		}
	}
	return false
}

// splitExtension returns rcpt without its extension, and the extension:
// the part of the local part from the first delimiter character on. A
// local part that starts with one has no user part to fall back to.
func (a *Agent) splitExtension(rcpt string) (base, ext string, ok bool) {
	at := strings.LastIndexByte(rcpt, '@')
	if a.Delimiter == "" || at < 0 {
		return "", "", false
	}
	i := strings.IndexAny(rcpt[:at], a.Delimiter)
	if i <= 0 {
		return "", "", false
	}
	return rcpt[:i] + rcpt[at:], rcpt[i:at], true
}

// deliveredTo is the recipient for the Delivered-To field: the mailbox's
// own spelling of the address, with the extension the sender wrote kept
// (bob+Shop@d for a user bob@d), so that filters can sort by it.
func (a *Agent) deliveredTo(rcpt, addr string) string {
	base, ext, ok := a.splitExtension(rcpt)
	if !ok || strings.EqualFold(rcpt, addr) || !strings.EqualFold(base, addr) {
		return addr
	}
	at := strings.LastIndexByte(addr, '@')
	return addr[:at] + ext + addr[at:]
}

// Deliver stores msg for each recipient. from is the envelope sender ("" for
// the null sender). msg must be CRLF-only and should already carry the
// caller's Received line. The result has one entry per recipient, in
// order: nil for a durable copy, else an *Error. Copies for all resolvable
// recipients are committed together, one per mailbox however many of the
// recipients reach it (bob+a@ and bob+b@ give bob one copy, and so do an
// alias and bob himself); each copy's Delivered-To names the recipient it
// is for: a user's mailbox with the extension the sender wrote, an alias
// (or catch-all) address as the sender wrote it. A copy reached by two
// recipients is for the first.
//
// A copy that would take its mailbox past its quota fails with an *Error
// wrapping ErrMailboxFull, permanent, status 5.2.2; the other copies are
// stored.
//
// Remote targets of aliases (and the original sender of a bounce to an SRS
// address) get one copy in the queue, committed with the local copies: see
// forward.go.
func (a *Agent) Deliver(from string, rcpts []string, msg []byte) []error {
	return a.deliver(delivery.Trace{}, from, rcpts, msg)
}

// DeliverTraced is Deliver for the message t describes: forwarded copies
// are queued under t.ID, t.Events commit with the copies (trace.go), and
// a notice of the server's own (t.Notice: bounces, delay warnings) is
// stored even past the quota, which it exceeds by its size, because a
// notice refused would be lost.
func (a *Agent) DeliverTraced(t delivery.Trace, from string, rcpts []string, msg []byte) []error {
	return a.deliver(t, from, rcpts, msg)
}

func (a *Agent) deliver(tr delivery.Trace, from string, rcpts []string, msg []byte) []error {
	id := tr.ID
	results := make([]error, len(rcpts))
	var ds []store.Delivery
	var idx []int // the recipient each copy is for
	seen := make(map[string]bool, len(rcpts))
	fwd := forwarding{seen: map[string]bool{}}
	for i, rcpt := range rcpts {
		t, err := a.lookup(rcpt)
		if err == nil && len(t.remote) > 0 {
			err = a.checkHops(rcpt, msg)
		}
		if err != nil {
			results[i] = err
			continue
		}
		fwd.add(i, rcpt, t.remote)
		for _, addr := range t.mailboxes {
			if seen[store.Key(addr)] {
				continue
			}
			seen[store.Key(addr)] = true
			ds = append(ds, store.Delivery{
				Address:      addr,
				Header:       traceHeader(from, t.deliveredTo),
				Message:      msg,
				DefaultQuota: a.DefaultQuota,
				IgnoreQuota:  tr.Notice,
				TraceID:      tr.ID,
				TraceFacts:   []store.Fact{{Key: store.FactRcpt, Value: rcpt}},
			})
			idx = append(idx, i)
		}
	}
	if len(ds) == 0 && len(fwd.rcpts) == 0 {
		return results
	}
	out, err := a.outgoing(id, from, &fwd, msg)
	if err != nil {
		for _, i := range append(append([]int(nil), idx...), fwd.idx...) {
			results[i] = &Error{Rcpt: rcpts[i], Err: err, temporary: true}
		}
		return results
	}
	traceWith(tr, ds, out, msg)
	_, queued, err := a.Mailboxes.AppendAndEnqueue(ds, out)
	if err == nil {
		a.wake(queued)
		return results
	}
	if errors.Is(err, store.ErrNoUser) || errors.Is(err, store.ErrOverQuota) {
		// The forwarded copy does not depend on the mailboxes: it is
		// committed on its own, then the copies as below.
		if len(out) > 0 {
			_, queued, qerr := a.Mailboxes.AppendAndEnqueue(nil, out)
			if qerr != nil {
				for _, i := range fwd.idx {
					results[i] = appendError(rcpts[i], qerr)
				}
			}
			a.wake(queued)
			if len(ds) == 1 {
				results[idx[0]] = appendError(rcpts[idx[0]], err)
				return results
			}
		}
	}
	if (errors.Is(err, store.ErrNoUser) || errors.Is(err, store.ErrOverQuota)) && len(ds) > 1 {
		// A user was deleted since Resolve, or a mailbox has no room, and
		// the batch is all or nothing: store each copy alone so only that
		// recipient fails (the copies then do not share one body). A
		// recipient that is an alias fails when one of its copies does
		// (its sender learns of the mailbox that missed it).
		for j, d := range ds {
			if err := a.appendOne(rcpts[idx[j]], d); err != nil && results[idx[j]] == nil {
				results[idx[j]] = err
			}
		}
		return results
	}
	for _, i := range idx {
		results[i] = appendError(rcpts[i], err)
	}
	if len(out) > 0 && !errors.Is(err, store.ErrNoUser) && !errors.Is(err, store.ErrOverQuota) {
		for _, i := range fwd.idx {
			results[i] = appendError(rcpts[i], err)
		}
	}
	return results
}

func (a *Agent) appendOne(rcpt string, d store.Delivery) error {
	if _, err := a.Mailboxes.AppendMany([]store.Delivery{d}); err != nil {
		return appendError(rcpt, err)
	}
	return nil
}

// appendError classifies a storage failure: a mailbox that has gone is the
// same permanent "no such user" Resolve reports; one without room for the
// message a permanent 5.2.2; anything else is storage trouble, worth a
// retry.
func appendError(rcpt string, err error) error {
	switch {
	case errors.Is(err, store.ErrNoUser):
		return &Error{Rcpt: rcpt, Err: fmt.Errorf("%w: %w", ErrUnknownUser, err)}
	case errors.Is(err, store.ErrOverQuota):
		return &Error{Rcpt: rcpt, Err: fmt.Errorf("%w: %w", ErrMailboxFull, err), status: "5.2.2"}
	}
	return &Error{Rcpt: rcpt, Err: err, temporary: true}
}

// traceHeader is what goes before the message in rcpt's copy: Return-Path
// (RFC 5321 4.4) and Delivered-To.
func traceHeader(from, rcpt string) []byte {
	return []byte("Return-Path: <" + from + ">\r\nDelivered-To: " + rcpt + "\r\n")
}
