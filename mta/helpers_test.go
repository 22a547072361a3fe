package mta

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"minimail/mda"
	"minimail/mta/delivery"
	"minimail/mta/msgauth"
	"minimail/mta/tlstest"
	"minimail/store"
)

const (
	testHost = "mx.example.org"
	testPass = "correct horse"
)

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// env is a running MX and submission server pair over one real store.
type env struct {
	t       testing.TB
	st      *store.Store
	agent   *mda.Agent
	queue   *fakeQueue
	logs    *syncBuffer
	mx, sub *Server
	// Addresses: MX (plain, STARTTLS), submission 587 (STARTTLS), 465.
	mxAddr, subAddr, subsAddr string
	clientTLS                 *tls.Config
}

// newEnv starts the servers with test options, changed by mod. Local is
// the real mda.Agent unless mod replaces it via local.
func newEnv(t testing.TB, mod func(o *Options, local *Local)) *env {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice@example.org", "bob@example.org"} {
		if err := st.AddUser(u, testPass); err != nil {
			t.Fatal(err)
		}
	}
	serverTLS, clientTLS := tlstest.Pair(t, testHost)
	e := &env{t: t, st: st, agent: &mda.Agent{Mailboxes: st}, queue: &fakeQueue{}, logs: &syncBuffer{}, clientTLS: clientTLS}
	opts := Options{
		LoginName:           store.LoginName,
		Hostname:            testHost,
		Domains:             []string{"Example.ORG"},
		TLSConfig:           serverTLS,
		MaxConnectionsPerIP: 300,
		AuthFailDelay:       -1,
		// No wait before the greeting: hundreds of MX connections; the
		// default wait has tests of its own (antispam_test.go).
		GreetDelay: -1,
		Now:        func() time.Time { return testNow },
		Logger:     slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	var local Local = e.agent
	if mod != nil {
		mod(&opts, &local)
	}
	e.mx = NewMX(local, opts)
	e.sub = NewSubmission(local, e.queue, storeUsers{st}, opts)
	e.mxAddr = e.serve(e.mx, nil)
	e.subAddr = e.serve(e.sub, nil)
	e.subsAddr = e.serve(e.sub, ServerTLSConfig(serverTLS))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.mx.Shutdown(ctx); err != nil {
			t.Errorf("mx shutdown: %v", err)
		}
		if err := e.sub.Shutdown(ctx); err != nil {
			t.Errorf("submission shutdown: %v", err)
		}
		st.Close()
		if strings.Contains(e.logs.String(), "panic") {
			t.Errorf("server logged a panic:\n%s", e.logs)
		}
	})
	return e
}

// serve runs s on a fresh loopback listener, with TLS when cfg is set.
func (e *env) serve(s *Server, cfg *tls.Config) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	if cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	e.t.Cleanup(func() {
		if err := <-done; err != nil {
			e.t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// mailbox returns the messages stored for addr, oldest first.
func (e *env) mailbox(addr string) [][]byte {
	e.t.Helper()
	infos, err := e.st.List(addr)
	if err != nil {
		e.t.Fatal(err)
	}
	var out [][]byte
	for _, in := range infos {
		m, err := e.st.Read(addr, in.ID)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// submitWithHeader sends, as alice over implicit TLS, one message to a
// remote recipient whose header section starts with header, and returns
// the final reply line: the From: and Sender: checks in one call.
func (e *env) submitWithHeader(t testing.TB, header string) string {
	t.Helper()
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	return cl.send("alice@example.org", []string{"carol@remote.test"}, header+"Subject: x\r\n\r\nx\r\n")
}

// fakeQueue records what is enqueued, or fails with err.
type fakeQueue struct {
	mu   sync.Mutex
	err  error
	got  []queued
	dsns []delivery.DSN // the RFC 3461 request of each entry of got
}

type queued struct {
	ID    string
	From  string
	Rcpts []string
	Msg   []byte
}

func (q *fakeQueue) Enqueue(id, from string, rcpts []string, msg []byte) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return "", q.err
	}
	q.got = append(q.got, queued{id, from, append([]string(nil), rcpts...), append([]byte(nil), msg...)})
	q.dsns = append(q.dsns, delivery.DSN{})
	return id, nil
}

// EnqueueDSN makes the fake a DSNQueue, so submission offers DSN.
func (q *fakeQueue) EnqueueDSN(id, from string, rcpts []string, msg []byte, p delivery.DSN) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return "", q.err
	}
	q.got = append(q.got, queued{id, from, append([]string(nil), rcpts...), append([]byte(nil), msg...)})
	q.dsns = append(q.dsns, p)
	return id, nil
}

func (q *fakeQueue) entries() []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queued(nil), q.got...)
}

// newFailingEnv is newEnv with a failingLocal in front of the store.
func newFailingEnv(t *testing.T) (*env, *failingLocal) {
	var fail *failingLocal
	e := newEnv(t, func(_ *Options, l *Local) {
		fail = &failingLocal{Local: *l}
		*l = fail
	})
	return e, fail
}

// failingLocal wraps a Local and fails Resolve or Deliver on demand;
// partial fails Deliver for the last recipient only, after storing the
// others.
type failingLocal struct {
	Local
	resolveErr, deliverErr, partial error
}

func (f *failingLocal) Resolve(rcpt string) (string, error) {
	if f.resolveErr != nil {
		return "", f.resolveErr
	}
	return f.Local.Resolve(rcpt)
}

func (f *failingLocal) Deliver(from string, rcpts []string, msg []byte) []error {
	if f.deliverErr != nil {
		errs := make([]error, len(rcpts))
		for i := range errs {
			errs[i] = f.deliverErr
		}
		return errs
	}
	if f.partial != nil && len(rcpts) > 1 {
		errs := f.Local.Deliver(from, rcpts[:len(rcpts)-1], msg)
		return append(errs, f.partial)
	}
	return f.Local.Deliver(from, rcpts, msg)
}

