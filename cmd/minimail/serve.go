package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/net/netutil"

	"minimail/mda"
	"minimail/mta"
	"minimail/mta/guard"
	"minimail/mta/msgauth"
	"minimail/mta/queue"
	"minimail/mta/remote"
	"minimail/mta/resolve"
	"minimail/mta/srs"
	"minimail/mta/web"
	"minimail/pop3"
	"minimail/store"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run every listener in the config until SIGINT/SIGTERM; SIGHUP reloads the TLS certificate",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("serve takes no arguments")
			}
			cfg, err := config(c)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
			// The signals are caught before the listeners start: a SIGHUP
			// sent once "listening" is logged must reload, not kill (its
			// default action), and a SIGTERM then must drain.
			stop, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer cancel()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			paceCollector()
			srv, err := startServer(cfg, log, nil)
			if err != nil {
				return err
			}
			for {
				select {
				case <-hup:
					srv.reloadTLS()
				case <-stop.Done():
					log.Info("shutting down", "grace", srv.grace)
					ctx, cancel := context.WithTimeout(context.Background(), srv.grace)
					defer cancel()
					return srv.Shutdown(ctx)
				}
			}
		},
	}
}

// server is one running minimail: every listener of a config, the queue
// runner and the control socket over one open store. This file is the only
// place that wires the packages together.
type server struct {
	log   *slog.Logger
	st    *store.Store
	certs *certReloader
	acme  *acmeCerts  // instead of certs when [acme] email is set
	https *tls.Config // listen.https's: the mail listeners' plus ALPN
	grace time.Duration

	addrs   map[string]string // listen key -> bound address
	started time.Time

	downMu   sync.Mutex
	down     map[string]error // listen key -> why its server stopped before shutdown
	stopping atomic.Bool

	shutdowns   []func(context.Context) error
	stopQueue   context.CancelFunc
	queueDone   chan struct{}
	stopControl func()
	stopWatch   chan struct{}
	wg          sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

// startServer opens the store, binds every listener (all or nothing), and
// starts serving. Shutdown stops it.
//
// relayTranscript, when not nil, receives the outbound SMTP conversations
// (the demo prints them).
func startServer(cfg *Config, log *slog.Logger, relayTranscript func(host string) io.Writer) (_ *server, err error) {
	s := &server{started: time.Now(), log: log, grace: cfg.Limits.ShutdownTimeout.or(30 * time.Second), addrs: map[string]string{}, down: map[string]error{}, stopWatch: make(chan struct{})}
	if err := cfg.checkFiles(); err != nil {
		return nil, err
	}
	tlsConf, signer, err := s.loadKeys(cfg)
	if err != nil {
		return nil, err
	}
	// Bind everything before touching anything else, so a port in use
	// leaves nothing running.
	listeners, err := s.bind(cfg, tlsConf)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
		}
	}()
	// Listeners are bound but not yet accepting: clients wait in the
	// backlog, rather than being refused, while a compaction runs.
	compactAtStart(cfg.DataDir, log)
	s.st, err = store.Open(cfg.DataDir, store.Options{Compacted: logCompaction(log, true)})
	if err != nil {
		return nil, storeOpenError(cfg.DataDir, err)
	}
	defer func() {
		if err != nil {
			s.st.Close()
		}
	}()
	if s.acme != nil {
		s.acme.start(s.st)
		defer func() {
			if err != nil {
				s.acme.shutdown()
			}
		}()
	}

	// One cache for every lookup: SPF, DKIM and DMARC of inbound mail, MX
	// and addresses of outbound.
	dnsCache := resolve.NewCache(resolve.CacheOptions{})
	secret, err := s.st.SRSSecret()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.DataDir, err)
	}
	agent := &mda.Agent{Mailboxes: s.st, Delimiter: cfg.recipientDelimiter(), DefaultQuota: cfg.Limits.MaxMailboxBytes,
		Domains: cfg.Domains, SRS: &srs.Rewriter{Secret: secret}}
	var m *metrics // nil when listen.metrics is off: nothing is counted
	if _, ok := listeners["listen.metrics"]; ok {
		m = newMetrics(s.st.QueueLen, s.certificateExpiries)
	}
	q := newQueue(cfg, s.st, agent, dnsCache, log, relayTranscript, m.forQueue())
	agent.Queue = q // forwarded copies start at once
	throttle := &guard.AuthThrottle{MaxPerIP: cfg.Auth.MaxFailures, Window: cfg.Auth.FailureWindow.Duration, Log: log}

	warnPostmaster(cfg, agent, log)
	opts := smtpOptions(cfg, tlsConf, throttle, log)
	// On submission a user may send as the aliases that deliver to it.
	opts.Senders = agent
	if signer != nil {
		opts.Sign = signer.Signature
	}
	opts.Metrics = m.forMTA()
	// Open transactions tell the store's committer that messages are on
	// their way, so concurrent deliveries share an fsync.
	opts.Expect = s.st.Expect
	// A nearly full disk refuses new mail at MAIL, before it is sent.
	opts.FreeSpace = s.st.FreeSpace
	// The servers share the process's memory, and so one gate for big
	// messages.
	opts.BigTransfers = mta.NewTransferGate(0)
	// `minimail sendmail` hands messages to a submission server of their
	// own (over the control socket, or listen.sendmail), served on no
	// TCP listener.
	local := mta.NewSubmission(agent, q, smtpUsers{s.st}, opts)
	s.shutdowns = append(s.shutdowns, local.Shutdown)
	if l, ok := listeners["listen.sendmail"]; ok {
		ss := newSendmailSocket(cfg, local.SubmitLocal, log)
		s.serveOn("listen.sendmail", l, ss.Serve, ss.Shutdown)
	}
	if l, ok := listeners["listen.smtp"]; ok {
		mxOpts := opts
		verifier := &msgauth.Verifier{Resolver: dnsCache.Resolver(cfg.Relay.DNS), Cache: dnsCache, AuthServID: cfg.Hostname, RejectDMARC: cfg.dmarcReject(), Logger: log}
		mxOpts.Verify = verifyOnMX(verifier)
		antispamOptions(&mxOpts, cfg, verifier, dnsCache, s.st, log)
		// Copies refused for quota after others were stored bounce
		// through the queue (mta.Options.Overflow).
		mxOpts.Overflow = q
		mx := mta.NewMX(agent, mxOpts)
		s.serveOn("listen.smtp", l, mx.Serve, mx.Shutdown)
	}
	for _, key := range []string{"listen.submission", "listen.submissions"} {
		if l, ok := listeners[key]; ok {
			sub := mta.NewSubmission(agent, q, smtpUsers{s.st}, opts)
			s.serveOn(key, l, sub.Serve, sub.Shutdown)
		}
	}
	if _, ok := listeners["listen.pop3"]; ok && tlsConf == nil && !cfg.Auth.AllowInsecureAuth {
		log.Warn("listen.pop3 has no TLS certificate (tls.cert), so no login can succeed on it: set [tls] or auth.allow_insecure_auth")
	}
	popOpts := pop3Options(cfg, tlsConf, throttle, log)
	popOpts.Metrics = m.forPOP3()
	for _, key := range []string{"listen.pop3", "listen.pop3s"} {
		if l, ok := listeners[key]; ok {
			popOpts.Limiter = &guard.ConnLimiter{Max: cfg.Limits.MaxConnections, MaxPerIP: cfg.Limits.MaxConnectionsPerIP}
			p := pop3.NewServer(maildrop{s.st}, popOpts)
			s.serveOn(key, l, p.Serve, p.Shutdown)
		}
	}

	if l, ok := listeners["listen.https"]; ok {
		h := web.NewHandler(web.Options{Hostname: cfg.Hostname, Domains: cfg.Domains, Ports: webPorts(s.addrs), Policy: cfg.mtaSTSPolicy(), Logger: log})
		hs := web.NewServer(h, web.ServerLimits{}, log)
		s.serveOn("listen.https", l, hs.Serve, hs.Shutdown)
	}

	if l, ok := listeners["listen.metrics"]; ok {
		s.serveMetrics(l, m)
	}
	s.runQueue(q)
	s.stopControl, err = serveControl(cfg.DataDir, &adminOps{st: s.st, cfg: cfg, queue: q, throttle: throttle, status: s.status, submit: local.SubmitLocal}, log)
	if err != nil {
		s.stopQueue()
		<-s.queueDone
		for _, shutdown := range s.shutdowns {
			shutdown(context.Background())
		}
		s.wg.Wait()
		return nil, err
	}
	if s.certs != nil {
		go s.certs.watch(cfg.TLS.ReloadInterval.or(time.Minute), s.stopWatch)
	}
	return s, nil
}

