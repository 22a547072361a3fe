package mda

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"minimail/mta/delivery"
	"minimail/store"
)

// DefaultMaxHops is Postfix's hopcount_limit: a message with more Received
// fields than this is looping, and is not forwarded again.
const DefaultMaxHops = 50

// ErrLoop is wrapped by the Error (permanent, 5.4.6: routing loop) for a
// message that would be forwarded with more than MaxHops Received fields.
var ErrLoop = errors.New("too many Received fields: forwarding loop")

// ErrBadSRS is wrapped by the Error (permanent, 5.1.1) for an SRS address
// at a local domain whose hash or timestamp does not check out: it names
// no mailbox, and a forged one must never relay.
var ErrBadSRS = errors.New("invalid SRS address")

// forwarding collects the remote addresses of one message, each once
// however many recipients reach it.
type forwarding struct {
	rcpts  []string // remote addresses, in order
	idx    []int    // the recipients that forward (results[i])
	domain string   // the domain of the first forwarding recipient
	seen   map[string]bool
}

func (f *forwarding) add(i int, rcpt string, remote []string) {
	if len(remote) == 0 {
		return
	}
	f.idx = append(f.idx, i)
	if f.domain == "" {
		f.domain = store.Domain(rcpt)
	}
	for _, r := range remote {
		if k := store.Key(r); !f.seen[k] {
			f.seen[k] = true
			f.rcpts = append(f.rcpts, r)
		}
	}
}

// outgoing is the queue entry for the forwarded copy, or none. The copy
// is the message as it arrived here (with the Received field of this hop
// and no other change), so that the original DKIM signature still holds.
func (a *Agent) outgoing(id, from string, f *forwarding, msg []byte) ([]store.Outgoing, error) {
	if len(f.rcpts) == 0 {
		return nil, nil
	}
	sender, err := a.forwardSender(from, f.domain)
	if err != nil {
		return nil, err
	}
	if id == "" {
		id = delivery.NewID()
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	t := now().UTC()
	e := store.QueueEntry{MsgID: id, From: sender, Created: t, NextAttempt: t}
	for _, r := range f.rcpts {
		e.Rcpts = append(e.Rcpts, store.QueueRcpt{Addr: r, State: store.RcptPending})
	}
	return []store.Outgoing{{Entry: e, Body: msg}}, nil
}

// forwardSender is the envelope sender of a forwarded copy: the null
// sender stays null (a bounce never bounces), a local sender stays as it
// is (our SPF covers it), any other is rewritten into an SRS0 address at
// domain, so that SPF passes at the next hop and a bounce comes back here
// to be reversed.
func (a *Agent) forwardSender(from, domain string) (string, error) {
	if from == "" || a.SRS == nil || a.isLocal(store.Domain(from)) {
		return from, nil
	}
	s, err := a.SRS.Forward(from, domain)
	if err != nil {
		return "", fmt.Errorf("forward: %w", err)
	}
	return s, nil
}

func (a *Agent) isLocal(domain string) bool {
	for _, d := range a.Domains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	return false
}

// reverse resolves an SRS0 address at a local domain to its original
// sender: forwarded (a remote target) or, for a local one, its mailbox.
// Any sender may reach it, as with postsrsd: autoreplies and
// challenge-response mail to the envelope sender are not bounces, and a
// valid address only ever reaches the one sender it was made for.
func (a *Agent) reverse(rcpt string) (target, error) {
	at := strings.LastIndexByte(rcpt, '@')
	orig, err := a.SRS.Reverse(rcpt[:at])
	if err != nil {
		return target{}, &Error{Rcpt: rcpt, Err: fmt.Errorf("%w: %w", ErrBadSRS, err)}
	}
	canon, err := store.CanonicalAddress(orig)
	if err != nil {
		return target{}, &Error{Rcpt: rcpt, Err: fmt.Errorf("%w: original %q: %w", ErrBadSRS, orig, err)}
	}
	if a.isLocal(store.Domain(canon)) {
		t, err := a.lookupWhole(canon)
		if err != nil {
			return target{}, err
		}
		t.deliveredTo = canon
		return t, nil
	}
	return target{remote: []string{canon}, deliveredTo: rcpt}, nil
}

// lookupWhole is lookup's first two steps: a user, then an alias, with
// the whole address.
func (a *Agent) lookupWhole(rcpt string) (target, error) {
	addr, err := a.Mailboxes.LookupUser(rcpt)
	switch {
	case err == nil:
		return target{mailboxes: []string{addr}, deliveredTo: addr}, nil
	case !errors.Is(err, store.ErrNoUser):
		return target{}, &Error{Rcpt: rcpt, Err: err, temporary: true}
	}
	x, err := a.Mailboxes.Expand(rcpt)
	switch {
	case err == nil && len(x.Mailboxes)+len(x.Remote) > 0:
		return target{mailboxes: x.Mailboxes, remote: x.Remote, deliveredTo: rcpt}, nil
	case err == nil, errors.Is(err, store.ErrNoAlias):
		return target{}, &Error{Rcpt: rcpt, Err: ErrUnknownUser}
	}
	return target{}, &Error{Rcpt: rcpt, Err: err, temporary: true}
}

// checkHops refuses to forward a message that has passed more than
// MaxHops servers (RFC 5321 6.3: count the Received fields).
func (a *Agent) checkHops(rcpt string, msg []byte) error {
	limit := a.MaxHops
	if limit <= 0 {
		limit = DefaultMaxHops
	}
	if n := countReceived(msg); n > limit {
		return &Error{Rcpt: rcpt, Err: fmt.Errorf("%w: %d, more than %d", ErrLoop, n, limit), status: "5.4.6"}
	}
	return nil
}

// countReceived counts the Received fields of msg's header section.
func countReceived(msg []byte) int {
	n := 0
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i+1], msg[i+1:]
		} else {
			msg = nil
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // end of the header section
		}
		if len(line) >= 9 && bytes.EqualFold(line[:9], []byte("received:")) {
			n++
		}
	}
	return n
}

// wake tells the queue of entries just committed.
func (a *Agent) wake(entries []store.QueueEntry) {
	if a.Queue == nil {
		return
	}
	for _, e := range entries {
		a.Queue.Queued(e)
	}
}

// Forwards reports whether rcpt reaches a remote address (an alias with
// remote targets, or an SRS address): submission then signs the message.
func (a *Agent) Forwards(rcpt string) bool {
	t, err := a.lookup(rcpt)
	return err == nil && len(t.remote) > 0
}
