package pop3

import (
	"testing"

	"minimail/mta/tlstest"
)

// TestLock_OneMaildropWhateverTheListener: a POP3 and a POP3S server over
// the same store, sharing one Locker as serve wires them, let a maildrop be
// opened once (RFC 1939 section 8): the second login gets [IN-USE] whichever
// listener each session came through, and succeeds once the first is gone.
func TestLock_OneMaildropWhateverTheListener(t *testing.T) {
	serverTLS, clientTLS := tlstest.Pair(t, "pop.test")
	st := fixtureMaildrop(t)
	locks := &MaildropLocks{}
	plain := startServer(t, st, Options{TLSConfig: serverTLS, Locks: locks})
	implicit := startPOP3S(t, st, Options{Locks: locks}, serverTLS)

	type listener struct {
		name string
		h    *harness
		open func() *client // a greeted client with TLS active
	}
	pop3 := listener{"110 after STLS", plain, func() *client {
		c := greeted(t, plain.addr)
		c.startTLS(clientTLS)
		return c
	}}
	pop3s := listener{"995", implicit, func() *client {
		c := dialTLS(t, implicit.addr, clientTLS)
		c.expect("+OK pop.test POP3 server ready")
		return c
	}}
	for _, tt := range []struct{ first, second listener }{
		{pop3s, pop3s}, {pop3s, pop3}, {pop3, pop3s}, {pop3, pop3},
	} {
		t.Run(tt.first.name+" then "+tt.second.name, func(t *testing.T) {
			first := tt.first.open()
			first.login(bob, bobPW)

			second := tt.second.open()
			second.cmd("USER "+bob, "+OK")
			second.cmd("PASS "+bobPW, "-ERR [IN-USE] maildrop is in use by another session")
			second.cmd("AUTH PLAIN AGJvYkBleGFtcGxlLm9yZwBib2IgaGFzIHNwYWNlcw==", "-ERR [IN-USE]")
			second.cmd("DELE 1", "-ERR not logged in")

			first.cmd("QUIT", "+OK")
			first.expectEOF()
			tt.first.h.waitEnded(t, 1)
			second.login(bob, bobPW)
			second.cmd("QUIT", "+OK")
			second.expectEOF()
			tt.second.h.waitEnded(t, 1)
		})
	}
}

func TestMaildropLocks(t *testing.T) {
	var l MaildropLocks
	unlock, ok := l.TryLock(alice)
	if !ok {
		t.Fatal("first TryLock refused")
	}
	if _, ok := l.TryLock("Alice@Example.ORG"); ok {
		t.Fatal("TryLock of the same address in other case granted")
	}
	unlockBob, ok := l.TryLock(bob)
	if !ok {
		t.Fatal("another address refused")
	}
	unlock()
	again, ok := l.TryLock(alice)
	if !ok {
		t.Fatal("TryLock refused after unlock")
	}
	unlock() // a second call must not release the new holder's lock
	if _, ok := l.TryLock(alice); ok {
		t.Fatal("a repeated unlock released someone else's lock")
	}
	again()
	unlockBob()
}
