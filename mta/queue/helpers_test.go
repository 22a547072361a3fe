package queue

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"minimail/mda"
	"minimail/mta/remote"
	"minimail/mta/remote/smtptest"
	"minimail/store"
)

// fakeClock is the queue's clock in tests: time moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// syncBuffer collects log output from concurrent deliveries.
// Each "finished" event is also signalled on finished.
type syncBuffer struct {
	mu       sync.Mutex
	b        bytes.Buffer
	finished chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Contains(p, []byte("msg=finished ")) {
		select {
		case s.finished <- struct{}{}:
		default:
		}
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

// env is server A of the tests: local domain a.test with user bob, a real
// store and mda.Agent, and a remote client routing each other domain to a
// test server's address.
type env struct {
	t      *testing.T
	dir    string
	st     *store.Store
	q      *Queue
	clock  *fakeClock
	logs   *syncBuffer
	routes map[string]string
	opts   Options
}

func newEnv(t *testing.T, routes map[string]string, tune func(*Options)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: &fakeClock{t: t0}, logs: &syncBuffer{finished: make(chan struct{}, 100)}, routes: routes}
	e.opts = Options{Hostname: "mx.a.test", LocalDomains: []string{"a.test"}}
	if tune != nil {
		tune(&e.opts)
	}
	e.open()
	if err := e.st.AddUser("bob@a.test", "pw"); err != nil {
		t.Fatal(err)
	}
	return e
}

// open opens the store and builds a queue over it, as serve would at start.
func (e *env) open() {
	e.t.Helper()
	st, err := store.Open(e.dir, store.Options{BcryptCost: 4})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { st.Close() })
	e.st = st
	opts := e.opts
	opts.Now = e.clock.Now
	opts.Logger = slog.New(slog.NewTextHandler(e.logs, nil))
	if opts.Remote == nil {
		opts.Remote = &remote.Client{Hostname: "mx.a.test", Routes: e.routes, Timeout: 5 * time.Second}
	}
	if opts.Local == nil {
		opts.Local = &mda.Agent{Mailboxes: st}
	}
	e.q = New(st, opts)
}

// restart closes the store and opens it again with a fresh queue.
func (e *env) restart() {
	e.t.Helper()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) enqueue(from string, rcpts ...string) string {
	e.t.Helper()
	id, err := e.q.Enqueue("", from, rcpts, []byte("From: "+from+"\r\nSubject: lunch\r\nMessage-ID: <m1@a.test>\r\n\r\nsee you at noon\r\n"))
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// waitFinished waits for an entry to leave the queue under Run.
func (e *env) waitFinished() {
	e.t.Helper()
	select {
	case <-e.logs.finished:
	case <-time.After(10 * time.Second):
		e.t.Fatalf("no entry finished:\n%s", e.logs)
	}
}

func (e *env) runOnce() {
	e.t.Helper()
	if err := e.q.RunOnce(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) entries() []store.QueueEntry {
	e.t.Helper()
	all, err := e.q.List()
	if err != nil {
		e.t.Fatal(err)
	}
	return all
}

// mailbox returns the messages in addr's mailbox.
func (e *env) mailbox(addr string) [][]byte {
	e.t.Helper()
	infos, err := e.st.List(addr)
	if err != nil {
		e.t.Fatal(err)
	}
	var out [][]byte
	for _, in := range infos {
		b, err := e.st.Read(addr, in.ID)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// runUntilEmpty steps the clock to each entry's next attempt and runs a
// pass, until the queue is empty or limit passes have run.
func (e *env) runUntilEmpty(limit int) int {
	e.t.Helper()
	for n := 1; n <= limit; n++ {
		e.runOnce()
		all := e.entries()
		if len(all) == 0 {
			return n
		}
		next := all[0].NextAttempt
		for _, en := range all {
			if en.NextAttempt.Before(next) {
				next = en.NextAttempt
			}
		}
		if next.After(e.clock.Now()) {
			e.clock.Set(next)
		}
	}
	e.t.Fatalf("queue not empty after %d passes: %+v", limit, e.entries())
	return 0
}

// counter answers the nth call of a hook; safe for concurrent sessions.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) next() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n
}

// tempFail answers 451 to the first n RCPTs, then accepts.
func tempFail(n int) func(string) error {
	c := &counter{}
	return func(string) error {
		if c.next() <= n {
			return smtptest.Reply(451, 4, 3, 0, "try again later")
		}
		return nil
	}
}

// dsn is a parsed delivery status notification.
type dsn struct {
	header      message.Header
	text        string
	statusType  string
	perMessage  textproto.Header
	rcpts       []textproto.Header
	headersType string
	headers     string
}

// parseDSN reads a notice with go-message and checks its RFC 3464 shape.
func parseDSN(raw []byte) (*dsn, error) {
	ent, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	d := &dsn{header: ent.Header}
	mt, params, err := ent.Header.ContentType()
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		return nil, fmt.Errorf("content type %q %v %v", mt, params, err)
	}
	mr := ent.MultipartReader()
	var parts []*message.Entity
	var bodies [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", len(parts), err)
		}
		b, err := io.ReadAll(p.Body)
		if err != nil {
			return nil, fmt.Errorf("part %d body: %w", len(parts), err)
		}
		parts = append(parts, p)
		bodies = append(bodies, b)
	}
	if len(parts) != 3 {
		return nil, fmt.Errorf("%d parts, want 3", len(parts))
	}
	types := make([]string, 3)
	for i, p := range parts {
		types[i], _, _ = p.Header.ContentType()
	}
	if types[0] != "text/plain" {
		return nil, fmt.Errorf("first part is %s", types[0])
	}
	d.text, d.statusType, d.headersType, d.headers = string(bodies[0]), types[1], types[2], string(bodies[2])
	blocks := strings.Split(strings.TrimRight(string(bodies[1]), "\r\n"), "\r\n\r\n")
	for i, blk := range blocks {
		h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(blk + "\r\n\r\n")))
		if err != nil {
			return nil, fmt.Errorf("status block %d: %w", i, err)
		}
		if i == 0 {
			d.perMessage = h
		} else {
			d.rcpts = append(d.rcpts, h)
		}
	}
	if d.perMessage.Get("Reporting-MTA") == "" {
		return nil, errors.New("no Reporting-MTA")
	}
	return d, nil
}

func mustDSN(t *testing.T, raw []byte) *dsn {
	t.Helper()
	d, err := parseDSN(raw)
	if err != nil {
		t.Fatalf("%v in\n%s", err, raw)
	}
	return d
}
