package mta

import (
	"context"
	"errors"
	"net"
	"strings"
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

// TestShutdown_DeadlineHoldsWhileAHandlerIsBusy: a handler stuck in
// CPU-bound work (a DKIM check of a hostile header) does not hold Shutdown
// past its deadline, and the message, whose client was cut off without a
// 250, is not stored when the work ends: the client will send it again.
func TestShutdown_DeadlineHoldsWhileAHandlerIsBusy(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	e := newEnv(t, func(o *Options, _ *Local) {
		o.Verify = func(_ context.Context, _ net.IP, _, _ string, msg []byte) (Verdict, error) {
			close(entered)
			<-release
			return Verdict{Message: msg}, nil
		}
	})
	cl := openTransaction(t, e, nil)
	cl.cmd("DATA", "354 ")
	cl.write("Subject: slow to check\r\n\r\nbody\r\n.\r\n")
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	returned := make(chan error, 1)
	go func() { returned <- e.mx.Shutdown(ctx) }()
	select {
	case err := <-returned:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown waited for the busy handler")
	}
	cl.expectClosed()
	close(release)
	// The handler finishes after Shutdown and logs its transaction.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(e.logs.String(), "421 4.3.2 shutting down"); {
		if time.Now().After(deadline) {
			t.Fatalf("the handler never finished:\n%s", e.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := e.mailbox("alice@example.org"); len(m) != 0 {
		t.Fatalf("stored after shutdown: %q", m)
	}
}

// A listener handed to Serve once Shutdown began is closed at once and
// never accepts: Shutdown closed the listeners it knew of before telling
// the idle connections, and Serve registers none after that.
func TestShutdown_ServeAfterItClosesTheListener(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.mx.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.mx.Serve(l) }()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Shutdown = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve after Shutdown did not return")
	}
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener given to Serve after Shutdown still accepts")
	}
}
