package queue

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"minimail/mta/delivery"
	"minimail/mta/mailaddr"
	"minimail/mta/xtext"
	"minimail/store"
)

// notify sends the notices the recipients' outcomes call for, each as
// asked for with NOTIFY (see rfc3461.go): one failure notice for those that
// failed since the last, one success notice per action ("delivered",
// "relayed") for those sent, and the one delay notice once the entry has
// waited long enough. A notice counts as sent once it is in the queue,
// stored in the same commit as the mark that it was sent (see sendDSN): a
// crash neither loses it nor sends it twice. Until then the entry stays,
// and the next pass tries again. The caller holds es.mu.
func (q *Queue) notify(es *entryState, now time.Time) {
	e := &es.e
	var failed, delivered, relayed, pending []int
	for i, r := range e.Rcpts {
		switch {
		case r.State == store.RcptFailed && !r.Notified:
			// RFC 5321 6.1 / RFC 3464 2: never report to the null sender,
			// or two servers could bounce a bounce back and forth forever.
			if e.From == "" || !wants(r, smtp.DSNNotifyFailure) {
				e.Rcpts[i].Notified = true // nobody is owed a notice
				es.events = append(es.events, bouncedEvent(EntryID(*e), now, &e.Rcpts[i], "none"))
				continue
			}
			failed = append(failed, i)
		case owesNotice(r) && r.SuccessAction == dsnDelivered:
			delivered = append(delivered, i)
		case owesNotice(r):
			relayed = append(relayed, i)
		case r.State == store.RcptPending:
			if wants(r, smtp.DSNNotifyDelayed) {
				pending = append(pending, i)
			}
		}
	}
	for _, n := range []struct {
		action string
		idx    []int
	}{{dsnFailed, failed}, {dsnDelivered, delivered}, {dsnRelayed, relayed}} {
		if len(n.idx) > 0 && !es.dropped {
			q.sendDSN(es, n.action, n.idx, now, func(c *store.QueueEntry) {
				for _, i := range n.idx {
					c.Rcpts[i].Notified = true
				}
			})
		}
	}
	delayDue := q.opts.DelayNotice > 0 && now.Sub(e.Created) >= q.opts.DelayNotice
	if delayDue && !e.DelayNotified && !es.dropped && q.pendingLeft(e) {
		if e.From == "" || len(pending) == 0 {
			e.DelayNotified = true // nobody waiting asked to hear of it
			return
		}
		q.sendDSN(es, dsnDelayed, pending, now, func(c *store.QueueEntry) { c.DelayNotified = true })
	}
}

// pendingLeft reports whether any recipient of e is still pending.
func (q *Queue) pendingLeft(e *store.QueueEntry) bool {
	for _, r := range e.Rcpts {
		if r.State == store.RcptPending {
			return true
		}
	}
	return false
}

// sendDSN builds a notice about e.Rcpts[idx] and queues it, from the null
// sender to the sender, with the entry as mark leaves it, in one commit;
// then it starts the notice's delivery at once (into the sender's mailbox
// when the sender is local, past its quota: a notice refused would be
// lost). It reports whether the notice is safely on its way.
func (q *Queue) sendDSN(es *entryState, action string, idx []int, now time.Time, mark func(*store.QueueEntry)) bool {
	e := &es.e
	// Without the body the notice still names the recipients and why;
	// only the returned header is missing.
	body, _ := es.loadBody(q.spool)
	rcpts := make([]store.QueueRcpt, len(idx))
	for i, j := range idx {
		rcpts[i] = e.Rcpts[j]
	}
	msg := buildDSN(dsnParams{
		Hostname:   q.opts.Hostname,
		QueueID:    EntryID(*e),
		Sender:     e.From,
		Action:     action,
		Rcpts:      rcpts,
		Arrival:    e.Created,
		RetryUntil: e.Created.Add(q.opts.MaxAge),
		Now:        now,
		Original:   body,
		EnvID:      e.EnvID,
		Ret:        e.Ret,
		MaxReturn:  q.opts.MaxReturnBytes,
	})
	log := es.log.With("kind", action, "to", e.From)
	updated := *e
	updated.Rcpts = slices.Clone(e.Rcpts)
	mark(&updated)
	at := now.UTC()
	notice := store.QueueEntry{MsgID: delivery.NewID(), From: "", Created: at, NextAttempt: at, Notice: true,
		Rcpts: []store.QueueRcpt{{Addr: e.From, State: store.RcptPending, Notify: []string{string(smtp.DSNNotifyNever)}}}}
	// The trace: the notice is queued, and a failed recipient's bounced
	// event names it, in the commit that queues it.
	notice.Events = []store.Event{queuedEvent(notice.MsgID, "", []string{e.From}, msg, at,
		[]store.Fact{{Key: "dsn_for", Value: EntryID(*e)}, {Key: "action", Value: action}})}
	updated.Events = es.events
	if action == dsnFailed {
		for _, j := range idx {
			updated.Events = append(updated.Events, bouncedEvent(EntryID(*e), at, &e.Rcpts[j], notice.MsgID))
		}
	}
	n, err := q.spool.EnqueueNotice(updated, notice, msg)
	if err != nil {
		if errors.Is(err, store.ErrNoQueueEntry) {
			es.dropped = true
			log.Info("dropped during delivery")
			return false
		}
		log.Error("dsn", "err", err.Error(), "result", "retry later")
		return false
	}
	updated.Events, es.events = nil, nil
	*e = updated
	log.Info("dsn", "via", "queue", "dsn_id", notice.MsgID, "rcpts", len(rcpts))
	q.log.Info("queued", "id", notice.MsgID, "from", "", "rcpts", 1, "size", len(msg))
	q.mu.Lock()
	if !q.inflight[n] {
		q.start(es.ctx, n, false, es.wg)
	}
	q.mu.Unlock()
	return true
}

