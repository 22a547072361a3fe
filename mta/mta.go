// Package mta is minimail's SMTP server: the MX listener that takes mail for
// the local domains from other servers (port 25, RFC 5321), and the
// submission listeners where authenticated users hand in mail for anyone
// (587 with STARTTLS and 465 with implicit TLS; RFC 6409, RFC 8314).
//
// The protocol engine is github.com/emersion/go-smtp; this package supplies
// the policy around it and its promise: a 250 after DATA means every copy of
// the message is on disk, in a local mailbox (through Local, one store commit
// for all local recipients) or in the outbound queue (through Queue).
// Anything short of that is a 4xx, never a permanent 5xx, so a failed disk
// write is retried by the sender instead of bounced.
//
// Flow of one message:
//
//	MX:         RCPT  -> Local.Resolve (550 5.1.1 unknown, 550 5.7.1 not ours)
//	            DATA  -> CRLF normalised -> Verify (SPF/DKIM/DMARC)
//	                  -> Received prepended -> Local.Deliver (with the
//	                     queue entry for aliases' remote targets, one commit)
//	Submission: AUTH PLAIN/LOGIN (after TLS) -> MAIL must be the user's address
//	            DATA  -> CRLF normalised -> From:/Sender: checked,
//	                     Date/Message-ID added -> Sign -> Received prepended
//	                  -> Local.Deliver for local recipients, then Queue.Enqueue
//	                     (with RFC 3461 DSN parameters: local recipients
//	                     asking NOTIFY=SUCCESS are queued too, see dsn.go)
//
// Local recipients are stored before anything is queued: when local delivery
// fails temporarily the client gets 451 and nothing has been queued, so its
// retry cannot send the remote copies twice. The opposite failure (local copies
// stored, queue write fails) also gets 451; the retry then duplicates the local
// copies, which RFC 5321 6.1 prefers to losing the remote ones.
//
// Against clients that only want to tie the server up, every resource has a
// bound: connections per IP and in total (421), rejected commands per
// connection (MaxErrors), each wait for the client (CommandTimeout,
// DataTimeout; RFC 5321 4.5.3.2), a whole message transfer (MinDataRate), a
// connection's life outside one (MaxSessionTime), and the message data held
// in memory by all sessions together (MaxBufferedBytes, 452). Every such cut
// is a 4xx, so a real sender that merely was slow or unlucky retries.
package mta

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"minimail/mta/delivery"
	"minimail/mta/guard"
	"minimail/mta/mailaddr"
)

// Local delivers to local mailboxes; *mda.Agent satisfies it. An error,
// from Resolve or for one recipient of Deliver, that says it is permanent
// (a Temporary() bool method returning false) means there is no such
// mailbox: 550 5.1.1. Any other error is a 451, the rule of
// minimail/mta/delivery. An error may also name its RFC 3463 status (a
// Status() string method): "4.2.2" from Resolve is a mailbox at its quota,
// 452 4.2.2 at RCPT; "5.2.2" from Deliver one the message would take past
// it, 552 5.2.2 after DATA when no copy could be stored. When other copies
// were, the reply is 250 and the refused recipients go to the queue
// (Options.Overflow), whose delivery fails them again and bounces them.
type Local interface {
	Resolve(rcpt string) (string, error)
	Deliver(from string, rcpts []string, msg []byte) []error
}

// Forwarder is a Local that says whether a recipient forwards to a remote
// address (*mda.Agent). Submission then DKIM-signs the message as it does
// for remote recipients: it leaves with the user's From. The MX never
// signs: a forwarded copy keeps the signature it came with.
type Forwarder interface {
	Forwards(rcpt string) bool
}

// Queue is the durable outbound queue. Enqueue keeps the message under the
// id its 250 reply gives (the transaction's) and returns only once the
// message is on disk.
type Queue interface {
	Enqueue(id, from string, rcpts []string, msg []byte) (string, error)
}

// DSNQueue is a Queue that keeps a message's RFC 3461 parameters with it
// and acts on them (*queue.Queue does). Submission offers DSN only when its
// queue is one: a request it could not honour must not be accepted.
type DSNQueue interface {
	EnqueueDSN(id, from string, rcpts []string, msg []byte, p delivery.DSN) (string, error)
}

