package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"minimail/mta/dnstest"
	"minimail/mta/remote/smtptest"
	"minimail/mta/tlstest"
)

const testMsg = "From: bob@a.test\r\nTo: x@b.test\r\nSubject: hi\r\n\r\nhello\r\n.\r\n..dots\r\n"

// mapDialer sends each dialled address to a real loopback listener and
// records the order of the attempts; unknown addresses go to anyAddr,
// or are refused when it is "".
type mapDialer struct {
	mu      sync.Mutex
	to      map[string]string
	anyAddr string
	dialed  []string
}

func (d *mapDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, addr)
	target, ok := d.to[addr]
	if !ok && d.anyAddr != "" {
		target, ok = d.anyAddr, true
	}
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, target)
}

func (d *mapDialer) Dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dialed...)
}

// routed returns a client sending b.test to srv.
func routed(srv *smtptest.Server) *Client {
	return &Client{Hostname: "mx.a.test", Routes: map[string]string{"b.test": srv.Addr}, Timeout: 5 * time.Second}
}

// wantErr checks a per-recipient result: "" for accepted, else the
// enhanced status and whether it is temporary.
func wantErr(t *testing.T, i int, got error, status string, temporary bool) {
	t.Helper()
	if status == "" {
		if got != nil {
			t.Errorf("rcpt %d: %v, want accepted", i, got)
		}
		return
	}
	var e *Error
	if !errors.As(got, &e) {
		t.Fatalf("rcpt %d: %v (%T), want *Error %s", i, got, got, status)
	}
	if e.Status() != status || e.Temporary() != temporary {
		t.Errorf("rcpt %d: %v: status %s temporary %v, want %s %v", i, e, e.Status(), e.Temporary(), status, temporary)
	}
}

func TestDeliverPerRecipientResultsOverOneConnection(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Rcpt: func(rcpt string) error {
		switch rcpt {
		case "bad@b.test":
			return smtptest.Reply(550, 5, 1, 1, "no such user")
		case "later@b.test":
			return smtptest.Reply(451, 4, 2, 0, "mailbox busy")
		}
		return nil
	}})
	c := routed(srv)
	rcpts := []string{"x@b.test", "bad@b.test", "later@b.test", "y@B.test"}
	res := c.Deliver(context.Background(), "bob@a.test", rcpts, []byte(testMsg))
	wantErr(t, 0, res[0], "", false)
	wantErr(t, 1, res[1], "5.1.1", false)
	wantErr(t, 2, res[2], "4.2.0", true)
	wantErr(t, 3, res[3], "", false)
	var e *Error
	errors.As(res[1], &e)
	if got, want := e.Diagnostic(), "smtp; 550 5.1.1 no such user"; got != want {
		t.Errorf("Diagnostic = %q, want %q", got, want)
	}
	if srv.Sessions() != 1 {
		t.Errorf("%d sessions, want one connection for all recipients", srv.Sessions())
	}
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Helo != "mx.a.test" || m.From != "bob@a.test" || strings.Join(m.Rcpts, ",") != "x@b.test,y@B.test" {
		t.Errorf("transaction = helo %q from %q rcpts %v", m.Helo, m.From, m.Rcpts)
	}
	if string(m.Data) != testMsg {
		t.Errorf("data = %q, want %q (dot-stuffing must round-trip)", m.Data, testMsg)
	}
}

func TestDeliverDataReply(t *testing.T) {
	tests := []struct {
		name      string
		reply     error
		status    string
		temporary bool
	}{
		{"accepted", nil, "", false},
		{"451 defers all", smtptest.Reply(451, 4, 3, 0, "try later"), "4.3.0", true},
		{"554 fails all", smtptest.Reply(554, 5, 6, 0, "content rejected"), "5.6.0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{Data: func(smtptest.Message) error { return tt.reply }})
			res := routed(srv).Deliver(context.Background(), "", []string{"x@b.test", "y@b.test"}, []byte(testMsg))
			for i := range res {
				wantErr(t, i, res[i], tt.status, tt.temporary)
			}
		})
	}
}

