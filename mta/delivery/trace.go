package delivery

import (
	"bytes"
	"context"
	"strings"

	"minimail/store"
)

// Trace goes with a message handed to a deliverer that records trace
// events (`minimail trace`): the message's id (the 250 reply's or the
// queue entry's: a copy an alias forwards is queued under it), events to
// write in the same store transaction as the message itself (the received
// event of a message the SMTP server just took), and whether the message
// is one of the server's own notices (stored even past a full mailbox's
// quota: a bounce refused would be lost). Deliverers that know it are found
// by type assertion (a DeliverTraced or EnqueueTraced method).
type Trace struct {
	ID     string
	Events []store.Event
	Notice bool
}

// Attempt is one SMTP session with a next hop, as trace shows it: the
// host and the address dialled, whether TLS was used ("none",
// "unverified", "verified"), and the reply that settled it (the 250 after
// DATA, which usually names the remote's own queue id) or why it failed.
type Attempt struct {
	Host  string
	Addr  string
	TLS   string
	Reply string
	Err   string
}

type attemptsKey struct{}

// WithAttempts returns a context under which a deliverer reports each SMTP
// session it runs to record, as net/http/httptrace reports an HTTP
// request's steps: the trace rides with the call, whatever its signature.
func WithAttempts(ctx context.Context, record func(Attempt)) context.Context {
	return context.WithValue(ctx, attemptsKey{}, record)
}

// ReportAttempt hands a to the recorder ctx carries, if any.
func ReportAttempt(ctx context.Context, a Attempt) {
	if record, ok := ctx.Value(attemptsKey{}).(func(Attempt)); ok {
		record(a)
	}
}

// maxMessageIDScan bounds how far into a message MessageID looks.
const maxMessageIDScan = 64 << 10

// MessageID returns the Message-ID field's value of a CRLF message's
// header (folded lines joined), or "" when it has none. It is for the
// trace index; nothing about delivery depends on it.
func MessageID(msg []byte) string {
	if len(msg) > maxMessageIDScan {
		msg = msg[:maxMessageIDScan]
	}
	for len(msg) > 0 {
		line := msg
		i := bytes.Index(msg, []byte("\r\n"))
		if i >= 0 {
			line, msg = msg[:i], msg[i+2:]
		} else {
			msg = nil
		}
		if len(line) == 0 {
			return "" // end of the header
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !strings.EqualFold(string(bytes.TrimSpace(name)), "Message-ID") {
			continue
		}
		v := string(value)
		// Continuation lines start with white space (RFC 5322 2.2.3).
		for len(msg) > 0 && (msg[0] == ' ' || msg[0] == '\t') {
			j := bytes.Index(msg, []byte("\r\n"))
			if j < 0 {
				j = len(msg)
			}
			v += string(msg[:j])
			msg = msg[min(j+2, len(msg)):]
		}
		return strings.TrimSpace(v)
	}
	return ""
}
