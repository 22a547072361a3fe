package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"minimail/mta"
	"minimail/mta/queue"
	"minimail/pop3"
)

// metrics counts what the servers report (mta.Metrics, queue.Metrics,
// pop3.Metrics) in a registry of its own, which listen.metrics serves in
// the Prometheus text format. Every label has a small fixed set of values
// (listener names, refusal reasons, certificate names from the config):
// never an address or a client IP, which would make a series per sender.
type metrics struct {
	reg          *prometheus.Registry
	received     *prometheus.CounterVec
	delivered    prometheus.Counter
	bounced      prometheus.Counter
	rejected     *prometheus.CounterVec
	pop3Sessions prometheus.Counter
}

// receivedListeners are the values of minimail_messages_received_total's
// listener label.
var receivedListeners = []string{"smtp", "submission", "submissions", "sendmail"}

// certExpiry is one certificate the server offers, for the expiry gauge.
type certExpiry struct {
	Name     string // the certificate's first name
	NotAfter time.Time
}

// newMetrics registers the series. queueLen and certs are read at each
// scrape, so the gauges are never stale.
func newMetrics(queueLen func() (int, error), certs func() []certExpiry) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimail_messages_received_total",
			Help: "Messages accepted (250 after DATA, or queued by sendmail), by listener.",
		}, []string{"listener"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "minimail_messages_delivered_total",
			Help: "Recipients a message reached: a local mailbox, or the next hop that accepted it.",
		}),
		bounced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "minimail_messages_bounced_total",
			Help: "Queued recipients that failed for good (5xx or expired) and were bounced.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimail_smtp_rejected_total",
			Help: "SMTP refusals (connections, senders, transactions) as the rejected log lines record them, by reason.",
		}, []string{"reason"}),
		pop3Sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "minimail_pop3_sessions_total",
			Help: "POP3 sessions begun.",
		}),
	}
	// Every label value is there from the start, at 0, so that rate()
	// and alerts see the first event.
	for _, l := range receivedListeners {
		m.received.WithLabelValues(l)
	}
	for _, r := range mta.Reasons {
		m.rejected.WithLabelValues(r)
	}
	m.reg.MustRegister(m.received, m.delivered, m.bounced, m.rejected, m.pop3Sessions,
		&gaugesAtScrape{queueLen: queueLen, certs: certs},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// The interfaces of mta, mta/queue and pop3. A metrics value is never nil
// where these are called: serve passes none when listen.metrics is off.

func (m *metrics) Received(listener string) {
	if !slices.Contains(receivedListeners, listener) {
		listener = "other"
	}
	m.received.WithLabelValues(listener).Inc()
}

func (m *metrics) Delivered(n int) { m.delivered.Add(float64(n)) }

// Rejected counts a refusal; a reason outside mta.Reasons counts as
// "other", so that no caller can grow the label set.
func (m *metrics) Rejected(reason string) {
	if !slices.Contains(mta.Reasons, reason) {
		reason = mta.ReasonOther
	}
	m.rejected.WithLabelValues(reason).Inc()
}

// forMTA, forQueue and forPOP3 are m for each package, nil (no metrics)
// when m is nil: a nil *metrics in an interface would not be nil.
func (m *metrics) forMTA() mta.Metrics {
	if m == nil {
		return nil
	}
	return m
}

func (m *metrics) forQueue() queue.Metrics {
	if m == nil {
		return nil
	}
	return queueMetrics{m}
}

func (m *metrics) forPOP3() pop3.Metrics {
	if m == nil {
		return nil
	}
	return pop3Metrics{m}
}

// queueMetrics and pop3Metrics give the queue and POP3 their own method
// names over the same counters.
type queueMetrics struct{ m *metrics }

func (q queueMetrics) Delivered() { q.m.delivered.Inc() }
func (q queueMetrics) Bounced()   { q.m.bounced.Inc() }

type pop3Metrics struct{ m *metrics }

func (p pop3Metrics) Session() { p.m.pop3Sessions.Inc() }

// gaugesAtScrape reads the queue length and the certificates' expiry
// when scraped.
type gaugesAtScrape struct {
	queueLen func() (int, error)
	certs    func() []certExpiry
}

var (
	queueDesc = prometheus.NewDesc("minimail_queue_messages",
		"Messages in the outbound queue.", nil, nil)
	certDesc = prometheus.NewDesc("minimail_tls_certificate_expiry_seconds",
		"When the certificate stops being valid (its NotAfter), in seconds since the Unix epoch; alert on this minus time().",
		[]string{"name"}, nil)
)

func (g *gaugesAtScrape) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDesc
	ch <- certDesc
}

func (g *gaugesAtScrape) Collect(ch chan<- prometheus.Metric) {
	if n, err := g.queueLen(); err == nil {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(n))
	} else {
		ch <- prometheus.NewInvalidMetric(queueDesc, err)
	}
	for _, c := range g.certs() {
		ch <- prometheus.MustNewConstMetric(certDesc, prometheus.GaugeValue, float64(c.NotAfter.Unix()), c.Name)
	}
}

// certificateExpiries lists the certificates the TLS listeners offer: the
// one place the expiry gauge reads them from.
func (s *server) certificateExpiries() []certExpiry {
	if s.certs == nil {
		return nil
	}
	leaf := s.certs.leaf()
	if leaf == nil {
		return nil
	}
	return []certExpiry{{Name: certName(leaf), NotAfter: leaf.NotAfter}}
}

// certName is the name a certificate goes by in the metrics: its first
// subject alternative name, else its subject's common name.
func certName(leaf *x509.Certificate) string {
	if names := certNames(leaf); len(names) > 0 {
		return names[0]
	}
	return leaf.Subject.CommonName
}

// metricsTimeouts bound every request to listen.metrics: a scrape is one
// short GET.
const (
	metricsReadTimeout  = 10 * time.Second
	metricsWriteTimeout = 30 * time.Second
	metricsIdleTimeout  = 2 * time.Minute
)

// serveMetrics runs the HTTP server of listen.metrics on l: GET /metrics,
// GET /healthz; anything else is 404.
func (s *server) serveMetrics(l net.Listener, m *metrics) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       metricsWriteTimeout - time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := s.healthy(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsReadTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	serve := func(l net.Listener) error {
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	s.serveOn("listen.metrics", l, serve, func(ctx context.Context) error {
		err := hs.Shutdown(ctx)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		return err
	})
}

// healthy is /healthz's verdict: every listener up and the store taking
// writes (store.Writable: open, read-write, its last commit not failed;
// no write of its own, so a probe every few seconds costs no fsync).
func (s *server) healthy() error {
	s.downMu.Lock()
	down := slices.Sorted(maps.Keys(s.down))
	s.downMu.Unlock()
	if len(down) > 0 {
		return fmt.Errorf("listener %s is down", down[0])
	}
	if err := s.st.Writable(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