// loadKeys reads the TLS pair (kept reloadable), or sets up ACME, and the
// DKIM key.
func (s *server) loadKeys(cfg *Config) (*tls.Config, *msgauth.Signer, error) {
	var tlsConf *tls.Config
	switch {
	case cfg.ACME.Email != "":
		a, err := newACME(cfg, s.log)
		if err != nil {
			return nil, nil, err
		}
		s.acme = a
		tlsConf, s.https = a.tlsConfigs()
	case cfg.TLS.Cert != "":
		certs, err := newCertReloader(cfg.TLS.Cert, cfg.TLS.Key, certChecks{Hostname: cfg.Hostname, Public: cfg.publicListeners()}, s.log)
		if err != nil {
			return nil, nil, &configError{path: cfg.path, msg: err.Error()}
		}
		s.certs, tlsConf = certs, certs.tlsConfig()
		s.https = tlsConf.Clone()
		s.https.NextProtos = []string{"http/1.1"}
	}
	if cfg.DKIM.Key == "" {
		return tlsConf, nil, nil
	}
	key, err := msgauth.LoadKey(cfg.DKIM.Key)
	if err != nil {
		return nil, nil, &configError{path: cfg.path, key: "dkim.key", msg: err.Error()}
	}
	return tlsConf, &msgauth.Signer{Selector: cfg.DKIM.Selector, Key: key, Domains: cfg.Domains}, nil
}

