package queue

import (
	"bytes"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"minimail/mta/delivery"
	"minimail/mta/mailaddr"
	"minimail/store"
)

// notify sends the failure notice for recipients that failed and were not
// reported yet, and the one delay notice once the entry has waited long
// enough. A notice counts as sent once it is in the sender's mailbox or in
// the queue; until then the entry stays, and the next pass tries again (so
// a crash in between may repeat a notice, never lose one). The caller holds
// es.mu.
func (q *Queue) notify(es *entryState, now time.Time) {
	e := &es.e
	var failed, pending []int
	for i, r := range e.Rcpts {
		switch {
		case r.State == store.RcptFailed && !r.Notified:
			failed = append(failed, i)
		case r.State == store.RcptPending:
			pending = append(pending, i)
		}
	}
	if len(failed) > 0 {
		// RFC 5321 6.1 / RFC 3464 2: never report to the null sender,
		// or two servers could bounce a bounce back and forth forever.
		if e.From == "" || q.sendDSN(es, dsnFailed, failed, now) {
			for _, i := range failed {
				e.Rcpts[i].Notified = true
			}
		}
	}
	delayDue := q.opts.DelayNotice > 0 && now.Sub(e.Created) >= q.opts.DelayNotice
	if len(pending) > 0 && delayDue && !e.DelayNotified {
		if e.From == "" || q.sendDSN(es, dsnDelayed, pending, now) {
			e.DelayNotified = true
		}
	}
}

// sendDSN builds a notice about e.Rcpts[idx] and hands it on: into the
// sender's mailbox when the sender is local, else into this queue. It
// reports whether the notice is safely on its way.
func (q *Queue) sendDSN(es *entryState, action string, idx []int, now time.Time) bool {
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
	})
	log := es.log.With("kind", action, "to", e.From)
	if q.isLocal(e.From) && q.opts.Local != nil {
		deliver := q.opts.Local.Deliver
		if n, ok := q.opts.Local.(noticeDeliverer); ok {
			deliver = n.DeliverNotice
		}
		err := deliver("", []string{e.From}, msg)[0]
		switch {
		case err == nil:
			log.Info("dsn", "via", "local", "rcpts", len(rcpts))
			q.count("delivered")
			return true
		case !delivery.Temporary(err):
			// The sender's mailbox is gone: there is no one left to
			// tell, and a notice about a notice is never sent.
			log.Info("dsn", "via", "local", "rcpts", len(rcpts), "err", err.Error(), "result", "discarded")
			return true
		}
		// A passing storage problem: let the queue retry the notice.
	}
	id, err := q.Enqueue("", "", []string{e.From}, msg)
	if err != nil {
		log.Error("dsn", "err", err.Error(), "result", "retry later")
		return false
	}
	log.Info("dsn", "via", "queue", "dsn_id", id, "rcpts", len(rcpts))
	return true
}

// Actions of RFC 3464 2.3.3 that minimail reports.
const (
	dsnFailed  = "failed"
	dsnDelayed = "delayed"
)

// dsnParams is everything a notice says; buildDSN is a pure function of it.
type dsnParams struct {
	Hostname   string
	QueueID    string
	Sender     string
	Action     string // dsnFailed or dsnDelayed
	Rcpts      []store.QueueRcpt
	Arrival    time.Time
	RetryUntil time.Time
	Now        time.Time
	Original   []byte // the queued message; only its header is returned
}

// maxFieldText bounds remote text copied into one header line, well under
// the 998-octet limit of RFC 5322 2.1.1.
const maxFieldText = 800

// maxHeaderCopy bounds the original header returned with a notice.
const maxHeaderCopy = 64 * 1024

// buildDSN writes an RFC 3464 delivery status notification: a
// multipart/report (RFC 6522) with a human explanation, the
// message/delivery-status fields, and the original message's header
// (RFC 3462 text/rfc822-headers). It comes from MAILER-DAEMON, goes to the
// null sender's envelope, and says Auto-Submitted (RFC 3834 5).
func buildDSN(p dsnParams) []byte {
	host := clean(p.Hostname)
	text := explanation(p, host)
	status, utf8Addrs := deliveryStatus(p, host)
	headers := originalHeader(p.Original)

	statusType, headersType := "message/delivery-status", "text/rfc822-headers"
	if utf8Addrs {
		statusType = "message/global-delivery-status" // RFC 6533 6.1
	}
	if !mailaddr.IsASCII(string(headers)) {
		headersType = "message/global-headers" // RFC 6533 6.3
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
// recipient.
func explanation(p dsnParams, host string) []byte {
	var text bytes.Buffer
	fmt.Fprintf(&text, "This is the mail system at %s.\r\n\r\n", host)
	if p.Action == dsnDelayed {
		fmt.Fprintf(&text, "Your message has not been delivered yet to the recipients below.\r\n")
		fmt.Fprintf(&text, "It will be retried until %s; you do not need to send it again.\r\n\r\n", p.RetryUntil.Format(time.RFC1123Z))
	} else {
		fmt.Fprintf(&text, "Your message could not be delivered to the recipients below.\r\n")
		fmt.Fprintf(&text, "This is a permanent failure; the technical details follow.\r\n\r\n")
	}
	for _, r := range p.Rcpts {
		reason := clean(r.LastError)
		if reason == "" {
			reason = "no reason given"
		}
		fmt.Fprintf(&text, "<%s>: %s\r\n", clean(r.Addr), reason)
	}
	text.WriteString("\r\nThe header of your message is attached.\r\n")
	return text.Bytes()
}

// deliveryStatus is the machine-readable part (RFC 3464 2.2 and 2.3): the
// per-message fields, then a block per recipient. It also reports whether
// any address is not ASCII, which makes the part global (RFC 6533).
func deliveryStatus(p dsnParams, host string) (status []byte, utf8Addrs bool) {
	var b bytes.Buffer
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
		fmt.Fprintf(&b, "\r\nFinal-Recipient: %s; %s\r\n", addrType, addr)
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
	if p.Action == dsnDelayed {
		subject = "Delayed Mail (still being retried)"
	}
	fmt.Fprintf(b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host)
	fmt.Fprintf(b, "To: <%s>\r\n", clean(p.Sender))
	fmt.Fprintf(b, "Subject: %s\r\n", subject)
	fmt.Fprintf(b, "Date: %s\r\n", p.Now.Format(time.RFC1123Z))
	fmt.Fprintf(b, "Message-ID: <dsn.%s.%d@%s>\r\n", clean(p.QueueID), p.Now.UnixNano(), host)
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
	if validStatus(s) {
		return s
	}
	if action == dsnDelayed {
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
