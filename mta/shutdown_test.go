package mta

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestShutdown_TransactionInDATAFinishes(t *testing.T) {
	e := newEnv(t, nil)
	busy := dial(t, e.mxAddr)
	busy.cmd("EHLO client.test", "250 ")
	busy.cmd("MAIL FROM:<bob@other.test>", "250 ")
	busy.cmd("RCPT TO:<alice@example.org>", "250 ")
	busy.cmd("DATA", "354 ")
	busy.write("Subject: half\r\n\r\nfirst half\r\n")
	idle := dial(t, e.mxAddr)
	idle.cmd("EHLO client.test", "250 ")

	done := make(chan error, 1)
	go func() { done <- e.mx.Shutdown(context.Background()) }()

	// Idle connections are told and closed at once; no new ones get in.
	idle.expect("421 ")
	idle.expectClosed()
	if c, err := net.Dial("tcp", e.mxAddr); err == nil {
		c.Close()
		t.Fatal("listener still accepting")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a transaction in DATA", err)
	default:
	}

	// The transaction completes; a new one on the same connection is refused.
	busy.write("second half\r\n.\r\nMAIL FROM:<bob@other.test>\r\n")
	busy.expect("250 2.0.0")
	busy.expect("421 4.3.2")
	busy.expectClosed()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if m := e.mailbox("alice@example.org"); len(m) != 1 || string(body(m[0])) != "first half\r\nsecond half\r\n" {
		t.Fatalf("stored %q", m)
	}
}

func TestShutdown_ClosesWhatIsLeftAtDeadline(t *testing.T) {
	e := newEnv(t, nil)
	stuck := dial(t, e.mxAddr)
	stuck.cmd("EHLO client.test", "250 ")
	stuck.cmd("MAIL FROM:<bob@other.test>", "250 ")
	stuck.cmd("RCPT TO:<alice@example.org>", "250 ")
	stuck.cmd("DATA", "354 ")
	stuck.write("Subject: never finished\r\n")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.mx.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	stuck.expectClosed()
	if m := e.mailbox("alice@example.org"); len(m) != 0 {
		t.Fatalf("stored %d", len(m))
	}
}
