package mta

import (
	"sync/atomic"
	"testing"
	"time"
)

// The store learns of every open transaction, and of its end, whichever way
// it ends: a message stored, RSET, or a connection that just goes away.
func TestExpect_FollowsTransactions(t *testing.T) {
	var open atomic.Int64
	e := newEnv(t, func(o *Options, _ *Local) {
		o.Expect = func() func() {
			open.Add(1)
			return func() { open.Add(-1) }
		}
	})
	waitOpen := func(want int64, when string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for open.Load() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d transactions announced, want %d", when, open.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}

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