// bind opens every configured listener, each riding out temporary accept
// failures the same way, with implicit TLS where the key says so. On an
// error none stays open.
func (s *server) bind(cfg *Config, tlsConf *tls.Config) (map[string]net.Listener, error) {
	listeners := map[string]net.Listener{}
	for _, lc := range cfg.listeners() {
		if lc.addr == "" {
			continue
		}
		tcp, err := net.Listen("tcp", lc.addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return nil, &listenError{path: cfg.path, key: lc.key, addr: lc.addr, err: err, hint: listenHint(cfg.DataDir, lc.addr, err)}
		}
		var l net.Listener = &guard.Listener{Listener: tcp, Log: s.log}
		switch lc.key {
		case "listen.submissions", "listen.pop3s":
			l = tls.NewListener(l, tlsConf)
		case "listen.https":
			// net/http has no connection limit of its own.
			l = tls.NewListener(netutil.LimitListener(l, cfg.Limits.MaxConnections), s.https)
		}
		listeners[lc.key] = l
		s.addrs[lc.key] = l.Addr().String()
	}
	// listen.metrics is plain HTTP, never TLS, and no mail listener.
	if addr := cfg.Listen.Metrics; addr != "" {
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return nil, &listenError{path: cfg.path, key: "listen.metrics", addr: addr, err: err, hint: listenHint(cfg.DataDir, addr, err)}
		}
		listeners["listen.metrics"] = &guard.Listener{Listener: tcp, Log: s.log}
		s.addrs["listen.metrics"] = tcp.Addr().String()
	}
	// listen.sendmail is a unix socket for local users (sendmailsock.go).
	if path := cfg.Listen.Sendmail; path != "" {
		l, err := listenSendmail(path)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return nil, &listenError{path: cfg.path, key: "listen.sendmail", addr: path, err: err}
		}
		listeners["listen.sendmail"] = l
		s.addrs["listen.sendmail"] = path
	}
	return listeners, nil
}

