package mta

import (
	"github.com/emersion/go-smtp"

	"minimail/mta/delivery"
)

// RFC 3461 on submission. go-smtp parses and checks the parameters (Server
// engine: EnableDSN) and answers 501 5.5.4 to a malformed one (NOTIFY
// with NEVER and another value, bad xtext in ENVID or ORCPT, an ORCPT
// without an address type); the session bounds their length, keeps them
// per recipient and hands them to the queue with the message.

// keepDSN remembers the RCPT parameters of an accepted recipient, the
// first ones given when the same address comes twice.
func (tx *transaction) keepDSN(rcpt string, opts *smtp.RcptOptions) {
	if opts == nil || (len(opts.Notify) == 0 && opts.OriginalRecipient == "") {
		return
	}
	if tx.rcptOpts == nil {
		tx.rcptOpts = map[string]*smtp.RcptOptions{}
	}
	if _, ok := tx.rcptOpts[rcpt]; !ok {
		tx.rcptOpts[rcpt] = opts
	}
}

// dsnFor is the RFC 3461 request of tx for rcpts.
func (tx *transaction) dsnFor(rcpts []string) delivery.DSN {
	p := delivery.DSN{Ret: tx.ret, EnvID: tx.envID, Rcpts: make([]*smtp.RcptOptions, len(rcpts))}
	for i, r := range rcpts {
		p.Rcpts[i] = tx.rcptOpts[r]
	}
	return p
}

// wantsSuccess reports whether a recipient asked for a success notice.
func wantsSuccess(o *smtp.RcptOptions) bool {
	if o == nil {
		return false
	}
	for _, n := range o.Notify {
		if n == smtp.DSNNotifySuccess {
			return true
		}
	}
	return false
}

// enqueue queues msg for rcpts with their RFC 3461 parameters, when q
// keeps them.
func (ss *session) enqueue(q Queue, tx *transaction, trace delivery.Trace, rcpts []string, msg []byte) (string, error) {
	if tq, ok := q.(tracedQueue); ok {
		return tq.EnqueueTraced(trace, tx.from, rcpts, msg, tx.dsnFor(rcpts))
	}
	if dq, ok := q.(DSNQueue); ok {
		return dq.EnqueueDSN(tx.id, tx.from, rcpts, msg, tx.dsnFor(rcpts))
	}
	return q.Enqueue(tx.id, tx.from, rcpts, msg)
}
