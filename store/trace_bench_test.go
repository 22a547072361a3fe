package store_test

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"minimail/store"
)

// BenchmarkAppendTraced measures what trace events add to one delivery
// (the index is built later, in batches: IndexTrace):
// the same 4 KiB copy stored alone and with the events a delivery from
// the MX carries (received, then delivered). Commits per message must stay
// 1: the events wait for a later commit, which writes those of about a
// tenth of a second at once (trace_pending.go); pages/msg is what they
// add, 9.06 against 8.95 untraced (12.0 when each commit wrote its own).
func BenchmarkAppendTraced(b *testing.B) {
	msg := bytes.Repeat([]byte("0123456789abcde\n"), 4096/16)
	// A local delivery's own lines, as mda writes them.
	head := []byte("Return-Path: <bob@other.test>\r\nDelivered-To: " + alice + "\r\n" +
		"Received: from mx.other.test (mx.other.test [192.0.2.1])\r\n\tby mx.example.test with ESMTPS id 0123456789abcdef\r\n\tfor <" + alice + ">; Tue, 1 Dec 2026 10:00:00 +0000\r\n")
	received := store.Event{Kind: store.EventReceived, Facts: []store.Fact{
		{Key: "listener", Value: "smtp"}, {Key: "client", Value: "192.0.2.1"}, {Key: "helo", Value: "mx.other.test"},
		{Key: "from", Value: "bob@other.test"}, {Key: store.FactRcpt, Value: alice}, {Key: "size", Value: "4096"},
		{Key: store.FactMessageID, Value: "<1234567890@other.test>"}, {Key: "checks", Value: "spf=pass dkim=none dmarc=none"}}}
	for _, traced := range []bool{false, true} {
		b.Run("traced="+strconv.FormatBool(traced), func(b *testing.B) {
			s := storeWithUsers(b, alice)
			b.SetBytes(int64(len(msg)))
			before, pages := s.Commits(), s.PagesWritten()
			b.ResetTimer()
			for i := range b.N {
				d := store.Delivery{Address: alice, Header: head, Message: msg}
				if traced {
					// Ids are random in life: spread them over the index.
					id := strconv.FormatUint(uint64(i)*2654435761%1000000007, 16)
					ev := received
					ev.ID, ev.Time = id, time.Now()
					d.Events, d.TraceID = []store.Event{ev}, id
				}
				if _, err := s.AppendMany([]store.Delivery{d}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(s.Commits()-before)/float64(b.N), "commits/msg")
			b.ReportMetric(float64(s.PagesWritten()-pages)/float64(b.N), "pages/msg")
		})
	}
}

// BenchmarkUpdateMaildropUnindexed is a POP3 session's QUIT right after
// its mail arrived, before IndexTrace caught up (the index is built once
// per queue pass): 10,000 earlier copies elsewhere, then 8 mailboxes of
// 250 traced copies each, and each QUIT
// records the retrieval of all 250. Looking up the copies' message ids in
// the events past the index must cost about one walk of them, not one per
// copy.
func BenchmarkUpdateMaildropUnindexed(b *testing.B) {
	const boxes, per = 8, 250
	msg := []byte("Subject: x\r\n\r\nbody\r\n")
	for b.Loop() {
		b.StopTimer()
		users := make([]string, boxes)
		for i := range users {
			users[i] = "u" + strconv.Itoa(i) + "@example.org"
		}
		s := storeWithUsers(b, append(users, "old@example.org")...)
		// Earlier mail, not indexed yet either: a busy hour before the
		// queue's next pass.
		for range 20 {
			batch := make([]store.Delivery, 500)
			for i := range batch {
				batch[i] = store.Delivery{Address: "old@example.org", Message: msg, TraceID: "old"}
			}
			if _, err := s.AppendMany(batch); err != nil {
				b.Fatal(err)
			}
		}
		ids := make([][]uint64, boxes)
		for m := range per {
			for u, addr := range users {
				id := strconv.Itoa(u*per + m)
				got, err := s.AppendMany([]store.Delivery{{Address: addr, Message: msg, TraceID: id}})
				if err != nil {
					b.Fatal(err)
				}
				ids[u] = append(ids[u], got[0])
			}
		}
		b.StartTimer()
		for u, addr := range users {
			if err := s.UpdateMaildrop(addr, store.MaildropUpdate{Retrieved: ids[u]}); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkAppendShared is one 4 KiB message for ten mailboxes, each copy
// with its own head: pages/msg is what one such delivery writes.
func BenchmarkAppendShared(b *testing.B) {
	msg := bytes.Repeat([]byte("0123456789abcde\n"), 4096/16)
	users := make([]string, 10)
	for i := range users {
		users[i] = "u" + strconv.Itoa(i) + "@example.org"
	}
	s := storeWithUsers(b, users...)
	b.SetBytes(int64(len(msg)))
	ds := make([]store.Delivery, len(users))
	for i, u := range users {
		ds[i] = store.Delivery{Address: u, Message: msg,
			Header: []byte("Return-Path: <bob@other.test>\r\nDelivered-To: " + u + "\r\nReceived: from mx.other.test by mx.example.org; Tue, 1 Dec 2026 10:00:00 +0000\r\n")}
	}
	pages := s.PagesWritten()
	for b.Loop() {
		if _, err := s.AppendMany(ds); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(s.PagesWritten()-pages)/float64(b.N), "pages/msg")
}
