package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Maildrop is what the server needs from storage; cmd/minimail adapts the
// store to it.
type Maildrop interface {
	// Authenticate checks a login, the three strings as the client sent
	// them, and returns the canonical address. authz is the SASL PLAIN
	// authorization identity, "" when the client gave none and for
	// USER/PASS; which ones a login may give is the Maildrop's rule (in
	// minimail the store's: empty or the login itself, never another user,
	// RFC 4616 section 2). Wrong credentials, an unknown user included,
	// give an error wrapping ErrAuthFailed, a refused authz one wrapping
	// ErrNotAuthorized; any other error is taken as temporary.
	Authenticate(authz, user, password string) (addr string, err error)
	// List returns the maildrop's messages in arrival order, without
	// bodies.
	List(addr string) ([]MessageInfo, error)
	// Read returns one message with CRLF line endings; its length is the
	// Size List reported. A message (or maildrop) gone meanwhile gives an
	// error wrapping ErrNoMessage.
	Read(addr string, id uint64) ([]byte, error)
	// Delete removes the ids in one transaction: all or none.
	Delete(addr string, ids []uint64) error
}

// MessageInfo is one message as Maildrop.List reports it.
type MessageInfo struct {
	// ID names the message to Read and Delete.
	ID uint64
	// UIDL is the message's unique-id (RFC 1939 section 7): 1 to 70
	// characters 0x21-0x7E that never change and never name another
	// message of the maildrop, also after a restart or a restored backup.
	UIDL string
	// Size is the length in octets of what Read returns, before
	// dot-stuffing (RFC 1939 section 11).
	Size int64
}

var (
	// ErrAuthFailed is a Maildrop's answer to credentials that do not log
	// in: the client gets -ERR [AUTH] (RFC 3206 section 4) and the failure
	// is counted.
	ErrAuthFailed = errors.New("invalid user name or password")
	// ErrNotAuthorized is a Maildrop's answer to a login that asks to act
	// as another user. The client gets -ERR [AUTH]; nothing was checked, so
	// nothing is counted.
	ErrNotAuthorized = errors.New("authorization identity must be empty or the user name")
	// ErrNoMessage is a Maildrop's answer to reading a message that is no
	// longer there.
	ErrNoMessage = errors.New("no such message")
)

// ConnLimiter bounds concurrent connections; *guard.ConnLimiter satisfies
// it. Acquire returns false when the connection from addr is over a limit;
// otherwise release is called once when the connection ends.
type ConnLimiter interface {
	Acquire(addr net.Addr) (release func(), ok bool)
}

// Throttle counts failed logins; *guard.AuthThrottle satisfies it.
type Throttle interface {
	// Blocked reports whether logins from ip are refused for now.
	Blocked(ip netip.Addr) bool
	// Fail records a failed login from ip.
	Fail(ip netip.Addr)
	// FailureDelay records a failure for the login name user (as
	// Options.LoginName spells it, "" for a name no user can have) and
	// returns how long to wait before answering it, base or more.
	FailureDelay(user string, base time.Duration) time.Duration
	// Pause waits d, or less if cancel is closed first.
	Pause(d time.Duration, cancel <-chan struct{})
}

// Options configure a Server. The zero value works, with no TLS.
type Options struct {
	// Hostname is named in the greeting and the sign-off.
	Hostname string
	// TLSConfig enables STLS; nil means no STLS. For POP3S the caller wraps
	// the listener with tls.NewListener: a *tls.Conn counts as TLS active.
	TLSConfig *tls.Config
	// AllowInsecureAuth permits USER/PASS and AUTH without TLS.
	AllowInsecureAuth bool
	// IdleTimeout is the autologout timer (RFC 1939 section 3): a command
	// line must have come in full within this time of the previous reply.
	// 0 means 10 minutes, the minimum the RFC allows.
	IdleTimeout time.Duration
	// CommandTimeout bounds a command line from its first byte to its end,
	// and a TLS handshake (POP3S, STLS): a client that trickles bytes and
	// never ends the line is cut off then, and the partial line is never
	// run. 0 means IdleTimeout.
	CommandTimeout time.Duration
	// LoginTimeout is how long a session may stay in AUTHORIZATION,
	// counted from connect: time enough to STLS and log in, not to hold a
	// connection slot without credentials. 0 means DefaultLoginTimeout.
	LoginTimeout time.Duration
	// MaxLineLength bounds a command line without its CRLF; 0 means 512.
	// RFC 2449 section 4 allows 255 octets: we accept more, but not without
	// bound.
	MaxLineLength int
	// Limiter bounds concurrent sessions; nil means unlimited.
	Limiter ConnLimiter
	// Locks holds the maildrop locks; give every Server over the same
	// Maildrop the same one (the POP3 and the POP3S listener), or a maildrop
	// opened through one can be opened again through the other. Nil means a
	// private MaildropLocks, which keeps out sessions of this Server only.
	Locks Locker
	// AuthThrottle counts failed logins; share it with SMTP AUTH. Nil
	// means none: no address is refused, and every wrong password waits
	// AuthFailDelay.
	AuthThrottle Throttle
	// AuthFailDelay is waited before answering a wrong password (the base
	// of AuthThrottle.FailureDelay); 0 means 1 second, negative means no
	// delay.
	AuthFailDelay time.Duration
	// LoginName returns the spelling under which a login name is counted
	// by AuthThrottle and logged, or an error for a name no user can have
	// (those all count as ""). Nil takes names as sent. cmd/minimail gives
	// store.LoginName, the store's own rule.
	LoginName func(user string) (string, error)
	// Logger gets one line per session; nil discards.
	Logger *slog.Logger
	// Metrics gets what the server counts; nil counts nothing.
	Metrics Metrics
}