// Users checks login credentials. authz is the SASL authorization identity
// ("" for none, and for LOGIN), passed on as the client sent it with the
// login and the password: the rule for it is the Users' (empty or the
// login itself). A wrong user or password is ErrAuthFailed, a refused
// authz ErrNotAuthorized; any other error is temporary.
type Users interface {
	Authenticate(authz, user, password string) (addr string, err error)
}

// Senders says whom an authenticated user may send as on submission (MAIL
// FROM, From: and Sender:) besides its own address: *mda.Agent's
// MaySendAs allows the aliases that deliver to the user and its own
// address with an extension. It is asked only about addresses that are not
// the user's own.
type Senders interface {
	MaySendAs(user, addr string) bool
}

// The errors Users speaks.
var (
	ErrAuthFailed    = errors.New("wrong user name or password")
	ErrNotAuthorized = errors.New("authorization identity is not the login name")
)

// Defaults for zero Options fields.
const (
	DefaultMaxMessageBytes = 25 << 20
	DefaultMaxRecipients   = 100
	// DefaultMaxLineLength bounds every line go-smtp reads, commands and
	// message text alike (it has one limit for both). RFC 5322 2.1.1 allows
	// 998 octets, but real senders emit unwrapped HTML lines far longer than
	// go-smtp's 2000; refusing those bounces legitimate mail. Message text is
	// streamed, not buffered per line, and command lines that matter are
	// checked against 512 octets separately, so a generous bound costs only
	// a transient buffer for an abusive command line.
	DefaultMaxLineLength = 64 << 10
	// DefaultCommandTimeout is RFC 5321 4.5.3.2.7's server timeout: how long
	// the server waits for the next command (and for a reply to be taken).
	DefaultCommandTimeout = 5 * time.Minute
	// DefaultDataTimeout is RFC 5321 4.5.3.2.6's data block timeout: the
	// longest wait for more message text during DATA.
	DefaultDataTimeout = 3 * time.Minute
	// DefaultMinDataRate is Postfix's smtpd_min_data_rate: a 25 MB message
	// may take 14 hours, a client trickling bytes is cut after minutes.
	DefaultMinDataRate = 500
	// DefaultMaxSessionTime lets a sender reuse a connection far longer
	// than any MTA does (Postfix's client stops after 300 s) while freeing
	// the slots of clients that only keep connections open.
	DefaultMaxSessionTime      = 30 * time.Minute
	DefaultMaxConnections      = 500
	DefaultMaxConnectionsPerIP = 20
	// DefaultMaxErrors is like Postfix's smtpd_hard_error_limit.
	DefaultMaxErrors     = 20
	DefaultAuthFailDelay = 2 * time.Second
)

