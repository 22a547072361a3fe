package mda

import (
	"strconv"

	"minimail/mta/delivery"
	"minimail/store"
)

// traceWith attaches the trace to what one delivery commits: t.Events (the
// received event) go first, with the forwarded copy when there is one (the
// store writes queue entries before mailbox copies) else with the first
// mailbox copy; a forwarded copy gets its queued event; each copy's
// delivered event comes from the store (Delivery.TraceID).
func traceWith(t delivery.Trace, ds []store.Delivery, out []store.Outgoing, msg []byte) {
	if t.ID == "" {
		return
	}
	events := t.Events
	for i := range out {
		e := &out[i].Entry
		facts := []store.Fact{{Key: "from", Value: e.From}}
		for _, r := range e.Rcpts {
			facts = append(facts, store.Fact{Key: store.FactRcpt, Value: r.Addr})
		}
		facts = append(facts, store.Fact{Key: "size", Value: strconv.Itoa(len(msg))}, store.Fact{Key: "forward", Value: "yes"})
		e.Events = append(append([]store.Event(nil), events...), store.Event{Time: e.Created, Kind: store.EventQueued, ID: e.MsgID, Facts: facts})
		events = nil
	}
	if len(events) > 0 && len(ds) > 0 {
		ds[0].Events = events
	}
}
