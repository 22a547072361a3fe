package mta

import (
	"strconv"

	"minimail/mta/delivery"
	"minimail/store"
)

// A Local or Queue that records trace events (`minimail trace`) has a
// traced variant of its method, found by type assertion: the message's
// received event then commits with the first copy stored (local mailbox or
// queue), under the id of the 250 reply.
type tracedLocal interface {
	DeliverTraced(t delivery.Trace, from string, rcpts []string, msg []byte) []error
}

type tracedQueue interface {
	EnqueueTraced(t delivery.Trace, from string, rcpts []string, msg []byte, p delivery.DSN) (string, error)
}

// receivedEvent is what trace shows of the SMTP transaction that brought
// msg: the listener, the client, who logged in, the envelope, the size, the
// Message-ID and the inbound checks' verdicts.
func (ss *session) receivedEvent(tx *transaction, user string, msg []byte) store.Event {
	var facts []store.Fact
	if ss.conn == nil {
		// SubmitLocal: handed in on the machine (sendmail) by a Unix user.
		facts = append(facts, store.Fact{Key: "listener", Value: "sendmail"}, store.Fact{Key: "user", Value: user})
	} else {
		facts = append(facts,
			store.Fact{Key: "listener", Value: ss.listener()},
			store.Fact{Key: "client", Value: ss.ip.String()},
			store.Fact{Key: "helo", Value: ss.conn.Hostname()})
		if user != "" {
			facts = append(facts, store.Fact{Key: "user", Value: user})
		}
		if tls := ss.tlsInfo(); tls != "" {
			facts = append(facts, store.Fact{Key: "tls", Value: tls})
		}
	}
	facts = append(facts, store.Fact{Key: "from", Value: tx.from})
	for _, r := range append(append([]string(nil), tx.local...), tx.remote...) {
		facts = append(facts, store.Fact{Key: store.FactRcpt, Value: r})
	}
	facts = append(facts, store.Fact{Key: "size", Value: strconv.Itoa(len(msg))})
	if mid := delivery.MessageID(msg); mid != "" {
		facts = append(facts, store.Fact{Key: store.FactMessageID, Value: mid})
	}
	if tx.checks != "" {
		facts = append(facts, store.Fact{Key: "checks", Value: tx.checks})
	}
	return store.Event{Time: ss.srv.opts.Now().UTC(), Kind: store.EventReceived, ID: tx.id, Facts: facts}
}
