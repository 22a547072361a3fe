package queue

import (
	"strings"

	"github.com/emersion/go-smtp"

	"minimail/mta/delivery"
	"minimail/store"
)

// RFC 3461 in the queue: which notices a recipient asked for, and the
// parameters passed on to a next hop that offers DSN.
//
//   - NOTIFY absent: FAILURE,DELAY (RFC 3461 4.1), as for every entry
//     queued before the parameters were kept.
//   - SUCCESS: "delivered" once a local mailbox has the copy, "relayed"
//     once a next hop without DSN took it; nothing when the next hop
//     offers DSN, which then reports itself (RFC 3461 5.2.1).
//   - FAILURE: the failure notice; DELAY: the delay notice; NEVER: none.
//   - The server's own notices go out from the null sender with
//     NOTIFY=NEVER: a notice never asks for one, and never gets one.

// wants reports whether r asked for notices of kind.
func wants(r store.QueueRcpt, kind smtp.DSNNotify) bool {
	if r.Notify == nil {
		return kind == smtp.DSNNotifyFailure || kind == smtp.DSNNotifyDelayed
	}
	for _, n := range r.Notify {
		if n == string(kind) {
			return true
		}
	}
	return false
}

// setRcptDSN keeps the RCPT parameters o (nil: none) on r.
func setRcptDSN(r *store.QueueRcpt, o *smtp.RcptOptions) {
	if o == nil {
		return
	}
	for _, n := range o.Notify {
		r.Notify = append(r.Notify, strings.ToUpper(string(n)))
	}
	if o.OriginalRecipient != "" {
		r.ORcptType, r.ORcpt = strings.ToLower(string(o.OriginalRecipientType)), o.OriginalRecipient
	}
}

// dsnOf is the RFC 3461 request of e for its recipients at idx.
func dsnOf(e store.QueueEntry, idx []int) delivery.DSN {
	p := delivery.DSN{Ret: smtp.DSNReturn(e.Ret), EnvID: e.EnvID, Rcpts: make([]*smtp.RcptOptions, len(idx))}
	for i, j := range idx {
		r := e.Rcpts[j]
		if r.Notify == nil && r.ORcpt == "" {
			continue
		}
		o := &smtp.RcptOptions{OriginalRecipient: r.ORcpt}
		// go-smtp's client spells the address types in upper case.
		o.OriginalRecipientType = smtp.DSNAddressType(strings.ToUpper(r.ORcptType))
		for _, n := range r.Notify {
			o.Notify = append(o.Notify, smtp.DSNNotify(n))
		}
		p.Rcpts[i] = o
	}
	return p
}

// successAction is the success notice r is owed now that it was sent:
// local says a local mailbox took it, offered that the next hop offers DSN.
func successAction(e store.QueueEntry, r *store.QueueRcpt, local, offered bool) string {
	switch {
	case e.From == "" || e.Notice || !wants(*r, smtp.DSNNotifySuccess):
		return ""
	case local:
		return dsnDelivered
	case offered:
		return ""
	}
	return dsnRelayed
}

// owesNotice reports whether the sender is still to hear about r.
func owesNotice(r store.QueueRcpt) bool {
	switch r.State {
	case store.RcptFailed:
		return !r.Notified
	case store.RcptSent:
		return r.SuccessAction != "" && !r.Notified
	}
	return false
}