// verifyWith runs the real checks of v on the MX. Only their Deliver is
// taken as such; any other verdict defers the message with msgauth's
// reason, so no test expecting a 250 passes on one (serve.go maps each
// verdict to its own reply; TestMX_VerifyHook pins those replies).
func verifyWith(v *msgauth.Verifier) func(context.Context, net.IP, string, string, []byte) (Verdict, error) {
	return func(ctx context.Context, ip net.IP, helo, mailFrom string, msg []byte) (Verdict, error) {
		got, err := v.Verify(ctx, ip, helo, mailFrom, msg)
		if err != nil || got.Disposition != msgauth.Deliver {
			return Verdict{Disposition: Defer, Reason: "msgauth: " + got.Reason}, err
		}
		return Verdict{Message: got.Message, Prepend: got.Field}, nil
	}
}

// tempError is a storage failure that says it is temporary.
type tempError struct{ msg string }

func (e tempError) Error() string   { return e.msg }
func (e tempError) Temporary() bool { return true }

// permError is a failure that says no retry will help.
type permError struct{ msg string }

func (e permError) Error() string   { return e.msg }
func (e permError) Temporary() bool { return false }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// client is a raw SMTP connection that reads like a transcript.
type client struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

// dial connects and reads the greeting.
func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, c)
	cl.expect("220 " + testHost)
	return cl
}

// dialTLS connects with implicit TLS and reads the greeting.
func dialTLS(t testing.TB, addr string, cfg *tls.Config) *client {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, c)
	cl.expect("220 " + testHost)
	return cl
}

func newClient(t testing.TB, c net.Conn) *client {
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

// starttls upgrades the connection after a 220 to STARTTLS.
func (cl *client) starttls(cfg *tls.Config) {
	cl.t.Helper()
	cl.cmd("STARTTLS", "220 2.0.0")
	tc := tls.Client(cl.c, cfg)
	if err := tc.Handshake(); err != nil {
		cl.t.Fatal(err)
	}
	cl.c, cl.r = tc, bufio.NewReader(tc)
}

func (cl *client) write(s string) {
	cl.t.Helper()
	if _, err := io.WriteString(cl.c, s); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

// reply reads one complete (possibly multi-line) reply.
func (cl *client) reply() (lines []string, err error) {
	for {
		line, err := cl.r.ReadString('\n')
		if err != nil {
			return lines, err
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return lines, nil
		}
	}
}

// expect reads a reply whose last line starts with want, and returns all
// its lines.
func (cl *client) expect(want string) []string {
	cl.t.Helper()
	lines, err := cl.reply()
	if err != nil {
		cl.t.Fatalf("want %q, got %q and %v", want, lines, err)
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, want) {
		cl.t.Fatalf("want %q, got %q", want, strings.Join(lines, " | "))
	}
	return lines
}

// cmd sends one command line and expects a reply starting with want.
func (cl *client) cmd(line, want string) []string {
	cl.t.Helper()
	cl.write(line + "\r\n")
	return cl.expect(want)
}

// expectClosed checks that the server has closed the connection.
func (cl *client) expectClosed() {
	cl.t.Helper()
	lines, err := cl.reply()
	if err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset")) {
		cl.t.Fatalf("want connection closed, got %q, %v", lines, err)
	}
}

// login runs EHLO and AUTH PLAIN as alice.
func (cl *client) login(user string) {
	cl.t.Helper()
	cl.cmd("EHLO client.test", "250 ")
	cl.cmd("AUTH PLAIN "+plain("", user, testPass), "235 2.0.0")
}

func plain(authz, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
}

// send runs one transaction with msg (CRLF text, dot-stuffed by the
// caller) and returns the final reply line.
func (cl *client) send(from string, rcpts []string, msg string) string {
	cl.t.Helper()
	cl.cmd("MAIL FROM:<"+from+">", "250 ")
	for _, r := range rcpts {
		cl.cmd("RCPT TO:<"+r+">", "250 ")
	}
	cl.cmd("DATA", "354 ")
	cl.write(msg + ".\r\n")
	lines, err := cl.reply()
	if err != nil {
		cl.t.Fatalf("after DATA: %v", err)
	}
	return lines[len(lines)-1]
}

// replyID extracts the transaction id from a "250 2.0.0 OK id=..." reply.
func replyID(t testing.TB, reply string) string {
	t.Helper()
	_, id, ok := strings.Cut(reply, "id=")
	if !ok {
		t.Fatalf("no id in %q", reply)
	}
	return id
}

// body returns what follows the header section of a stored message.
func body(msg []byte) []byte {
	_, b, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	return b
}

// onlyCRLF reports whether every CR and LF in b is part of a CRLF.
func onlyCRLF(b []byte) bool {
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '\r' && (i+1 == len(b) || b[i+1] != '\n'):
			return false
		case b[i] == '\n' && (i == 0 || b[i-1] != '\r'):
			return false
		}
	}
	return true
}

func itoa(n int) string { return strconv.Itoa(n) }

// storeUsers is the store as Users, its errors in this package's words (as
// cmd/minimail wires it).
type storeUsers struct{ st *store.Store }

func (u storeUsers) Authenticate(authz, user, password string) (string, error) {
	addr, err := u.st.Authenticate(authz, user, password)
	switch {
	case errors.Is(err, store.ErrBadPassword):
		return "", ErrAuthFailed
	case errors.Is(err, store.ErrNotAuthorized):
		return "", ErrNotAuthorized
	}
	return addr, err
}