func TestDeliverMXPreferenceOrder(t *testing.T) {
	mx1 := smtptest.Start(t, smtptest.Options{})
	mx2 := smtptest.Start(t, smtptest.Options{})
	dns := dnstest.Start(t,
		"b.test. 60 IN MX 20 mx1.b.test.",
		"b.test. 60 IN MX 10 mx2.b.test.",
		"mx1.b.test. 60 IN A 192.0.2.1",
		"mx2.b.test. 60 IN A 192.0.2.2",
	)
	tests := []struct {
		name   string
		up     map[string]string
		dialed []string
		want   *smtptest.Server
	}{
		{"lowest preference first", map[string]string{"192.0.2.1:25": mx1.Addr, "192.0.2.2:25": mx2.Addr},
			[]string{"192.0.2.2:25"}, mx2},
		{"next MX when the best is down", map[string]string{"192.0.2.1:25": mx1.Addr},
			[]string{"192.0.2.2:25", "192.0.2.1:25"}, mx1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &mapDialer{to: tt.up}
			// The MX hosts live at documentation addresses, which only
			// tests may dial.
			c := &Client{Hostname: "mx.a.test", DNS: dns.Addr, Dialer: d, AllowInternal: true, Timeout: 5 * time.Second}
			res := c.Deliver(context.Background(), "bob@a.test", []string{"x@b.test"}, []byte(testMsg))
			wantErr(t, 0, res[0], "", false)
			if got := d.Dialed(); strings.Join(got, " ") != strings.Join(tt.dialed, " ") {
				t.Errorf("dialed %v, want %v", got, tt.dialed)
			}
			if m := tt.want.Wait(t); m.Rcpts[0] != "x@b.test" {
				t.Errorf("got %v", m.Rcpts)
			}
		})
	}
}

func TestDeliverDNSOutcomes(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	dns := dnstest.Start(t,
		"c.test. 60 IN A 192.0.2.3",
		"null.test. 60 IN MX 0 .",
		"null.test. 60 IN A 192.0.2.4",
		"nohost.test. 60 IN MX 10 gone.nohost.test.",
	)
	dns.Fail("broken.test")
	tests := []struct {
		name      string
		rcpt      string
		status    string
		temporary bool
		dialed    []string
	}{
		{"no MX falls back to A (RFC 5321 5.1)", "x@c.test", "", false, []string{"192.0.2.3:25"}},
		{"null MX fails at once (RFC 7505)", "x@null.test", "5.1.10", false, nil},
		{"domain does not exist", "x@nxdomain.test", "5.1.2", false, nil},
		{"SERVFAIL is temporary", "x@broken.test", "4.4.3", true, nil},
		{"MX host without address is temporary", "x@nohost.test", "4.4.3", true, nil},
		{"address literal", "x@[192.0.2.3]", "", false, []string{"192.0.2.3:25"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &mapDialer{to: map[string]string{"192.0.2.3:25": srv.Addr, "192.0.2.4:25": srv.Addr}}
			c := &Client{Hostname: "mx.a.test", DNS: dns.Addr, Dialer: d, AllowInternal: true, Timeout: 5 * time.Second}
			res := c.Deliver(context.Background(), "bob@a.test", []string{tt.rcpt}, []byte(testMsg))
			wantErr(t, 0, res[0], tt.status, tt.temporary)
			if got := d.Dialed(); strings.Join(got, " ") != strings.Join(tt.dialed, " ") {
				t.Errorf("dialed %v, want %v", got, tt.dialed)
			}
		})
	}
}

func TestDeliverDNSTimeoutIsTemporary(t *testing.T) {
	dns := dnstest.Start(t)
	dns.Hang("slow.test")
	c := &Client{Hostname: "mx.a.test", DNS: dns.Addr, Dialer: &mapDialer{}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res := c.Deliver(ctx, "bob@a.test", []string{"x@slow.test"}, []byte(testMsg))
	wantErr(t, 0, res[0], "4.4.3", true)
}

func TestDeliverUnreachable(t *testing.T) {
	tests := []struct {
		name   string
		client func(t *testing.T) *Client
		status string
	}{
		{"connection refused", func(t *testing.T) *Client {
			return &Client{Hostname: "mx.a.test", Routes: map[string]string{"b.test": smtptest.DownAddr(t)}}
		}, "4.4.1"},
		{"server never greets", func(t *testing.T) *Client {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					t.Cleanup(func() { conn.Close() })
				}
			}()
			return &Client{Hostname: "mx.a.test", Routes: map[string]string{"b.test": l.Addr().String()}, Timeout: 200 * time.Millisecond}
		}, "4.4.2"},
		{"bad route", func(t *testing.T) *Client {
			return &Client{Hostname: "mx.a.test", Routes: map[string]string{"b.test": "no-port"}}
		}, "4.3.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.client(t).Deliver(context.Background(), "bob@a.test", []string{"x@b.test", "y@b.test"}, []byte(testMsg))
			wantErr(t, 0, res[0], tt.status, true)
			wantErr(t, 1, res[1], tt.status, true)
		})
	}
}

