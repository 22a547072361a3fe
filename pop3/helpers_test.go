package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The fixture every transcript test starts from (testdata/dialog/README).
const (
	alice   = "alice@example.org"
	alicePW = "alice-pw"
	bob     = "bob@example.org"
	bobPW   = "bob has spaces"
	carol   = "carol@example.org" // empty mailbox
	carolPW = "carol-pw"

	msg1 = "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: one\r\n\r\n" +
		"Hello Alice.\r\n.leading dot\r\n..two dots\r\nbye\r\n"
	msg2 = "From: carol@example.org\r\nSubject: zwei\r\n\r\n" +
		"Grüße aus Köln\r\n.\r\nline after a lone dot\r\n"
	msg3 = "Subject: three\r\n\r\nshort\r\n"
)

// fixtureMaildrop holds alice with msg1..msg3 (ids 1..3), bob with one
// message and carol with none.
func fixtureMaildrop(t testing.TB) *fakeMaildrop {
	t.Helper()
	md := newFakeMaildrop()
	for _, u := range [][2]string{{alice, alicePW}, {bob, bobPW}, {carol, carolPW}} {
		md.users[u[0]] = u[1]
	}
	md.add(alice, msg1, msg2, msg3)
	md.add(bob, msg3)
	return md
}

// harness is a running server on 127.0.0.1.
type harness struct {
	srv   *Server
	addr  string
	ended chan struct{} // one value per finished session
}

// startServer serves md on a fresh loopback port until the test ends.
// Unless the options say otherwise, the host is pop.test and a wrong
// password costs no delay.
func startServer(t testing.TB, md Maildrop, opts Options) *harness {
	t.Helper()
	return startListener(t, md, opts, func(l net.Listener) net.Listener { return l })
}

// startPOP3S is startServer with implicit TLS, as for port 995: the
// listener is wrapped, the server sees *tls.Conn.
func startPOP3S(t testing.TB, md Maildrop, opts Options, serverTLS *tls.Config) *harness {
	t.Helper()
	return startListener(t, md, opts, func(l net.Listener) net.Listener { return tls.NewListener(l, serverTLS) })
}

func startListener(t testing.TB, md Maildrop, opts Options, wrap func(net.Listener) net.Listener) *harness {
	t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = "pop.test"
	}
	if opts.AuthFailDelay == 0 {
		opts.AuthFailDelay = -1
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: NewServer(md, opts), addr: l.Addr().String(), ended: make(chan struct{}, 1024)}
	h.srv.afterSession = func() { h.ended <- struct{}{} }
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(wrap(l)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return h
}

// waitEnded waits for n sessions to finish.
func (h *harness) waitEnded(t testing.TB, n int) {
	t.Helper()
	for range n {
		select {
		case <-h.ended:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}
	}
}

// client is a raw POP3 connection that checks replies line by line.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return newClient(t, conn)
}

func newClient(t testing.TB, conn net.Conn) *client {
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// dialTLS connects with implicit TLS (POP3S).
func dialTLS(t testing.TB, addr string, cfg *tls.Config) *client {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return newClient(t, conn)
}

// greeted dials and checks the greeting.
func greeted(t testing.TB, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect("+OK pop.test POP3 server ready")
	return c
}

func (c *client) send(lines ...string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")); err != nil {
		c.t.Fatalf("send %q: %v", lines, err)
	}
}

