package mta

import (
	"context"
	"strings"
	"testing"
	"time"
)

// bodyLines returns n octets of message body in 80-octet lines.
func bodyLines(n int) string {
	line := strings.Repeat("x", 78) + "\r\n"
	return strings.Repeat(line, n/len(line)+1)
}

// openBig starts a transaction to alice and sends the header and n octets
// of body, leaving the message open.
func openBig(cl *client, mailArgs string, n int) {
	cl.t.Helper()
	cl.cmd("EHLO client.test", "250 ")
	cl.cmd("MAIL FROM:<bob@other.test>"+mailArgs, "250 ")
	cl.cmd("RCPT TO:<alice@example.org>", "250 ")
	cl.cmd("DATA", "354 ")
	cl.write("Subject: big\r\n\r\n" + bodyLines(n))
}

// noReplyWithin fails if the server answers within d.
func (cl *client) noReplyWithin(d time.Duration) {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(d))
	if _, err := cl.r.Peek(1); err == nil {
		line, _ := cl.r.ReadString('\n')
		cl.t.Fatalf("want no reply yet, got %q", line)
	}
	cl.c.SetReadDeadline(time.Now().Add(20 * time.Second))
}

func gateEnv(t *testing.T, places int, wait time.Duration, mod func(o *Options)) (*env, *TransferGate) {
	gate := NewTransferGate(places)
	gate.wait = wait
	return newEnv(t, func(o *Options, _ *Local) {
		o.BigTransfers = gate
		if mod != nil {
			mod(o)
		}
	}), gate
}

// full waits until every place of g is taken: the server has read far
// enough into the messages under way.
func (g *TransferGate) full(t *testing.T) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); len(g.places) < cap(g.places); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d of %d places taken", len(g.places), cap(g.places))
		}
	}
}

// TestTransferGate_BigMessagesTakeTurns: with one place, a second big
// message is not taken in (no 250) while the first holds it, and is once
// the first is stored; a message that announces its size with SIZE= waits
// before any of it is read; small mail goes by meanwhile.
func TestTransferGate_BigMessagesTakeTurns(t *testing.T) {
	for _, c := range []struct {
		name     string
		mailArgs string
		size     int // of the second message
	}{
		{"grows past the threshold", "", 3 * bigTransfer},
		{"announced with SIZE=", " SIZE=600000", 4096},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, gate := gateEnv(t, 1, time.Minute, nil)
			first := dial(t, e.mxAddr)
			openBig(first, "", 2*bigTransfer)
			gate.full(t)

			second := dial(t, e.mxAddr)
			openBig(second, c.mailArgs, c.size)
			second.write(".\r\n")
			second.noReplyWithin(300 * time.Millisecond)

			small := dial(t, e.mxAddr)
			small.cmd("EHLO client.test", "250 ")
			if got := small.send("carol@other.test", []string{"alice@example.org"}, "Subject: small\r\n\r\n"+bodyLines(8<<10)); !strings.HasPrefix(got, "250 2.0.0") {
				t.Fatalf("small message while the place is held: %q", got)
			}
			second.noReplyWithin(100 * time.Millisecond)

			first.write(".\r\n")
			first.expect("250 2.0.0")
			second.expect("250 2.0.0")
			if n := len(e.mailbox("alice@example.org")); n != 3 {
				t.Fatalf("alice has %d messages, want 3", n)
			}
		})
	}
}

// TestTransferGate_WaitIsBounded: a client that holds its place without
// finishing (here: stops sending) holds up the next big message only for
// the gate's wait; then it is taken in without a place.
func TestTransferGate_WaitIsBounded(t *testing.T) {
	const wait = 300 * time.Millisecond
	e, gate := gateEnv(t, 1, wait, func(o *Options) { o.DataTimeout = time.Minute })
	stuck := dial(t, e.mxAddr)
	openBig(stuck, "", 2*bigTransfer)
	gate.full(t)

	start := time.Now()
	next := dial(t, e.mxAddr)
	openBig(next, "", 3*bigTransfer)
	next.write(".\r\n")
	next.expect("250 2.0.0")
	if took := time.Since(start); took < wait {
		t.Fatalf("taken in after %v, before the wait of %v was over", took, wait)
	}
	stuck.write(".\r\n")
	stuck.expect("250 2.0.0")
}