// Options configure a Server. Zero values take the defaults above.
type Options struct {
	Hostname string   // greeting, Received "by", Message-ID right side
	Domains  []string // local domains: mail for them is delivered here

	// Overflow takes the local recipients whose mailbox had no room for a
	// message that others received (see Local): after the one 250 the
	// sender must still learn of them, so the queue delivers them again
	// and bounces what fails. A submission server without it uses its own
	// queue; with neither, they are logged ("over_quota") and dropped.
	Overflow Queue

	// TLSConfig enables STARTTLS; nil means no STARTTLS. The server uses a
	// copy with TLS 1.2 minimum and session tickets off (see ServerTLSConfig).
	TLSConfig *tls.Config
	// AllowInsecureAuth offers AUTH without TLS; for local testing only.
	AllowInsecureAuth bool

	MaxMessageBytes int64
	MaxRecipients   int
	MaxLineLength   int
	// MaxHeaderBytes bounds a message's header section (552 5.3.4 beyond
	// it); 0 = DefaultMaxHeaderBytes.
	MaxHeaderBytes int

	CommandTimeout time.Duration
	DataTimeout    time.Duration
	// MinDataRate is the slowest average rate, in bytes per second, at
	// which a message may arrive: the whole DATA or BDAT transfer must be
	// over within DataTimeout plus its size divided by this rate (Postfix's
	// smtpd_min_data_rate). DataTimeout alone bounds each wait, so a
	// client sending a little every few minutes would hold its connection
	// for ever. Negative = no floor.
	MinDataRate int
	// MaxSessionTime bounds a connection's life outside message transfer:
	// once it is this old, its next command gets 421 and it is closed. A
	// message being received is never cut by it. Negative = unlimited.
	MaxSessionTime time.Duration

	MaxConnections      int // per Server, total; negative = unlimited
	MaxConnectionsPerIP int // negative = unlimited
	// MaxErrors is how many rejected commands a connection may collect
	// before it is dropped with 421; negative = unlimited.
	MaxErrors int
	// Expect, when set, is called as a mail transaction opens (MAIL
	// accepted), and the func it returns as the transaction ends. The
	// store (store.Expect) waits a moment for messages on their way
	// before an fsync, so that concurrent deliveries share it.
	Expect func() (done func())
	// MaxBufferedBytes bounds the message data all sessions of the Server
	// hold in memory at once (messages are buffered whole, up to
	// MaxMessageBytes each). A transfer that would go over it gets 452
	// 4.3.1 and is retried by its sender, so 500 clients sending 25 MB
	// each cannot exhaust memory. 0 means 8 × MaxMessageBytes; negative
	// means unlimited.
	MaxBufferedBytes int64
	// FreeSpace reports how much more the store can take (store.FreeSpace);
	// nil: not looked at. A transaction opens only while it reports at
	// least MinFreeBytes, 0 meaning 1.5 × MaxMessageBytes (Postfix's
	// rule): below it MAIL gets 452 4.3.1 and the sender tries again later,
	// rather than sending a message that could not be stored. A failure to
	// tell refuses nothing.
	FreeSpace    func() (int64, error)
	MinFreeBytes int64
	// BigTransfers bounds how many big messages are received at once (see
	// TransferGate); nil gives the server a private gate of four places a
	// core. cmd shares one among a process's Servers.
	BigTransfers *TransferGate

	// AuthThrottle refuses logins from an IP or subnet with too many recent
	// failures; nil gives the server a private one with guard's defaults.
	AuthThrottle *guard.AuthThrottle
	// AuthFailDelay is waited before answering a wrong password; negative
	// means no delay.
	AuthFailDelay time.Duration
	// LoginName spells a login name the way Users looks it up, so that the
	// per-user slowdown counts " Bob@X" and "bob@x" as one user; an error
	// means no user can have the name (they all share one count). nil
	// lower-cases.
	LoginName func(string) (string, error)

	// Senders widens the addresses a submission user may send as; nil
	// means its own address only.
	Senders Senders

	// Sign DKIM-signs mail relayed for a local sender (submission only; the
	// domain is the sender's): it returns the DKIM-Signature field to put in
	// front of msg, CRLF-only, and keeps nothing of msg. nil = no signing.
	Sign func(domain string, msg []byte) (field []byte, err error)
	// Verify checks inbound mail on the MX (SPF, DKIM, DMARC) and decides
	// what becomes of it (see Verdict); an accepted message usually gets an
	// Authentication-Results field (Verdict.Prepend). It is given CRLF-only
	// text, must return CRLF-only text and keeps nothing of msg once it
	// returns. An error says the checks could not run at all: 451 4.3.0.
	// nil = no checks.
	Verify func(ctx context.Context, ip net.IP, helo, mailFrom string, msg []byte) (Verdict, error)

	// Metrics gets what the server counts (messages received, copies
	// delivered, refusals by reason); nil counts nothing.
	Metrics Metrics
	// Antispam, MX only (see antispam.go); nil or zero: off, except
	// GreetDelay.
	//
	// SenderSPF returns the SPF result ("pass", "fail", ...) for a
	// client using mailFrom: a local domain's sender on the MX needs
	// "pass", and so does a From: in a local domain (or a DKIM pass for
	// it, Verdict.Authenticated). nil turns the rule off.
	SenderSPF func(ctx context.Context, ip net.IP, helo, mailFrom string) string
	// Blocklist refuses listed clients at RCPT (554 5.7.1), postmaster
	// excepted.
	Blocklist Blocklist
	// Greylist defers unknown triplets after DATA (451 4.7.1).
	Greylist Greylister
	// Scan is the spam filter (rspamd), run on accepted messages before
	// the 250: its Verdict's Message (if set) replaces the message, also
	// when it fails, and Prepend goes in front; RejectSpam and DeferSpam
	// refuse. An error delivers the message unscanned, with a warning.
	Scan func(ctx context.Context, env Envelope, msg []byte) (Verdict, error)
	// GreetDelay is the wait before the 220 greeting in which a client
	// that speaks is refused (554 5.5.1); 0 = DefaultGreetDelay,
	// negative = no wait.
	GreetDelay time.Duration

	Now    func() time.Time
	Logger *slog.Logger // nil discards
}