func TestDeliverOpportunisticSTARTTLS(t *testing.T) {
	serverTLS, clientTLS := tlstest.Pair(t, "mx.b.test")
	srv := smtptest.Start(t, smtptest.Options{TLSConfig: serverTLS})
	tests := []struct {
		name string
		cfg  *tls.Config
		log  string
	}{
		{"unverifiable certificate still encrypts", nil, "tls=unverified"},
		{"verified certificate", clientTLS, "tls=verified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			c := routed(srv)
			c.TLSConfig = tt.cfg
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			res := c.Deliver(context.Background(), "bob@a.test", []string{"x@b.test"}, []byte(testMsg))
			wantErr(t, 0, res[0], "", false)
			if m := srv.Wait(t); !m.TLS || m.Helo != "mx.a.test" {
				t.Errorf("message over TLS %v with EHLO %q, want TLS and our hostname", m.TLS, m.Helo)
			}
			if !strings.Contains(logs.String(), tt.log+" ") {
				t.Errorf("log %q lacks %q", logs.String(), tt.log)
			}
		})
	}
}

func TestDeliverFailedHandshakeFallsBackToPlainText(t *testing.T) {
	serverTLS, clientTLS := tlstest.Pair(t)
	serverTLS.MinVersion = tls.VersionTLS13
	clientTLS.MaxVersion = tls.VersionTLS12
	t.Run("opportunistic", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{TLSConfig: serverTLS})
		c := routed(srv)
		c.TLSConfig = clientTLS
		res := c.Deliver(context.Background(), "bob@a.test", []string{"x@b.test"}, []byte(testMsg))
		wantErr(t, 0, res[0], "", false)
		if m := srv.Wait(t); m.TLS || srv.Sessions() != 2 {
			t.Errorf("TLS %v after %d sessions, want a second, plain-text session", m.TLS, srv.Sessions())
		}
	})
	t.Run("smarthost with credentials never falls back", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{TLSConfig: serverTLS, Username: "relay", Password: "pw"})
		c := &Client{Hostname: "mx.a.test", Smarthost: srv.Addr, SmarthostUsername: "relay", SmarthostPassword: "pw", TLSConfig: clientTLS, Timeout: 5 * time.Second}
		res := c.Deliver(context.Background(), "bob@a.test", []string{"x@far.test"}, []byte(testMsg))
		wantErr(t, 0, res[0], "4.7.0", true)
		if srv.Mails() != 0 {
			t.Error("mail sent without TLS")
		}
	})
}

func TestDeliverSmarthostCredentials(t *testing.T) {
	serverTLS, clientTLS := tlstest.Pair(t)
	auth := smtptest.Options{TLSConfig: serverTLS, Username: "relay", Password: "s3cret"}
	tests := []struct {
		name     string
		opts     smtptest.Options
		roots    bool
		password string
		status   string
	}{
		{"AUTH PLAIN over verified TLS", auth, true, "s3cret", ""},
		{"no STARTTLS: credentials not sent", smtptest.Options{Username: "relay", Password: "s3cret"}, true, "s3cret", "4.7.0"},
		{"unverifiable certificate: credentials not sent", auth, false, "s3cret", "4.7.0"},
		{"wrong password defers", auth, true, "wrong", "4.7.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := smtptest.Start(t, tt.opts)
			c := &Client{Hostname: "mx.a.test", Smarthost: srv.Addr, SmarthostUsername: "relay", SmarthostPassword: tt.password, Timeout: 5 * time.Second}
			if tt.roots {
				c.TLSConfig = clientTLS
			}
			res := c.Deliver(context.Background(), "bob@a.test", []string{"x@far.test"}, []byte(testMsg))
			wantErr(t, 0, res[0], tt.status, tt.status != "")
			if tt.status == "" {
				if m := srv.Wait(t); m.AuthUser != "relay" || !m.TLS {
					t.Errorf("auth user %q tls %v", m.AuthUser, m.TLS)
				}
			} else if srv.Mails() != 0 {
				t.Errorf("MAIL sent although the smarthost session failed")
			}
		})
	}
}

