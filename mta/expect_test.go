package mta

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// announcements stands for the store's Expect (Options.Expect): it counts
// the transactions announced and not yet done.
type announcements struct {
	t    *testing.T
	open atomic.Int64
}

func (a *announcements) expect() func() {
	a.open.Add(1)
	var once sync.Once
	return func() { once.Do(func() { a.open.Add(-1) }) }
}

// wait waits until want transactions are announced.
func (a *announcements) wait(want int64, when string) {
	a.t.Helper()
	for end := time.Now().Add(5 * time.Second); a.open.Load() != want; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			a.t.Fatalf("%s: %d transactions announced, want %d", when, a.open.Load(), want)
		}
	}
}

// The store learns of every open transaction, and of its end, whichever way
// it ends: a message stored, RSET, or a connection that just goes away.
func TestExpect_FollowsTransactions(t *testing.T) {
	a := &announcements{t: t}
	e := newEnv(t, func(o *Options, _ *Local) { o.Expect = a.expect })
	waitOpen := a.wait

	c := dial(t, e.mxAddr)
	c.cmd("EHLO client.example.net", "250")
	c.cmd("MAIL FROM:<sender@example.net>", "250")
	waitOpen(1, "after MAIL")
	c.cmd("RCPT TO:<alice@example.org>", "250")
	c.cmd("DATA", "354")
	c.cmd("Subject: x\r\n\r\nbody\r\n.", "250")
	waitOpen(0, "after the message was stored")

	c.cmd("MAIL FROM:<sender@example.net>", "250")
	waitOpen(1, "after the second MAIL")
	c.cmd("RSET", "250")
	waitOpen(0, "after RSET")

	c.cmd("MAIL FROM:<sender@example.net>", "250")
	c.cmd("MAIL FROM:<sender@example.net>", "503") // one transaction, announced once
	waitOpen(1, "after a refused second MAIL")
	c.c.Close()
	waitOpen(0, "after the connection went away")
}