func (o *Options) setDefaults() {
	if o.Hostname == "" {
		o.Hostname = "localhost"
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = DefaultMaxRecipients
	}
	if o.MaxLineLength <= 0 {
		o.MaxLineLength = DefaultMaxLineLength
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = DefaultCommandTimeout
	}
	if o.DataTimeout <= 0 {
		o.DataTimeout = DefaultDataTimeout
	}
	o.MaxBufferedBytes = orDefault(o.MaxBufferedBytes, 8*o.MaxMessageBytes)
	o.MinFreeBytes = orDefault(o.MinFreeBytes, o.MaxMessageBytes/2*3)
	o.MinDataRate = orDefault(o.MinDataRate, DefaultMinDataRate)
	o.MaxSessionTime = orDefault(o.MaxSessionTime, DefaultMaxSessionTime)
	o.MaxConnections = orDefault(o.MaxConnections, DefaultMaxConnections)
	o.MaxConnectionsPerIP = orDefault(o.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	o.MaxErrors = orDefault(o.MaxErrors, DefaultMaxErrors)
	o.AuthFailDelay = orDefault(o.AuthFailDelay, DefaultAuthFailDelay)
	o.GreetDelay = orDefault(o.GreetDelay, DefaultGreetDelay)
	if o.AuthThrottle == nil {
		o.AuthThrottle = &guard.AuthThrottle{}
	}
	if o.BigTransfers == nil {
		o.BigTransfers = NewTransferGate(0)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LoginName == nil {
		o.LoginName = func(s string) (string, error) { return strings.ToLower(s), nil }
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// orDefault maps 0 (unset) to def and a negative value to 0, which the
// limits read as "unlimited" (guard's too) and the delays as "none".
func orDefault[T int | int64 | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// ServerTLSConfig returns a copy of c fit for a mail server: TLS 1.2 or
// newer (RFC 8314 4.1), and no session tickets, because Outlook.com and
// other Microsoft senders fail STARTTLS against Go servers that issue them.
// Use it for the tls.NewListener of an implicit-TLS listener too.
func ServerTLSConfig(c *tls.Config) *tls.Config {
	c = c.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	c.SessionTicketsDisabled = true
	return c
}

type kind int

const (
	kindMX kind = iota
	kindSubmission
)

func (k kind) String() string {
	if k == kindSubmission {
		return "submission"
	}
	return "mx"
}

// Server is one SMTP service (MX or submission) over any number of
// listeners.
type Server struct {
	kind    kind
	opts    Options
	local   Local
	queue   Queue
	users   Users
	domains map[string]bool
	bufs    bufPool // message buffers, see msgbuf.go
	limiter *guard.ConnLimiter
	log     *slog.Logger
	// greetPassed: the MX's clients that waited for the greeting
	// (earlyTalker); nil on submission.
	greetPassed *guard.Passed

	// Two go-smtp servers: one for plain connections, which may offer
	// STARTTLS, and one for connections that arrived over implicit TLS,
	// which must not. Both take connections from Serve through channels,
	// so every connection is wrapped in a trackedConn first.
	plain, implicit   *smtp.Server
	plainL, implicitL *chanListener
	starttls          *tls.Config // nil: no STARTTLS
	shims             *replyShims

	ctx    context.Context // cancelled when Shutdown gives up waiting
	cancel context.CancelFunc

	draining atomic.Bool  // set once by Shutdown; read without mu
	buffered atomic.Int64 // message bytes held by Data handlers
	// spaceUnknown is set once FreeSpace failed and that was logged.
	spaceUnknown atomic.Bool

	mu      sync.Mutex
	started bool
	// listeners are those Serve is accepting on. Shutdown closes them
	// itself, before it tells idle connections, so that none is accepted
	// once it has begun.
	listeners map[net.Listener]struct{}
	conns     map[*trackedConn]struct{}
	inData    int           // Data handlers running
	dataDone  chan struct{} // closed when inData drops to 0, if waited for
	// The commit gate: once Shutdown has given up waiting, no message is
	// stored any more, since its client was cut off without a 250 and will
	// send it again. Commits under way are waited for.
	commitsClosed bool
	committing    int
	commitsDone   chan struct{}
	engines       sync.WaitGroup
}

// NewMX returns the server for port 25: local recipients only, no AUTH,
// never relays; the null sender is accepted so bounces arrive.
func NewMX(local Local, opts Options) *Server {
	return newServer(kindMX, local, nil, nil, opts)
}

// NewSubmission returns the server for ports 587 and 465 (RFC 6409): AUTH
// is required before MAIL, the sender must be the authenticated user, and
// mail for other domains is relayed through queue.
func NewSubmission(local Local, queue Queue, users Users, opts Options) *Server {
	return newServer(kindSubmission, local, queue, users, opts)
}

func newServer(k kind, local Local, queue Queue, users Users, opts Options) *Server {
	opts.setDefaults()
	s := &Server{
		kind:    k,
		opts:    opts,
		local:   local,
		queue:   queue,
		users:   users,
		domains: map[string]bool{},
		limiter: &guard.ConnLimiter{Max: opts.MaxConnections, MaxPerIP: opts.MaxConnectionsPerIP},
		log:     opts.Logger.With("server", k.String()),
		conns:   map[*trackedConn]struct{}{},
	}
	if k == kindMX {
		s.greetPassed = &guard.Passed{Now: opts.Now}
	}
	for _, d := range opts.Domains {
		s.domains[mailaddr.NormalDomain(d)] = true
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.listeners = map[net.Listener]struct{}{}
	if opts.TLSConfig != nil {
		s.starttls = ServerTLSConfig(opts.TLSConfig)
	}
	s.shims = newReplyShims(opts.MaxMessageBytes, opts.Hostname)
	// go-smtp needs a TLS config to offer STARTTLS; the handshake itself is
	// the engineConn's (see shims.go).
	s.plain, s.plainL = s.engine(s.starttls), newChanListener()
	s.implicit, s.implicitL = s.engine(nil), newChanListener()
	return s
}

// engine configures one go-smtp server. Every limit go-smtp leaves
// unlimited by default is set here.
func (s *Server) engine(tlsConfig *tls.Config) *smtp.Server {
	e := smtp.NewServer(smtp.BackendFunc(s.newSession))
	e.Domain = s.opts.Hostname
	e.TLSConfig = tlsConfig
	// TLS is required for AUTH unless AllowInsecureAuth, but the session
	// enforces that itself: go-smtp cannot see implicit TLS under our
	// connection wrapper.
	e.AllowInsecureAuth = true
	// go-smtp's DATA reader refuses to read on once it has counted
	// MaxMessageBytes, even when all that follows is the terminating dot, so
	// a message of exactly the limit got 552 by DATA and 250 by BDAT. The
	// engine gets one byte of room and the session enforces the limit
	// itself, for SIZE=, DATA and BDAT alike (RFC 1870: a message of the
	// maximum size is accepted). The cost: EHLO advertises SIZE limit+1.
	e.MaxMessageBytes = s.opts.MaxMessageBytes + 1
	e.MaxRecipients = s.opts.MaxRecipients
	e.MaxLineLength = s.opts.MaxLineLength
	// ReadTimeout is renewed before every command line; during DATA the
	// session renews the deadline itself with DataTimeout.
	e.ReadTimeout = s.opts.CommandTimeout
	e.WriteTimeout = s.opts.CommandTimeout
	e.EnableSMTPUTF8 = true
	// RFC 3461 on submission only: DSN on port 25 would let anyone make
	// this server send notices to forged senders (backscatter).
	e.EnableDSN = s.dsnQueue() != nil
	e.ErrorLog = errorLog{s.log}
	return e
}

// Serve accepts connections on l until Shutdown, then returns nil; any
// other accept error ends it (wrap l in a guard.Listener to ride out
// temporary ones). For implicit TLS (port 465) wrap l with tls.NewListener
// (using ServerTLSConfig); a *tls.Conn counts as TLS active.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	if !s.started {
		s.started = true
		s.engines.Add(2)
		go func() { defer s.engines.Done(); s.plain.Serve(s.plainL) }()
		go func() { defer s.engines.Done(); s.implicit.Serve(s.implicitL) }()
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	for {
		c, err := l.Accept()
		if err != nil {
			if s.isDraining() {
				return nil
			}
			return fmt.Errorf("mta: accept on %s: %w", l.Addr(), err)
		}
		go s.handoff(c)
	}
}

// handoff applies the connection limits, finishes an implicit TLS handshake
// and passes the connection to the matching go-smtp engine.
func (s *Server) handoff(c net.Conn) {
	release, ok := s.limiter.Acquire(c.RemoteAddr())
	tc := &trackedConn{conn: c, srv: s, release: release, start: time.Now()}
	if t, isTLS := c.(*tls.Conn); isTLS {
		// A client over the limit holds no slot, so it must not hold a
		// goroutine and a descriptor for a whole CommandTimeout either:
		// it gets its 421 only if it completes the handshake promptly.
		d := s.opts.CommandTimeout
		if !ok {
			d = min(d/10, 10*time.Second)
		}
		t.SetDeadline(time.Now().Add(d))
		if err := t.HandshakeContext(s.ctx); err != nil {
			s.log.Debug("tls handshake failed", "client", s.clientIP(c), "err", err)
			tc.Close()
			return
		}
		t.SetDeadline(time.Time{})
		tc.tls, tc.implicitTLS = t, true
	}
	if !ok {
		s.rejected(slog.LevelWarn, ReasonTooManyConns, slog.String("client", s.clientIP(c)))
		tc.reply(421, "4.7.0", s.opts.Hostname+" too many connections, try again later")
		tc.Close()
		return
	}
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		tc.reply(421, "4.3.2", s.opts.Hostname+" shutting down")
		tc.Close()
		return
	}
	s.conns[tc] = struct{}{}
	s.mu.Unlock()
	tc.blocklist = s.startBlockCheck(guard.IP(c.RemoteAddr()))
	if s.earlyTalker(tc) {
		return
	}
	s.toEngine(tc, false)
}

// toEngine gives go-smtp a new view of tc: the engine for TLS connections
// once TLS is up (implicit, or after STARTTLS, when the client speaks
// first and the greeting is not sent again), the plain one otherwise.
func (s *Server) toEngine(tc *trackedConn, afterSTARTTLS bool) {
	v := &engineConn{tc: tc}
	v.skipGreeting.Store(afterSTARTTLS)
	target := s.plainL
	tc.mu.Lock()
	tc.view = v
	if tc.tls != nil {
		target = s.implicitL
	}
	tc.mu.Unlock()
	select {
	case target.ch <- v:
	case <-target.done:
		tc.Close()
	}
}

func (s *Server) clientIP(c net.Conn) string { return guard.IP(c.RemoteAddr()).String() }

func (s *Server) isDraining() bool { return s.draining.Load() }

// Shutdown stops accepting and closes idle connections (with 421). A
// transaction in progress may finish, and its connection is closed after
// the reply, until ctx is done; then every connection is closed. Shutdown
// returns once no message is being stored, with ctx.Err() if it had to cut
// connections short.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.mu.Lock()
	// Serve registers a listener under mu unless draining is set, so every
	// listener is closed here or by Serve itself.
	for l := range s.listeners {
		l.Close()
	}
	for tc := range s.conns {
		tc.poke()
	}
	s.mu.Unlock()
	s.plainL.Close()
	s.implicitL.Close()
	// go-smtp's Serve adds each connection it accepts to the WaitGroup its
	// Shutdown waits on: the Serve loops must have seen their listener
	// closed and returned before that Wait starts, or a last Add races it.
	s.engines.Wait()

	errc := make(chan error, 2)
	for _, e := range []*smtp.Server{s.plain, s.implicit} {
		go func() {
			err := e.Shutdown(ctx)
			if errors.Is(err, smtp.ErrServerClosed) { // a second Shutdown
				err = nil
			}
			errc <- err
		}()
	}
	err := errors.Join(<-errc, <-errc)
	if ctx.Err() != nil {
		// go-smtp's Close is a no-op after Shutdown: close what is left here.
		s.cancel()
		s.mu.Lock()
		for tc := range s.conns {
			tc.transport().Close()
		}
		s.mu.Unlock()
		err = ctx.Err()
	}
	s.waitData(ctx)
	s.closeCommits()
	s.cancel()
	return err
}

// enterData and leaveData bracket a Data handler, so that Shutdown never
// returns (and the caller never closes the store) while a message is being
// written.
func (s *Server) enterData() {
	s.mu.Lock()
	s.inData++
	s.mu.Unlock()
}

func (s *Server) leaveData() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inData--; s.inData == 0 && s.dataDone != nil {
		close(s.dataDone)
		s.dataDone = nil
	}
}

// waitData waits for the Data handlers to return, or for ctx: a handler
// may be stuck in CPU-bound work (a DKIM check) far beyond any deadline.
func (s *Server) waitData(ctx context.Context) {
	s.mu.Lock()
	if s.inData == 0 {
		s.mu.Unlock()
		return
	}
	if s.dataDone == nil {
		s.dataDone = make(chan struct{})
	}
	done := s.dataDone
	s.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// beginCommit lets a Data handler store its message, unless Shutdown has
// closed the gate; endCommit follows every true beginCommit.
func (s *Server) beginCommit() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.commitsClosed {
		return false
	}
	s.committing++
	return true
}

func (s *Server) endCommit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.committing--; s.committing == 0 && s.commitsDone != nil {
		close(s.commitsDone)
		s.commitsDone = nil
	}
}

// closeCommits closes the gate and waits for the commits under way: after
// it returns nothing touches the store, which the caller may then close.
func (s *Server) closeCommits() {
	s.mu.Lock()
	s.commitsClosed = true
	if s.committing == 0 {
		s.mu.Unlock()
		return
	}
	if s.commitsDone == nil {
		s.commitsDone = make(chan struct{})
	}
	done := s.commitsDone
	s.mu.Unlock()
	<-done
}

// roomForMail reports whether the store's disk has room for another
// message (Options.FreeSpace and MinFreeBytes). One statfs a transaction:
// a microsecond, against the two fsyncs of its commit.
func (s *Server) roomForMail() bool {
	if s.opts.FreeSpace == nil {
		return true
	}
	free, err := s.opts.FreeSpace()
	if err != nil {
		// Mail goes on: refusing it for a statfs that fails would be
		// worse than the full disk the check is there for. Said once.
		if s.spaceUnknown.CompareAndSwap(false, true) {
			s.log.Warn("free disk space unknown: limits.min_free_bytes is not enforced", "err", err)
		}
		return true
	}
	return free >= s.opts.MinFreeBytes
}

// holdBuffer counts n more bytes of message data against MaxBufferedBytes
// and reports whether they fit; if not, nothing is counted.
func (s *Server) holdBuffer(n int64) bool {
	if s.buffered.Add(n) > s.opts.MaxBufferedBytes && s.opts.MaxBufferedBytes > 0 {
		s.buffered.Add(-n)
		return false
	}
	return true
}

func (s *Server) releaseBuffer(n int64) { s.buffered.Add(-n) }

// dsnQueue is the submission queue when it keeps DSN parameters, else nil.
func (s *Server) dsnQueue() DSNQueue {
	if s.kind != kindSubmission {
		return nil
	}
	dq, _ := s.queue.(DSNQueue)
	return dq
}

// isLocal reports whether domain (lower case) is one of ours.
func (s *Server) isLocal(domain string) bool { return s.domains[domain] }

// errorLog routes go-smtp's internal log lines to slog: panics it recovered
// as errors, the rest (client connection errors) as debug.
type errorLog struct{ l *slog.Logger }

func (e errorLog) Printf(format string, v ...any) { e.print(fmt.Sprintf(format, v...)) }
func (e errorLog) Println(v ...any)               { e.print(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }

func (e errorLog) print(msg string) {
	if strings.Contains(msg, "panic") {
		e.l.Error("smtp engine", "msg", msg)
		return
	}
	e.l.Debug("smtp engine", "msg", msg)
}

// maySendAs reports whether a submission user may use addr as its sender:
// its own address, or one Options.Senders allows.
func (s *Server) maySendAs(user, addr string) bool {
	if sameAddress(addr, user) {
		return true
	}
	return s.opts.Senders != nil && s.opts.Senders.MaySendAs(user, addr)
}
