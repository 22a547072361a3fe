package main

import (
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
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"minimail/mda"
	"minimail/mta"
	"minimail/mta/guard"
	"minimail/mta/msgauth"
	"minimail/mta/queue"
	"minimail/mta/remote"
	"minimail/mta/resolve"
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
			srv, err := startServer(cfg, log, nil)
			if err != nil {
				return err
			}
			stop, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer cancel()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
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
	grace time.Duration

	addrs map[string]string // listen key -> bound address

	shutdowns   []func(context.Context) error
	stopQueue   context.CancelFunc
	queueDone   chan struct{}
	stopControl func()
	stopWatch   chan struct{}
	wg          sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

// listenError is a listener that cannot bind: runtime failure (exit 1)
// naming the key and the address.
func listenError(key, addr string, err error) error {
	return fmt.Errorf("%s = %q: %w", key, addr, err)
}

// startServer opens the store, binds every listener (all or nothing), and
// starts serving. Shutdown stops it.
//
// relayTranscript, when not nil, receives the outbound SMTP conversations
// (the demo prints them).
func startServer(cfg *Config, log *slog.Logger, relayTranscript func(host string) io.Writer) (_ *server, err error) {
	s := &server{log: log, grace: cfg.Limits.ShutdownTimeout.or(30 * time.Second), addrs: map[string]string{}, stopWatch: make(chan struct{})}
	if err := cfg.checkFiles(); err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if cfg.TLS.Cert != "" {
		s.certs, err = newCertReloader(cfg.TLS.Cert, cfg.TLS.Key, log)
		if err != nil {
			return nil, &configError{path: cfg.path, msg: err.Error()}
		}
		tlsConf = s.certs.tlsConfig()
	}
	var signer *msgauth.Signer
	if cfg.DKIM.Key != "" {
		key, err := msgauth.LoadKey(cfg.DKIM.Key)
		if err != nil {
			return nil, &configError{path: cfg.path, key: "dkim.key", msg: err.Error()}
		}
		signer = &msgauth.Signer{Selector: cfg.DKIM.Selector, Key: key, Domains: cfg.Domains}
	}

	// Bind everything before touching anything else, so a port in use
	// leaves nothing running.
	listeners := map[string]net.Listener{}
	defer func() {
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
		}
	}()
	for _, lc := range cfg.listeners() {
		if lc.addr == "" {
			continue
		}
		tcp, err := net.Listen("tcp", lc.addr)
		if err != nil {
			return nil, listenError(lc.key, lc.addr, err)
		}
		// Every server rides out temporary accept failures the same way.
		var l net.Listener = &guard.Listener{Listener: tcp, Log: log}
		if lc.key == "listen.submissions" || lc.key == "listen.pop3s" {
			l = tls.NewListener(l, tlsConf)
		}
		listeners[lc.key] = l
		s.addrs[lc.key] = l.Addr().String()
	}

	// Listeners are bound but not yet accepting: clients wait in the
	// backlog, rather than being refused, while a compaction runs.
	compactAtStart(cfg.DataDir, log)
	s.st, err = store.Open(cfg.DataDir, store.Options{})
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	defer func() {
		if err != nil {
			s.st.Close()
		}
	}()

	// One cache for every lookup: SPF, DKIM and DMARC of inbound mail, MX
	// and addresses of outbound.
	dnsCache := resolve.NewCache(resolve.CacheOptions{})
	resolver := dnsCache.Resolver(cfg.Relay.DNS)
	agent := &mda.Agent{Mailboxes: s.st}
	q := queue.New(s.st, queue.Options{
		Hostname:     cfg.Hostname,
		LocalDomains: cfg.Domains,
		Local:        agent,
		Remote: &remote.Client{
			Hostname:          cfg.Hostname,
			Routes:            cfg.Relay.Routes,
			Smarthost:         cfg.Relay.Smarthost,
			SmarthostUsername: cfg.Relay.SmarthostUsername,
			SmarthostPassword: cfg.Relay.SmarthostPassword,
			DNS:               cfg.Relay.DNS,
			DNSCache:          dnsCache,
			Logger:            log,
			Transcript:        relayTranscript,
		},
		RetryMin:      cfg.Relay.RetryMin.Duration,
		RetryMax:      cfg.Relay.RetryMax.Duration,
		MaxAge:        cfg.Relay.MaxAge.Duration,
		DelayNotice:   cfg.Relay.DelayNotice.Duration,
		MaxConcurrent: cfg.Relay.MaxConcurrent,
		MaxPerDomain:  cfg.Relay.MaxPerDomain,
		Logger:        log,
	})

	throttle := &guard.AuthThrottle{MaxPerIP: cfg.Auth.MaxFailures, Window: cfg.Auth.FailureWindow.Duration}
	opts := mta.Options{
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
		MaxConnections:      cfg.Limits.MaxConnections,
		MaxConnectionsPerIP: cfg.Limits.MaxConnectionsPerIP,
		MaxErrors:           cfg.Limits.MaxErrors,
		AuthThrottle:        throttle,
		AuthFailDelay:       cfg.Auth.FailureDelay.Duration,
		LoginName:           store.LoginName,
		Logger:              log,
	}
	if signer != nil {
		opts.Sign = signer.Signature
	}
	mxOpts := opts
	verifier := &msgauth.Verifier{Resolver: resolver, AuthServID: cfg.Hostname, RejectDMARC: cfg.dmarcReject(), Logger: log}
	mxOpts.Verify = verifyOnMX(verifier)

	serveOn := func(key string, serve func(net.Listener) error, shutdown func(context.Context) error) {
		l, ok := listeners[key]
		if !ok {
			return
		}
		s.shutdowns = append(s.shutdowns, shutdown)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := serve(l); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Error("listener stopped", "key", key, "err", err)
			}
		}()
		log.Info("listening", "key", key, "addr", l.Addr().String())
	}
	if _, ok := listeners["listen.smtp"]; ok {
		mx := mta.NewMX(agent, mxOpts)
		serveOn("listen.smtp", mx.Serve, mx.Shutdown)
	}
	for _, key := range []string{"listen.submission", "listen.submissions"} {
		if _, ok := listeners[key]; ok {
			sub := mta.NewSubmission(agent, q, smtpUsers{s.st}, opts)
			serveOn(key, sub.Serve, sub.Shutdown)
		}
	}
	popOpts := pop3.Options{
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
	if _, ok := listeners["listen.pop3"]; ok && tlsConf == nil && !cfg.Auth.AllowInsecureAuth {
		log.Warn("listen.pop3 has no TLS certificate (tls.cert), so no login can succeed on it: set [tls] or auth.allow_insecure_auth")
	}
	for _, key := range []string{"listen.pop3", "listen.pop3s"} {
		if _, ok := listeners[key]; ok {
			popOpts.Limiter = &guard.ConnLimiter{Max: cfg.Limits.MaxConnections, MaxPerIP: cfg.Limits.MaxConnectionsPerIP}
			p := pop3.NewServer(maildrop{s.st}, popOpts)
			serveOn(key, p.Serve, p.Shutdown)
		}
	}

	var qctx context.Context
	qctx, s.stopQueue = context.WithCancel(context.Background())
	s.queueDone = make(chan struct{})
	go func() {
		defer close(s.queueDone)
		if err := q.Run(qctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("queue runner stopped", "err", err)
		}
	}()
	s.stopControl, err = serveControl(cfg.DataDir, &adminOps{st: s.st, cfg: cfg, queue: q}, log)
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

// verifyOnMX gives the MX msgauth's verdicts in the MX's own terms, one
// disposition for each.
func verifyOnMX(v *msgauth.Verifier) func(context.Context, net.IP, string, string, []byte) (mta.Verdict, error) {
	return func(ctx context.Context, ip net.IP, helo, mailFrom string, msg []byte) (mta.Verdict, error) {
		got, err := v.Verify(ctx, ip, helo, mailFrom, msg)
		if err != nil {
			return mta.Verdict{}, err
		}
		return mta.Verdict{Disposition: mxDisposition(got.Disposition), Reason: got.Reason, Message: got.Message, Prepend: got.Field, Summary: got.Summary}, nil
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