// Actions of RFC 3464 2.3.3 that minimail reports.
const (
	dsnFailed    = "failed"
	dsnDelayed   = "delayed"
	dsnDelivered = "delivered"
	dsnRelayed   = "relayed"
)

// DefaultMaxReturnBytes is Options.MaxReturnBytes's default.
const DefaultMaxReturnBytes = 50000

// dsnParams is everything a notice says; buildDSN is a pure function of it.
type dsnParams struct {
	Hostname   string
	QueueID    string
	Sender     string
	Action     string // one of the dsn* actions
	Rcpts      []store.QueueRcpt
	Arrival    time.Time
	RetryUntil time.Time
	Now        time.Time
	// Original is the queued message: a failure notice returns it whole
	// for RET=FULL when it has at most MaxReturn octets; otherwise, and
	// in every other notice, only its header is returned.
	Original  []byte
	Ret       string
	MaxReturn int
	EnvID     string // ENVID, for Original-Envelope-Id
}

// maxFieldText bounds remote text copied into one header line, well under
// the 998-octet limit of RFC 5322 2.1.1.
const maxFieldText = 800

// maxHeaderCopy bounds the original header returned with a notice.
const maxHeaderCopy = 64 * 1024

// buildDSN writes an RFC 3464 delivery status notification: a
// multipart/report (RFC 6522) with a human explanation, the
// message/delivery-status fields, and the original message's header
// (RFC 3462 text/rfc822-headers), or for RET=FULL the message itself
// (message/rfc822). It comes from MAILER-DAEMON, goes to the null sender's
// envelope, and says Auto-Submitted (RFC 3834 5).
func buildDSN(p dsnParams) []byte {
	host := clean(p.Hostname)
	headersType, headers, note := returned(p)
	text := explanation(p, host, note)
	status, utf8Addrs := deliveryStatus(p, host)

	statusType := "message/delivery-status"
	if utf8Addrs {
		statusType = "message/global-delivery-status" // RFC 6533 6.1
	}
	boundary := pickBoundary(p.QueueID, p.Now, text, status, headers)

	var b bytes.Buffer
	writeReportHeader(&b, p, host, boundary)
	writePart(&b, boundary, "text/plain; charset=utf-8", text)
	writePart(&b, boundary, statusType, status)
	writePart(&b, boundary, headersType, headers)
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes()
}