// TestTransferGate_WaitDoesNotCountAgainstMinDataRate: a client that sends
// at the floor rate is not cut off because the server kept it waiting
// longer than its whole allowance.
func TestTransferGate_WaitDoesNotCountAgainstMinDataRate(t *testing.T) {
	const (
		rate    = 200 << 10 // bytes per second
		timeout = time.Second
	)
	e, gate := gateEnv(t, 1, time.Minute, func(o *Options) {
		o.DataTimeout = timeout
		o.MinDataRate = rate
	})
	// The place holder sends at twice the floor rate for longer than the
	// waiter's allowance (timeout + 3 × 128 KiB / 200 KiB/s ≈ 2.9 s).
	holder := dial(t, e.mxAddr)
	openBig(holder, "", 2*bigTransfer)
	gate.full(t)
	waiter := dial(t, e.mxAddr)
	openBig(waiter, "", 3*bigTransfer)
	waiter.write(".\r\n")
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
		holder.write(bodyLines(2 * rate / 10))
	}
	holder.write(".\r\n")
	holder.expect("250 2.0.0")
	waiter.expect("250 2.0.0")
}

func TestTransferGate_Enter(t *testing.T) {
	g := NewTransferGate(1)
	g.wait = 50 * time.Millisecond
	waited, leave := g.enter(context.Background(), nil)
	if leave == nil || waited != 0 {
		t.Fatalf("free place: waited %v, leave %v", waited, leave != nil)
	}
	if waited, l := g.enter(context.Background(), nil); l != nil || waited < g.wait {
		t.Fatalf("full gate: waited %v, got a place %v", waited, l != nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g.wait = time.Minute
	if waited, l := g.enter(ctx, nil); l != nil || waited > 10*time.Second {
		t.Fatalf("cancelled: waited %v, got a place %v", waited, l != nil)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		leave()
	}()
	if _, l := g.enter(context.Background(), nil); l == nil {
		t.Fatal("no place after it was given back")
	} else {
		l()
	}
	if n := NewTransferGate(0); cap(n.places) < 4 {
		t.Fatalf("default gate has %d places", cap(n.places))
	}
}

// TestTransferGate_WaitingTransferIsNotExpected: a transaction whose
// message waits for a place is not announced to the store while it waits
// (the committer would wait for it at every commit, up to its linger), and
// is again once it has its place, until its message is stored.
func TestTransferGate_WaitingTransferIsNotExpected(t *testing.T) {
	a := &announcements{t: t}
	e, gate := gateEnv(t, 1, time.Minute, func(o *Options) { o.Expect = a.expect })
	waitOpen := a.wait
	first := dial(t, e.mxAddr)
	openBig(first, "", 2*bigTransfer)
	gate.full(t)
	waitOpen(1, "first message holding the place")

	second := dial(t, e.mxAddr)
	second.cmd("EHLO client.test", "250 ")
	second.cmd("MAIL FROM:<bob@other.test>", "250 ")
	waitOpen(2, "second transaction open")
	second.cmd("RCPT TO:<alice@example.org>", "250 ")
	second.cmd("DATA", "354 ")
	second.write("Subject: big\r\n\r\n" + bodyLines(3*bigTransfer))
	waitOpen(1, "second message waiting for the place")

	first.write(".\r\n")
	first.expect("250 2.0.0")
	waitOpen(1, "second message past the gate")
	second.write(".\r\n")
	second.expect("250 2.0.0")
	waitOpen(0, "both stored")
	if n := len(e.mailbox("alice@example.org")); n != 2 {
		t.Fatalf("alice has %d messages, want 2", n)
	}
}