func newQueue(cfg *Config, st *store.Store, local queue.LocalDeliverer, dnsCache *resolve.Cache, log *slog.Logger, transcript func(host string) io.Writer, m queue.Metrics) *queue.Queue {
	return queue.New(st, queue.Options{
		Hostname:     cfg.Hostname,
		LocalDomains: cfg.Domains,
		Local:        local,
		Remote: &remote.Client{
			Hostname:          cfg.Hostname,
			Routes:            cfg.Relay.Routes,
			Smarthost:         cfg.Relay.Smarthost,
			SmarthostUsername: cfg.Relay.SmarthostUsername,
			SmarthostPassword: cfg.Relay.SmarthostPassword,
			DNS:               cfg.Relay.DNS,
			DNSCache:          dnsCache,
			Logger:            log,
			Transcript:        transcript,
		},
		RetryMin:      cfg.Relay.RetryMin.Duration,
		RetryMax:      cfg.Relay.RetryMax.Duration,
		MaxAge:        cfg.Relay.MaxAge.Duration,
		DelayNotice:   cfg.Relay.DelayNotice.Duration,
		MaxConcurrent: cfg.Relay.MaxConcurrent,
		MaxPerDomain:  cfg.Relay.MaxPerDomain,
		// RET=FULL (RFC 3461) returns messages up to this size whole.
		MaxReturnBytes: cfg.Relay.MaxReturnBytes,
		Logger:         log,
		Metrics:        m,
	})
}

// smtpOptions are the options the MX and submission servers share.
func smtpOptions(cfg *Config, tlsConf *tls.Config, throttle *guard.AuthThrottle, log *slog.Logger) mta.Options {
	return mta.Options{
		Hostname:            cfg.Hostname,
		Domains:             cfg.Domains,
		TLSConfig:           tlsConf,
		AllowInsecureAuth:   cfg.Auth.AllowInsecureAuth,
		MaxMessageBytes:     cfg.Limits.MaxMessageBytes,
		MaxRecipients:       cfg.Limits.MaxRecipients,
		MaxLineLength:       cfg.Limits.MaxLineLength,
		MaxHeaderBytes:      cfg.Limits.MaxHeaderBytes,
		CommandTimeout:      cfg.Limits.CommandTimeout.Duration,
		DataTimeout:         cfg.Limits.DataTimeout.Duration,
		MinDataRate:         cfg.Limits.MinDataRate,
		MaxSessionTime:      cfg.Limits.MaxSessionTime.Duration,
		MaxBufferedBytes:    cfg.Limits.MaxBufferedBytes,
		MinFreeBytes:        cfg.Limits.MinFreeBytes,
		MaxConnections:      cfg.Limits.MaxConnections,
		MaxConnectionsPerIP: cfg.Limits.MaxConnectionsPerIP,
		MaxErrors:           cfg.Limits.MaxErrors,
		AuthThrottle:        throttle,
		AuthFailDelay:       cfg.Auth.FailureDelay.Duration,
		LoginName:           store.LoginName,
		Logger:              log,
	}
}

func pop3Options(cfg *Config, tlsConf *tls.Config, throttle *guard.AuthThrottle, log *slog.Logger) pop3.Options {
	return pop3.Options{
		Hostname:          cfg.Hostname,
		TLSConfig:         tlsConf,
		AllowInsecureAuth: cfg.Auth.AllowInsecureAuth,
		IdleTimeout:       cfg.Limits.POP3IdleTimeout.Duration,
		CommandTimeout:    cfg.Limits.CommandTimeout.or(mta.DefaultCommandTimeout), // unset: the same default as SMTP
		AuthThrottle:      throttle,
		AuthFailDelay:     cfg.Auth.FailureDelay.Duration,
		LoginName:         store.LoginName,
		Locks:             &pop3.MaildropLocks{}, // one for both listeners: RFC 1939 section 8
		Logger:            log,
	}
}