func TestDeliverRoutesBeforeSmarthost(t *testing.T) {
	routedSrv := smtptest.Start(t, smtptest.Options{})
	smart := smtptest.Start(t, smtptest.Options{})
	c := &Client{Hostname: "mx.a.test", Routes: map[string]string{"b.test": routedSrv.Addr}, Smarthost: smart.Addr, Timeout: 5 * time.Second}
	for _, rcpt := range []string{"x@b.test", "x@c.test"} {
		if res := c.Deliver(context.Background(), "bob@a.test", []string{rcpt}, []byte(testMsg)); res[0] != nil {
			t.Fatal(res[0])
		}
	}
	if len(routedSrv.Messages()) != 1 || len(smart.Messages()) != 1 || smart.Messages()[0].Rcpts[0] != "x@c.test" {
		t.Fatalf("route got %v, smarthost got %v", routedSrv.Messages(), smart.Messages())
	}
}

func TestDeliverRouteKeysMatchAnyCaseAndTrailingDot(t *testing.T) {
	tests := []struct {
		name string
		key  string
		rcpt string
	}{
		{"mixed-case key", "Sink.Test", "x@sink.test"},
		{"key with a trailing dot", "sink.test.", "x@sink.test"},
		{"upper-case key with a trailing dot", "SINK.TEST.", "x@Sink.Test."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{})
			// A route that does not match falls through to DNS, which
			// knows no sink.test.
			dns := dnstest.Start(t)
			c := &Client{Hostname: "mx.a.test", Routes: map[string]string{tt.key: srv.Addr}, DNS: dns.Addr, Timeout: 5 * time.Second}
			res := c.Deliver(context.Background(), "bob@a.test", []string{tt.rcpt}, []byte(testMsg))
			wantErr(t, 0, res[0], "", false)
			if len(srv.Messages()) != 1 {
				t.Errorf("the route's server got %d messages, want 1", len(srv.Messages()))
			}
		})
	}
	t.Run("a normalized key wins over one that only matches", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{})
		c := &Client{Hostname: "mx.a.test", Timeout: 5 * time.Second,
			Routes: map[string]string{"Sink.Test": smtptest.DownAddr(t), "sink.test": srv.Addr, "SINK.TEST.": smtptest.DownAddr(t)}}
		res := c.Deliver(context.Background(), "bob@a.test", []string{"x@sink.test"}, []byte(testMsg))
		wantErr(t, 0, res[0], "", false)
	})
}

func TestDNSErrorsNameTheResolverAsked(t *testing.T) {
	dns := dnstest.Start(t, "nohost.test. 60 IN MX 10 gone.nohost.test.")
	dns.Fail("broken.test")
	for _, rcpt := range []string{"x@broken.test", "x@nohost.test"} {
		t.Run(rcpt, func(t *testing.T) {
			c := &Client{Hostname: "mx.a.test", DNS: dns.Addr, Dialer: &mapDialer{}}
			res := c.Deliver(context.Background(), "bob@a.test", []string{rcpt}, []byte(testMsg))
			wantErr(t, 0, res[0], "4.4.3", true)
			var dnsErr *net.DNSError
			if !strings.Contains(res[0].Error(), " via "+dns.Addr+" ") || !errors.As(res[0], &dnsErr) || dnsErr.Server != "" {
				t.Errorf("error %q should name %s and no other server", res[0], dns.Addr)
			}
		})
	}
	// Go's own error names a server of /etc/resolv.conf: true of the
	// system resolver, so it stays, but false of relay.dns.
	goErr := &net.DNSError{Err: "server misbehaving", Name: "b.test.", Server: "127.0.0.53:53"}
	tests := []struct{ dns, want string }{
		{"", "DNS lookup for b.test via system resolver failed: lookup b.test. on 127.0.0.53:53: server misbehaving"},
		{"192.0.2.53:53", "DNS lookup for b.test via 192.0.2.53:53 failed: lookup b.test.: server misbehaving"},
	}
	for _, tt := range tests {
		c := &Client{DNS: tt.dns}
		if got := c.errDNS("b.test", goErr).Error(); got != tt.want {
			t.Errorf("DNS %q: error %q, want %q", tt.dns, got, tt.want)
		}
	}
}

