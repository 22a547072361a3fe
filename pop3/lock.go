package pop3

import (
	"strings"
	"sync"
)

// Locker grants exclusive access to a maildrop (RFC 1939 section 8: the
// server acquires an exclusive-access lock on the maildrop when it enters
// TRANSACTION). A maildrop is one whatever the listener a client came in
// through, so one Locker must serve every Server over the same mailboxes:
// POP3 and POP3S, and any other code that must keep sessions out of a
// mailbox while it works on it.
type Locker interface {
	// TryLock takes the lock for addr (case-insensitive) without waiting,
	// or reports false if it is held. Calling unlock more than once is
	// harmless.
	TryLock(addr string) (unlock func(), ok bool)
}

// MaildropLocks is an in-memory Locker; the zero value is ready to use.
// The locks live only in memory, so they go with their holders and with
// the process: no lock can go stale.
type MaildropLocks struct {
	mu   sync.Mutex
	held map[string]struct{} // by lower-cased address
}

// TryLock implements Locker.
func (l *MaildropLocks) TryLock(addr string) (unlock func(), ok bool) {
	key := strings.ToLower(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, held := l.held[key]; held {
		return nil, false
	}
	if l.held == nil {
		l.held = map[string]struct{}{}
	}
	l.held[key] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.held, key)
			l.mu.Unlock()
		})
	}, true
}