// serveOn runs one server on its listener until shutdown.
func (s *server) serveOn(key string, l net.Listener, serve func(net.Listener) error, shutdown func(context.Context) error) {
	s.shutdowns = append(s.shutdowns, shutdown)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := serve(l)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("listener stopped", "key", key, "err", err)
		}
		if !s.stopping.Load() {
			// Down for good before any shutdown: /healthz says so.
			s.downMu.Lock()
			s.down[key] = cmp.Or(err, errors.New("stopped serving"))
			s.downMu.Unlock()
		}
	}()
	s.log.Info("listening", "key", key, "addr", l.Addr().String())
}

// runQueue starts the queue runner; stopQueue ends it.
func (s *server) runQueue(q *queue.Queue) {
	var ctx context.Context
	ctx, s.stopQueue = context.WithCancel(context.Background())
	s.queueDone = make(chan struct{})
	go func() {
		defer close(s.queueDone)
		if err := q.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("queue runner stopped", "err", err)
		}
	}()
}

// verifyOnMX gives the MX msgauth's verdicts in the MX's own terms, one
// disposition for each.
func verifyOnMX(v *msgauth.Verifier) func(context.Context, net.IP, string, string, []byte) (mta.Verdict, error) {
	return func(ctx context.Context, ip net.IP, helo, mailFrom string, msg []byte) (mta.Verdict, error) {
		got, err := v.Verify(ctx, ip, helo, mailFrom, msg)
		if err != nil {
			return mta.Verdict{}, err
		}
		return mta.Verdict{Disposition: mxDisposition(got.Disposition), Reason: got.Reason, Message: got.Message, Prepend: got.Field, Summary: got.Summary, Authenticated: got.Authenticated}, nil
	}
}

func mxDisposition(d msgauth.Disposition) mta.Disposition {
	switch d {
	case msgauth.Deliver:
		return mta.Accept
	case msgauth.RejectMalformed:
		return mta.RejectMalformed
	case msgauth.RejectUnevaluable:
		return mta.RejectUnevaluable
	case msgauth.RejectPolicy:
		return mta.RejectPolicy
	}
	return mta.Defer // msgauth.Temporary, and anything newer: a retry is safe
}

func (s *server) reloadTLS() {
	if s.certs != nil {
		s.certs.Reload()
	}
}

// Shutdown stops accepting, lets sessions in progress finish until ctx is
// done, stops the queue runner and closes the store.
func (s *server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *server) shutdown(ctx context.Context) error {
	s.stopping.Store(true)
	close(s.stopWatch)
	s.stopControl()
	var wg sync.WaitGroup
	for _, shutdown := range s.shutdowns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shutdown(ctx)
		}()
	}
	wg.Wait()
	s.wg.Wait()
	s.stopQueue()
	<-s.queueDone
	if s.acme != nil {
		s.acme.shutdown()
	}
	if err := s.st.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

// stop shuts down with a grace period of d.
func (s *server) stop(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Shutdown(ctx)
}

// warnPostmaster logs each local domain whose postmaster@ reaches no
// mailbox (neither a user, an alias nor the catch-all): RCPT refuses it
// then, since a 250 means the message is stored, and RFC 5321 4.5.1 wants
// it to work.
func warnPostmaster(cfg *Config, agent *mda.Agent, log *slog.Logger) {
	for _, d := range cfg.Domains {
		if _, err := agent.Resolve("postmaster@" + d); errors.Is(err, mda.ErrUnknownUser) {
			log.Warn("postmaster reaches no mailbox", "domain", d, "fix", "minimail alias add postmaster@"+d+" you@"+d)
		}
	}
}

// webPorts are the ports of the mail listeners that are on, for the client
// setup answers (the bound addresses) and records (the configured ones),
// from listen key -> address.
func webPorts(addrs map[string]string) web.Ports {
	return web.Ports{
		POP3S:       listenPort(addrs["listen.pop3s"]),
		POP3:        listenPort(addrs["listen.pop3"]),
		Submissions: listenPort(addrs["listen.submissions"]),
		Submission:  listenPort(addrs["listen.submission"]),
	}
}

// listenPort is the port of a listen address, 0 for none.
func listenPort(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, err := net.LookupPort("tcp", port)
	if err != nil {
		return 0
	}
	return n
}