func TestDeliverRespectsExtensions(t *testing.T) {
	big := []byte(testMsg + strings.Repeat("x", 300) + "\r\n")
	tests := []struct {
		name   string
		opts   smtptest.Options
		rcpt   string
		msg    []byte
		status string
	}{
		{"over remote SIZE fails without MAIL", smtptest.Options{MaxMessageBytes: 200}, "x@b.test", big, "5.3.4"},
		{"under remote SIZE", smtptest.Options{MaxMessageBytes: 2000}, "x@b.test", big, ""},
		{"UTF-8 address without SMTPUTF8", smtptest.Options{}, "jürgen@b.test", []byte(testMsg), "5.6.7"},
		{"UTF-8 address with SMTPUTF8", smtptest.Options{SMTPUTF8: true}, "jürgen@b.test", []byte(testMsg), ""},
		{"8-bit body is sent as is", smtptest.Options{}, "x@b.test", []byte("Subject: caf\xc3\xa9\r\n\r\ncaf\xc3\xa9\r\n"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := smtptest.Start(t, tt.opts)
			res := routed(srv).Deliver(context.Background(), "bob@a.test", []string{tt.rcpt}, tt.msg)
			wantErr(t, 0, res[0], tt.status, false)
			if tt.status != "" && srv.Mails() != 0 {
				t.Errorf("MAIL sent for a message the server cannot take")
			}
			if tt.status == "" && !bytes.Equal(srv.Wait(t).Data, tt.msg) {
				t.Errorf("message altered in transit")
			}
		})
	}
}

func TestDeliverCancelledContextIsTemporary(t *testing.T) {
	block := make(chan struct{})
	started := make(chan struct{}, 1)
	srv := smtptest.Start(t, smtptest.Options{
		Rcpt: func(string) error { started <- struct{}{}; return nil },
		Data: func(smtptest.Message) error { <-block; return nil },
	})
	defer close(block)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []error)
	go func() { done <- routed(srv).Deliver(ctx, "bob@a.test", []string{"x@b.test"}, []byte(testMsg)) }()
	<-started
	cancel()
	res := <-done
	if res[0] == nil || !res[0].(*Error).Temporary() {
		t.Fatalf("cancelled delivery: %v, want a temporary error", res[0])
	}
}

var statusRE = regexp.MustCompile(`^[45]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// FuzzReplyError feeds arbitrary remote replies through the error that
// ends up in logs and DSN header fields: whatever the server says, the
// status must be well formed and no CR or LF may escape into a header.
func FuzzReplyError(f *testing.F) {
	f.Add(550, 5, 1, 1, "no such user")
	f.Add(451, 0, 0, 0, "line one\r\nline two")
	f.Add(250, 2, 0, 0, "ok")
	f.Add(421, 4, 9, 999999, "\n")
	f.Fuzz(func(t *testing.T, code, class, subject, detail int, text string) {
		e := replyError("mx.b.test", smtptest.Reply(code, class, subject, detail, text))
		if !statusRE.MatchString(e.Status()) {
			t.Fatalf("status %q from %d %d.%d.%d", e.Status(), code, class, subject, detail)
		}
		for _, s := range []string{e.Error(), e.Diagnostic()} {
			if strings.ContainsAny(s, "\r\n") {
				t.Fatalf("line break in %q", s)
			}
		}
		if e.Temporary() != strings.HasPrefix(e.Status(), "4") {
			t.Fatalf("temporary %v for status %s", e.Temporary(), e.Status())
		}
	})
}