// explanation is the human part: what happened, and why for each
// recipient; note says what is attached.
func explanation(p dsnParams, host, note string) []byte {
	var text bytes.Buffer
	fmt.Fprintf(&text, "This is the mail system at %s.\r\n\r\n", host)
	switch p.Action {
	case dsnDelayed:
		fmt.Fprintf(&text, "Your message has not been delivered yet to the recipients below.\r\n")
		fmt.Fprintf(&text, "It will be retried until %s; you do not need to send it again.\r\n\r\n", p.RetryUntil.Format(time.RFC1123Z))
	case dsnDelivered:
		fmt.Fprintf(&text, "Your message was delivered to the mailboxes of the recipients below,\r\n")
		fmt.Fprintf(&text, "as you asked (NOTIFY=SUCCESS).\r\n\r\n")
	case dsnRelayed:
		fmt.Fprintf(&text, "Your message was handed on to the next mail server for the recipients\r\n")
		fmt.Fprintf(&text, "below, as you asked (NOTIFY=SUCCESS). That server does not send delivery\r\n")
		fmt.Fprintf(&text, "status notifications: you may hear nothing further about them.\r\n\r\n")
	default:
		fmt.Fprintf(&text, "Your message could not be delivered to the recipients below.\r\n")
		fmt.Fprintf(&text, "This is a permanent failure; the technical details follow.\r\n\r\n")
	}
	for _, r := range p.Rcpts {
		reason := clean(r.LastError)
		switch {
		case p.Action == dsnDelivered || p.Action == dsnRelayed:
			reason = p.Action
		case reason == "":
			reason = "no reason given"
		}
		fmt.Fprintf(&text, "<%s>: %s\r\n", clean(r.Addr), reason)
	}
	fmt.Fprintf(&text, "\r\n%s\r\n", note)
	return text.Bytes()
}

// returned is the third part of a notice: its type, its content, and the
// sentence that tells the reader what it is. A failure notice for RET=FULL
// returns the whole message up to MaxReturn octets (RFC 3461 4.3); any
// other notice, or a bigger message, returns its header. RET absent
// returns the header, as RFC 3461 4.3 leaves to the server.
func returned(p dsnParams) (contentType string, content []byte, note string) {
	full := p.Action == dsnFailed && p.Ret == string(smtp.DSNReturnFull) && len(p.Original) > 0
	if full && len(p.Original) <= p.MaxReturn {
		header := originalHeader(p.Original)
		contentType = "message/rfc822"
		if !mailaddr.IsASCII(string(header)) {
			contentType = "message/global" // RFC 6533 3
		}
		return contentType, p.Original, "Your message is attached."
	}
	content = originalHeader(p.Original)
	contentType = "text/rfc822-headers"
	if !mailaddr.IsASCII(string(content)) {
		contentType = "message/global-headers" // RFC 6533 6.3
	}
	note = "The header of your message is attached."
	if full {
		note = fmt.Sprintf("Your message of %d octets is over the %d-octet limit for returning it whole:\r\nonly its header is attached.", len(p.Original), p.MaxReturn)
	}
	return contentType, content, note
}

// deliveryStatus is the machine-readable part (RFC 3464 2.2 and 2.3): the
// per-message fields, then a block per recipient. It also reports whether
// any address is not ASCII, which makes the part global (RFC 6533).
func deliveryStatus(p dsnParams, host string) (status []byte, utf8Addrs bool) {
	var b bytes.Buffer
	// RFC 3464 2.2.1: the ENVID, first, in the xtext it came in (RFC 3461 4.4).
	if p.EnvID != "" {
		fmt.Fprintf(&b, "Original-Envelope-Id: %s\r\n", xtext.Encode(p.EnvID))
	}
	fmt.Fprintf(&b, "Reporting-MTA: dns; %s\r\n", host)
	fmt.Fprintf(&b, "X-Minimail-Queue-ID: %s\r\n", clean(p.QueueID))
	if !p.Arrival.IsZero() {
		fmt.Fprintf(&b, "Arrival-Date: %s\r\n", p.Arrival.Format(time.RFC1123Z))
	}
	for _, r := range p.Rcpts {
		addr := clean(r.Addr)
		// RFC 6533 3: a non-ASCII address is reported as type utf-8.
		addrType := "rfc822"
		if !mailaddr.IsASCII(addr) {
			addrType, utf8Addrs = "utf-8", true
		}
		b.WriteString("\r\n")
		// RFC 3464 2.3.1: the ORCPT as given, its address in xtext
		// (RFC 3461 4.2); a utf-8 one as it is (RFC 6533 3).
		switch r.ORcptType {
		case "":
		case "utf-8":
			fmt.Fprintf(&b, "Original-Recipient: utf-8;%s\r\n", clean(r.ORcpt))
			utf8Addrs = utf8Addrs || !mailaddr.IsASCII(r.ORcpt)
		default:
			fmt.Fprintf(&b, "Original-Recipient: %s;%s\r\n", clean(r.ORcptType), xtext.Encode(r.ORcpt))
		}
		fmt.Fprintf(&b, "Final-Recipient: %s; %s\r\n", addrType, addr)
		fmt.Fprintf(&b, "Action: %s\r\n", p.Action)
		fmt.Fprintf(&b, "Status: %s\r\n", statusCode(r.Status, p.Action))
		if m := clean(r.RemoteMTA); m != "" {
			fmt.Fprintf(&b, "Remote-MTA: dns; %s\r\n", m)
		}
		if d := clean(r.Diagnostic); d != "" {
			fmt.Fprintf(&b, "Diagnostic-Code: %s\r\n", d)
		}
		fmt.Fprintf(&b, "Last-Attempt-Date: %s\r\n", p.Now.Format(time.RFC1123Z))
		if p.Action == dsnDelayed && !p.RetryUntil.IsZero() {
			fmt.Fprintf(&b, "Will-Retry-Until: %s\r\n", p.RetryUntil.Format(time.RFC1123Z))
		}
	}
	return b.Bytes(), utf8Addrs
}