// line reads one reply line without its CRLF; a line not ending in CRLF
// fails the test.
func (c *client) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read after %q: %v", s, err)
	}
	if !strings.HasSuffix(s, "\r\n") {
		c.t.Fatalf("reply %q does not end in CRLF", s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

func (c *client) expect(want string) {
	c.t.Helper()
	if got := c.line(); got != want {
		c.t.Fatalf("got %q, want %q", got, want)
	}
}

func (c *client) expectPrefix(prefix string) string {
	c.t.Helper()
	got := c.line()
	if !strings.HasPrefix(got, prefix) {
		c.t.Fatalf("got %q, want prefix %q", got, prefix)
	}
	return got
}

// cmd sends one command and checks the status line's prefix.
func (c *client) cmd(line, prefix string) string {
	c.t.Helper()
	c.send(line)
	return c.expectPrefix(prefix)
}

// expectEOF checks that the server closed the connection.
func (c *client) expectEOF() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if s, err := c.r.ReadString('\n'); err == nil || s != "" {
		c.t.Fatalf("got %q (%v), want the connection closed", s, err)
	}
}

// body reads a multi-line response body up to the "." line and undoes the
// dot-stuffing, returning exactly the octets the server meant.
func (c *client) body() []byte {
	c.t.Helper()
	var out bytes.Buffer
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		line, err := c.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			out.Write(line)
			continue
		}
		if err != nil {
			c.t.Fatalf("reading body: %v", err)
		}
		if string(line) == ".\r\n" {
			return out.Bytes()
		}
		if line[0] == '.' {
			line = line[1:]
		}
		out.Write(line)
	}
}

// login uses USER/PASS and expects success.
func (c *client) login(user, pass string) {
	c.t.Helper()
	c.cmd("USER "+user, "+OK")
	c.cmd("PASS "+pass, "+OK")
}

// fakeMaildrop is an in-memory Maildrop, with the store's promises (ids
// never reused, login names case-insensitive), whose operations can be made
// to fail on demand.
type fakeMaildrop struct {
	mu        sync.Mutex
	users     map[string]string // address -> password
	boxes     map[string][]MessageInfo
	bodies    map[uint64][]byte
	nextID    uint64
	authErr   error // returned by Authenticate instead of checking
	listErr   error
	readErr   error
	deleteErr error
	deletes   [][]uint64 // every Delete call
}

// fakeEpoch stands in for the store's epoch in the UIDLs it gives,
// <epoch>-<id>.
const fakeEpoch = 0x5eed

func newFakeMaildrop() *fakeMaildrop {
	return &fakeMaildrop{users: map[string]string{}, boxes: map[string][]MessageInfo{}, bodies: map[uint64][]byte{}}
}

func (f *fakeMaildrop) add(addr string, msgs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range msgs {
		f.nextID++
		f.boxes[addr] = append(f.boxes[addr], MessageInfo{ID: f.nextID, UIDL: fmt.Sprintf("%016x-%d", fakeEpoch, f.nextID), Size: int64(len(m))})
		f.bodies[f.nextID] = []byte(m)
	}
}

// Authenticate has the store's rule for authz, less its spelling checks:
// empty or the login name in any case.
func (f *fakeMaildrop) Authenticate(authz, user, password string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.authErr != nil {
		return "", f.authErr
	}
	addr := strings.ToLower(user)
	if authz != "" && strings.ToLower(authz) != addr {
		return "", ErrNotAuthorized
	}
	if pw, ok := f.users[addr]; !ok || pw != password {
		return "", ErrAuthFailed
	}
	return addr, nil
}

// count is how many messages addr's maildrop holds.
func (f *fakeMaildrop) count(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.boxes[addr])
}

func (f *fakeMaildrop) List(addr string) ([]MessageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	return slices.Clone(f.boxes[addr]), nil
}

func (f *fakeMaildrop) Read(addr string, id uint64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readErr != nil {
		return nil, f.readErr
	}
	b, ok := f.bodies[id]
	if !ok {
		return nil, fmt.Errorf("message %d: %w", id, ErrNoMessage)
	}
	return b, nil
}

func (f *fakeMaildrop) Delete(addr string, ids []uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, slices.Clone(ids))
	if f.deleteErr != nil {
		return f.deleteErr
	}
	f.boxes[addr] = slices.DeleteFunc(f.boxes[addr], func(m MessageInfo) bool { return slices.Contains(ids, m.ID) })
	for _, id := range ids {
		delete(f.bodies, id)
	}
	return nil
}

var errInjected = errors.New("injected failure")

// testLoginName stands in for the store's rule: names with spaces are no
// address, others count in lower case.
func testLoginName(user string) (string, error) {
	if strings.ContainsAny(user, " \t") {
		return "", errors.New("login name: contains spaces")
	}
	return strings.ToLower(user), nil
}
