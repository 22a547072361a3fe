package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"minimail/mta/remote/smtptest"
)

// scrape GETs path from the site's metrics listener.
func scrape(t *testing.T, s *site, path string) (int, string) {
	t.Helper()
	return scrapeAddr(t, s.srv.addrs["listen.metrics"], path)
}

// scrapeAddr GETs path from the metrics listener at addr.
func scrapeAddr(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// samples reads the text format's sample lines: series -> value.
func samples(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetrics_CountersMoveByTheRightAmounts: a known set of messages
// (accepted on the MX, on submission and by sendmail, one refused, one
// bounced, one POP3 session) moves each counter by exactly its share, and the output
// passes promtool check metrics.
func TestMetrics_CountersMoveByTheRightAmounts(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{Rcpt: func(rcpt string) error {
		if strings.HasPrefix(rcpt, "gone@") {
			return smtptest.Reply(550, 5, 1, 1, "no such user")
		}
		return nil
	}})
	a := newSite(t, "a.test", fmt.Sprintf("[relay]\nroutes = { \"far.test\" = %q }\n", sink.Addr))
	a.addUser(t, "alice@a.test")
	a.addUser(t, "bob@a.test")

	code, before := scrape(t, a, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	base := samples(t, before)

	// MX: one message for alice, one transaction refused (unknown user).
	mx, err := net.Dial("tcp", a.srv.addrs["listen.smtp"])
	if err != nil {
		t.Fatal(err)
	}
	defer mx.Close()
	mx.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(mx)
	say := func(line, want string) {
		t.Helper()
		if line != "" {
			fmt.Fprintf(mx, "%s\r\n", line)
		}
		for {
			got, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", line, err)
			}
			if len(got) > 3 && got[3] == '-' {
				continue
			}
			if !strings.HasPrefix(got, want) {
				t.Fatalf("after %q: %q, want %s", line, got, want)
			}
			return
		}
	}
	say("", "220 ")
	say("EHLO sender.far.test", "250 ")
	say("MAIL FROM:<x@far.test>", "250 ")
	say("RCPT TO:<alice@a.test>", "250 ")
	say("DATA", "354 ")
	say(strings.TrimSuffix(string(testMessage("x@far.test", "alice@a.test", "over mx", "hello\r\n")), "\r\n")+"\r\n.", "250 ")
	say("MAIL FROM:<x@far.test>", "250 ")
	say("RCPT TO:<nobody@a.test>", "550 5.1.1")
	say("QUIT", "221 ")

	// Submission: one message for carol (accepted by the sink) and gone
	// (refused by it, so bounced to bob).
	if err := a.submit(t, "bob@a.test", []string{"carol@far.test", "gone@far.test"}, testMessage("bob@a.test", "carol@far.test", "over submission", "hi\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the queue to finish", func() bool {
		entries, _ := a.srv.st.QueueEntries()
		return len(sink.Messages()) == 1 && len(entries) == 0
	})
	a.waitMessages(t, "bob@a.test", 1) // the bounce

	// One message for alice through sendmail (the control socket).
	if r := minimail(t, "Subject: cron\n\nx\n", "--config", a.cfg.path, "sendmail", "alice@a.test"); r.code != 0 {
		t.Fatalf("sendmail: exit %d %s", r.code, r.stderr)
	}

	// One POP3 session.
	if got := pop3Fetch(t, a.srv.addrs["listen.pop3s"], "alice@a.test"); len(got) != 2 {
		t.Fatalf("alice fetched %d messages", len(got))
	}

	_, after := scrape(t, a, "/metrics")
	got := samples(t, after)
	for series, delta := range map[string]float64{
		`minimail_messages_received_total{listener="smtp"}`:        1,
		`minimail_messages_received_total{listener="submission"}`:  1,
		`minimail_messages_received_total{listener="submissions"}`: 0,
		`minimail_messages_received_total{listener="sendmail"}`:    1,
		// alice's two copies, carol's at the sink, the bounce in bob's mailbox
		`minimail_messages_delivered_total`:                   4,
		`minimail_messages_bounced_total`:                     1,
		`minimail_smtp_rejected_total{reason="unknown_user"}`: 1,
		`minimail_smtp_rejected_total{reason="relay_denied"}`: 0,
		`minimail_smtp_rejected_total{reason="other"}`:        0,
		`minimail_pop3_sessions_total`:                        1,
		`minimail_queue_messages`:                             0,
	} {
		v, ok := got[series]
		if !ok {
			t.Errorf("no %s in:\n%s", series, after)
			continue
		}
		if v-base[series] != delta {
			t.Errorf("%s moved by %v (from %v to %v), want %v", series, v-base[series], base[series], v, delta)
		}
	}
	expiry := got[`minimail_tls_certificate_expiry_seconds{name="mx.a.test"}`]
	if leaf, err := readLeaf(a.cfg.TLS.Cert); err != nil || expiry != float64(leaf.NotAfter.Unix()) {
		t.Errorf("certificate expiry %v, want the certificate's NotAfter (%v)", expiry, err)
	}
	for _, needle := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(after, needle) {
			t.Errorf("no %s: the Go and process collectors are missing", needle)
		}
	}
	for _, forbidden := range []string{"x@far.test", "alice@a.test", "127.0.0.1"} {
		if strings.Contains(after, forbidden) {
			t.Errorf("the metrics name %s: addresses and client IPs are no labels", forbidden)
		}
	}
	promtoolCheck(t, after)
}

// promtoolCheck runs `promtool check metrics` (Debian package prometheus)
// on text.
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
			t.Fatal("promtool not installed (apt-get install prometheus)")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	// A negative control: promtool must fail what is wrong, or its
	// pass above proves nothing.
	bad := exec.CommandContext(ctx, "promtool", "check", "metrics")
	bad.Stdin = strings.NewReader("# TYPE minimail_x counter\nminimail_x{a=\"1\"} one\n")
	if bad.Run() == nil {
		t.Fatal("promtool check metrics passed a malformed sample")
	}
}