// writeReportHeader writes the notice's own header fields and the
// multipart preamble.
func writeReportHeader(b *bytes.Buffer, p dsnParams, host, boundary string) {
	subject := "Undelivered Mail Returned to Sender"
	switch p.Action {
	case dsnDelayed:
		subject = "Delayed Mail (still being retried)"
	case dsnDelivered:
		subject = "Successful Mail Delivery Report"
	case dsnRelayed:
		subject = "Relayed Mail Report"
	}
	fmt.Fprintf(b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host)
	fmt.Fprintf(b, "To: <%s>\r\n", clean(p.Sender))
	fmt.Fprintf(b, "Subject: %s\r\n", subject)
	fmt.Fprintf(b, "Date: %s\r\n", p.Now.Format(time.RFC1123Z))
	fmt.Fprintf(b, "Message-ID: <dsn.%s.%s.%d@%s>\r\n", clean(p.QueueID), p.Action, p.Now.UnixNano(), host)
	b.WriteString("Auto-Submitted: auto-replied\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary)
	b.WriteString("\r\nThis is a MIME-encapsulated delivery status notification.\r\n")
}

// writePart writes one body part of the report.
func writePart(b *bytes.Buffer, boundary, contentType string, body []byte) {
	fmt.Fprintf(b, "\r\n--%s\r\n", boundary)
	fmt.Fprintf(b, "Content-Type: %s\r\n", contentType)
	if !mailaddr.IsASCII(string(body)) {
		b.WriteString("Content-Transfer-Encoding: 8bit\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
}

// statusCode returns a well-formed RFC 3463 code for the action, whatever
// was recorded.
func statusCode(s, action string) string {
	success := action == dsnDelivered || action == dsnRelayed
	if validStatus(s) && success == (s[0] == '2') {
		return s
	}
	switch {
	case success:
		return "2.0.0"
	case action == dsnDelayed:
		return "4.0.0"
	}
	return "5.0.0"
}

func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// originalHeader returns the header section of msg (CRLF-only, as every
// queued message is), up to and including the empty line; at most
// maxHeaderCopy octets, cut at a line end.
func originalHeader(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		msg = msg[:i+2]
	} else if bytes.HasPrefix(msg, []byte("\r\n")) {
		msg = nil
	}
	if len(msg) > maxHeaderCopy {
		msg = msg[:bytes.LastIndex(msg[:maxHeaderCopy], []byte("\r\n"))+2]
	}
	return msg
}

// clean makes text safe for one header line: no control characters, valid
// UTF-8, bounded length.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxFieldText {
		cut := maxFieldText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// pickBoundary returns a multipart boundary (RFC 2046 5.1.1) that occurs
// in none of the parts.
func pickBoundary(id string, now time.Time, parts ...[]byte) string {
	base := fmt.Sprintf("=_dsn_%x_%x", now.UnixNano(), len(id))
	b := base
	for n := 0; ; n++ {
		found := false
		for _, p := range parts {
			if bytes.Contains(p, []byte(b)) {
				found = true
				break
			}
		}
		if !found {
			return b
		}
		b = fmt.Sprintf("%s_%d", base, n)
	}
}
