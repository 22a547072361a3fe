// Package smtptest runs SMTP servers on 127.0.0.1 for tests. A server
// records every message it accepts and answers RCPT and DATA as the test
// tells it, so a test can play a remote MX that is down, slow to accept
// (451 then 250), or refusing (550).
package smtptest

import (
	"bytes"
	"crypto/tls"
	"io"
	"log"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one accepted transaction.
type Message struct {
	Helo     string
	From     string
	Rcpts    []string
	Data     []byte
	TLS      bool
	AuthUser string // "" when the client did not authenticate
	// MailOpts and RcptOpts are the parameters of MAIL and of each RCPT
	// (in the order of Rcpts), as go-smtp parsed them: with DSN on, the
	// RFC 3461 ones a client passed on.
	MailOpts smtp.MailOptions
	RcptOpts []smtp.RcptOptions
}

// Options shape a server's behaviour.
type Options struct {
	// Addr to listen on; "" picks a free port on 127.0.0.1.
	Addr string
	// TLSConfig, when set, makes the server offer STARTTLS.
	TLSConfig *tls.Config
	// MaxMessageBytes is advertised with SIZE and enforced.
	MaxMessageBytes int64
	// SMTPUTF8 advertises RFC 6531 support.
	SMTPUTF8 bool
	// DSN advertises RFC 3461 support (and records the parameters).
	DSN bool
	// Username and Password, when set, offer AUTH PLAIN.
	Username, Password string
	// Rcpt answers each RCPT TO; nil accepts everyone.
	Rcpt func(rcpt string) error
	// Data answers the end of DATA; nil accepts. A message is recorded
	// only when accepted.
	Data func(m Message) error
}

// Server is a running test server.
type Server struct {
	Addr string

	opts    Options
	srv     *smtp.Server
	arrived chan Message

	mu       sync.Mutex
	msgs     []Message
	sessions int
	mails    int
}

// Start runs a server until the test ends (or Close).
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("smtptest: listen %s: %v", addr, err)
	}
	s := &Server{Addr: l.Addr().String(), opts: opts, arrived: make(chan Message, 1000)}
	s.srv = smtp.NewServer(smtp.BackendFunc(s.newSession))
	s.srv.Domain = "smtptest.invalid"
	s.srv.TLSConfig = opts.TLSConfig
	s.srv.MaxMessageBytes = opts.MaxMessageBytes
	s.srv.EnableSMTPUTF8 = opts.SMTPUTF8
	s.srv.EnableDSN = opts.DSN
	s.srv.AllowInsecureAuth = opts.TLSConfig == nil
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	go s.srv.Serve(l)
	t.Cleanup(s.Close)
	return s
}

// Close stops the server: new connections are refused.
func (s *Server) Close() { s.srv.Close() }

// Messages returns what the server accepted so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Sessions counts connections that got as far as EHLO.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// Mails counts MAIL FROM commands: transactions begun.
func (s *Server) Mails() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mails
}

// Wait returns the next accepted message, failing the test after 10 s.
func (s *Server) Wait(t testing.TB) Message {
	t.Helper()
	select {
	case m := <-s.arrived:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("smtptest: no message arrived")
		return Message{}
	}
}

// DownAddr returns a loopback address where nothing listens, so dialling
// it is refused; Start with Options.Addr set to it brings a server "up".
func DownAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Reply builds the error a Rcpt or Data hook returns, e.g.
// Reply(550, 5, 1, 1, "no such user").
func Reply(code, class, subject, detail int, text string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{class, subject, detail}, Message: text}
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	s.sessions++
	s.mu.Unlock()
	return &session{s: s, conn: c}, nil
}

type session struct {
	s    *Server
	conn *smtp.Conn
	user string
	m    Message
}

func (se *session) AuthMechanisms() []string {
	if se.s.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (se *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || se.s.opts.Username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != se.s.opts.Username || pass != se.s.opts.Password {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		se.user = user
		return nil
	}), nil
}

func (se *session) Mail(from string, opts *smtp.MailOptions) error {
	se.s.mu.Lock()
	se.s.mails++
	se.s.mu.Unlock()
	se.m = Message{Helo: se.conn.Hostname(), From: from}
	if opts != nil {
		se.m.MailOpts = *opts
	}
	return nil
}

func (se *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if se.s.opts.Rcpt != nil {
		if err := se.s.opts.Rcpt(to); err != nil {
			return err
		}
	}
	se.m.Rcpts = append(se.m.Rcpts, to)
	var o smtp.RcptOptions
	if opts != nil {
		o = *opts
	}
	se.m.RcptOpts = append(se.m.RcptOpts, o)
	return nil
}

func (se *session) Data(r io.Reader) error {
	var b bytes.Buffer
	if _, err := io.Copy(&b, r); err != nil {
		return err
	}
	m := se.m
	m.Data = b.Bytes()
	_, m.TLS = se.conn.TLSConnectionState()
	m.AuthUser = se.user
	if se.s.opts.Data != nil {
		if err := se.s.opts.Data(m); err != nil {
			return err
		}
	}
	se.s.mu.Lock()
	se.s.msgs = append(se.s.msgs, m)
	se.s.mu.Unlock()
	se.s.arrived <- m
	return nil
}

func (se *session) Reset()        { se.m = Message{} }
func (se *session) Logout() error { return nil }