// TestMetrics_HealthzAndOtherPaths: /healthz is 200 while every listener
// is up and the store takes writes, 503 once a listener is down; every
// other path is 404.
func TestMetrics_HealthzAndOtherPaths(t *testing.T) {
	a := newSite(t, "a.test", "")
	if code, body := scrape(t, a, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	for _, path := range []string{"/", "/metrics/x", "/health", "/debug/pprof/"} {
		if code, _ := scrape(t, a, path); code != 404 {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
	// A listener whose server stopped before any shutdown.
	a.srv.serveOn("listen.test", nopListener{}, func(net.Listener) error { return errors.New("accept: too many open files") },
		func(context.Context) error { return nil })
	waitFor(t, "the stopped listener to be noted", func() bool {
		code, body := scrape(t, a, "/healthz")
		return code == 503 && strings.Contains(body, "listen.test")
	})
}

// TestMetrics_StoreNotWritableIs503: a store that cannot take writes
// (here: closed under the server) makes /healthz 503.
func TestMetrics_StoreNotWritableIs503(t *testing.T) {
	a := newSite(t, "a.test", "")
	if err := a.srv.st.Close(); err != nil {
		t.Fatal(err)
	}
	code, body := scrape(t, a, "/healthz")
	if code != 503 || !strings.Contains(body, "store") {
		t.Fatalf("/healthz with a closed store: %d %q", code, body)
	}
}

// TestMetrics_OffByDefault: without listen.metrics nothing listens and
// nothing is counted.
func TestMetrics_OffByDefault(t *testing.T) {
	p := writeConfig(t, minimalConfig)
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen.Metrics != "" {
		t.Fatalf("listen.metrics defaults to %q", cfg.Listen.Metrics)
	}
	var m *metrics
	if m.forMTA() != nil || m.forQueue() != nil || m.forPOP3() != nil {
		t.Fatal("a nil *metrics gives a non-nil interface: every event would be counted into nothing")
	}
}

func TestMetrics_UnknownLabelValuesCountAsOther(t *testing.T) {
	m := newMetrics(func() (int, error) { return 7, nil }, func() []certExpiry { return nil })
	m.Rejected("a reason made up later")
	m.Rejected("dnsbl")
	m.Received("listen.somewhere")
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, f := range fams {
		for _, mm := range f.GetMetric() {
			key := f.GetName()
			for _, l := range mm.GetLabel() {
				key += "," + l.GetValue()
			}
			values[key] = mm.GetCounter().GetValue() + mm.GetGauge().GetValue()
		}
	}
	for key, want := range map[string]float64{
		"minimail_smtp_rejected_total,other":        1,
		"minimail_smtp_rejected_total,dnsbl":        1,
		"minimail_messages_received_total,other":    1,
		"minimail_queue_messages":                   7,
		"minimail_smtp_rejected_total,early_talker": 0,
	} {
		if v, ok := values[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if _, ok := values["minimail_smtp_rejected_total,a reason made up later"]; ok {
		t.Error("an unknown reason became a label value")
	}
}

type nopListener struct{}

func (nopListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (nopListener) Close() error              { return nil }
func (nopListener) Addr() net.Addr            { return &net.TCPAddr{} }