// Metrics is what a Server reports for monitoring. The methods must not
// block.
type Metrics interface {
	// Session is one session begun: a connection within the limits,
	// greeted.
	Session()
}

// DefaultLoginTimeout is Options.LoginTimeout's default: a mail client
// connects, starts TLS and logs in within seconds; a minute and a half
// leaves room for a slow link and a few failed-login delays, and frees the
// slot of a client that has no credentials long before the 10-minute
// autologout would.
const DefaultLoginTimeout = 90 * time.Second

// maxBadCommands is how many -ERR replies a session may collect before it
// is dropped: a real client needs a handful at most, a scanner many.
const maxBadCommands = 20

// Server is a POP3 server over a Maildrop. It is safe for concurrent use;
// one Server may Serve several listeners (POP3 and POP3S) at once.
type Server struct {
	md       Maildrop
	opts     Options
	log      *slog.Logger
	throttle Throttle
	limiter  ConnLimiter
	locks    Locker

	// closing is closed when Shutdown starts.
	closing chan struct{}

	mu       sync.Mutex
	shutdown bool
	// listeners are those Serve is accepting on; Shutdown closes them
	// itself, so that none is accepted once it has returned from that.
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	active    sync.WaitGroup // connection goroutines

	// afterSession, when set (by tests), runs after a session has ended and
	// released its lock.
	afterSession func()
}

// NewServer returns a Server over md.
func NewServer(md Maildrop, opts Options) *Server {
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = opts.IdleTimeout
	}
	if opts.LoginTimeout <= 0 {
		opts.LoginTimeout = DefaultLoginTimeout
	}
	if opts.MaxLineLength <= 0 {
		opts.MaxLineLength = 512
	}
	if opts.AuthFailDelay == 0 {
		opts.AuthFailDelay = time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var throttle Throttle = noThrottle{}
	if opts.AuthThrottle != nil {
		throttle = opts.AuthThrottle
	}
	var limiter ConnLimiter = noLimit{}
	if opts.Limiter != nil {
		limiter = opts.Limiter
	}
	if opts.LoginName == nil {
		opts.LoginName = func(user string) (string, error) { return user, nil }
	}
	locks := opts.Locks
	if locks == nil {
		locks = &MaildropLocks{}
	}
	s := &Server{
		md:        md,
		opts:      opts,
		log:       logger,
		throttle:  throttle,
		limiter:   limiter,
		locks:     locks,
		closing:   make(chan struct{}),
		sessions:  map[*session]struct{}{},
		listeners: map[net.Listener]struct{}{},
	}
	return s
}

// Serve accepts connections on l until Shutdown, then returns nil; any
// other accept error ends it and is returned. The caller wraps l to ride
// out temporary accept failures (cmd/minimail uses a guard.Listener).
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	for {
		conn, err := l.Accept()
		if err != nil {
			if s.isShutdown() {
				return nil
			}
			return fmt.Errorf("pop3: accept on %s: %w", l.Addr(), err)
		}
		if !s.track() {
			conn.Close()
			return nil
		}
		go s.handle(conn)
	}
}

func (s *Server) isShutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// track counts a new connection goroutine, unless shutdown has begun.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.active.Add(1)
	return true
}

// Shutdown stops accepting, waits for sessions to end until ctx is done, then
// closes the rest. A session cut off this way deletes nothing (RFC 1939
// section 6: only QUIT enters the UPDATE state).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.shutdown {
		s.shutdown = true
		close(s.closing)
	}
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.active.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for sess := range s.sessions {
		sess.cutOff()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// handle runs one connection from accept to close.
func (s *Server) handle(conn net.Conn) {
	defer s.active.Done()
	defer conn.Close()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("pop3 session panic", "client", clientIP(conn).String(), "panic", p)
		}
	}()

	release, ok := s.limiter.Acquire(conn.RemoteAddr())
	if !ok {
		// RFC 2449 section 8.1.2: [SYS/TEMP] tells the client to retry later.
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "-ERR [SYS/TEMP] too many connections\r\n")
		s.log.Info("pop3 rejected", "client", clientIP(conn).String(), "reason", "too many connections")
		return
	}
	defer release() // also on panic; release is idempotent

	sess := newSession(s, conn)
	if s.opts.Metrics != nil {
		s.opts.Metrics.Session()
	}
	s.mu.Lock()
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()

	sess.run()

	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	conn.Close()
	release()
	if s.afterSession != nil {
		s.afterSession()
	}
}

// clientIP is the client's address, logged as client and counted by the
// throttle; the zero Addr for a connection that is not over IP.
func clientIP(conn net.Conn) netip.Addr {
	ap, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// noLimit is the ConnLimiter of a Server given none.
type noLimit struct{}

func (noLimit) Acquire(net.Addr) (func(), bool) { return func() {}, true }

// noThrottle is the Throttle of a Server given none: nobody is refused and
// every failure waits the base delay.
type noThrottle struct{}

func (noThrottle) Blocked(netip.Addr) bool { return false }
func (noThrottle) Fail(netip.Addr)         {}

func (noThrottle) FailureDelay(_ string, base time.Duration) time.Duration { return base }

func (noThrottle) Pause(d time.Duration, cancel <-chan struct{}) {
	select {
	case <-time.After(d):
	case <-cancel:
	}
}
