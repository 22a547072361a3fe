package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"minimail/mta/delivery"
	"minimail/mta/mailaddr"
)

// errHandshake marks a failed STARTTLS handshake.
var errHandshake = errors.New("TLS handshake")

// quitTimeout bounds the courtesy QUIT sent after a transaction.
const quitTimeout = 10 * time.Second

// envelope is what one delivery sends: the envelope sender ("" for the
// null sender), the recipients, all of one domain, and the message.
type envelope struct {
	from  string
	rcpts []string
	msg   []byte
	dsn   delivery.DSN
}

// target is where one session goes: one address of a hop.
type target struct {
	hop  hop
	addr string // host:port
	// plainText skips STARTTLS even when offered: the retry after a
	// failed handshake (RFC 7435).
	plainText bool
}

// conversation is one SMTP session, from the dial to the hang-up, and
// what its log line reports.
type conversation struct {
	c    *Client
	to   target
	raw  net.Conn // the TCP connection, under TLS once STARTTLS is done
	conn net.Conn // what the session speaks over: raw, or TLS over it
	sc   *smtp.Client

	stopAbort func() bool // stops closing raw when ctx is done
	handedOff bool        // hangUp owns the connection now

	tlsState string // "none", "unverified" or "verified"
	accepted int    // recipients the server took, once DATA succeeded
	reply    string // the server's reply after DATA, once it took the message
	err      error  // why the session failed, if it did
}

// session runs one SMTP transaction for env with the server at t. A nil
// result means this server gave no verdict on the recipients (no
// connection, a refused session, TLS or AUTH trouble): err says why and the
// caller tries the next address. Otherwise the result has one entry per
// recipient.
func (c *Client) session(ctx context.Context, t target, env envelope) (results []error, dsnOffered bool, err error) {
	s := &conversation{c: c, to: t, tlsState: "none"}
	defer s.logDone(time.Now(), len(env.rcpts))
	// For `minimail trace`, when the caller asked (delivery.WithAttempts).
	defer func() { delivery.ReportAttempt(ctx, s.attempt()) }()
	if err := s.dial(ctx); err != nil {
		return nil, false, s.fail(err)
	}
	defer s.release()
	if err := s.greet(ctx); err != nil {
		return nil, false, s.fail(err)
	}
	dsnOffered, _ = s.sc.Extension("DSN")
	results, err = s.transact(env)
	return results, dsnOffered, err
}

func (s *conversation) logDone(start time.Time, rcpts int) {
	s.c.logger().Info("remote session", "host", s.to.hop.name, "addr", s.to.addr, "tls", s.tlsState,
		"rcpts", rcpts, "accepted", s.accepted, "err", s.err, "took", time.Since(start).Round(time.Millisecond))
}

// attempt is the session as trace shows it.
func (s *conversation) attempt() delivery.Attempt {
	a := delivery.Attempt{Host: s.to.hop.name, Addr: s.to.addr, TLS: s.tlsState, Reply: s.reply}
	if s.err != nil {
		a.Err = oneLine(s.err.Error())
	}
	return a
}

// fail records err as the session's failure and returns it.
func (s *conversation) fail(err error) error {
	s.err = err
	return err
}

// dial connects to the target. Cancelling ctx then aborts the session by
// closing the connection.
func (s *conversation) dial(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, s.c.timeout())
	conn, err := s.c.dialer().DialContext(dctx, "tcp", s.to.addr)
	cancel()
	if err != nil {
		return errNoAnswer(s.to.hop.name, err)
	}
	s.raw, s.conn = conn, conn
	s.stopAbort = context.AfterFunc(ctx, func() { conn.Close() })
	return nil
}

// release closes the connection at the end of the session, unless hangUp
// has taken it over or a cancelled ctx has closed it already.
func (s *conversation) release() {
	if s.stopAbort() && !s.handedOff {
		s.raw.Close()
	}
}

// greet says EHLO, moves to TLS when the server offers it (unless the
// target says plain text), and authenticates to a smarthost.
func (s *conversation) greet(ctx context.Context) error {
	h := s.to.hop
	s.sc = s.c.newSMTP(s.conn, h.name)
	if err := s.sc.Hello(s.c.Hostname); err != nil {
		return replyError(h.name, err)
	}
	if ok, _ := s.sc.Extension("STARTTLS"); ok && !s.to.plainText {
		if err := s.startTLS(ctx); err != nil {
			return err
		}
	}
	if h.auth {
		return s.c.auth(s.sc, h, s.tlsState == "verified")
	}
	return nil
}

// startTLS runs STARTTLS and greets again inside TLS.
func (s *conversation) startTLS(ctx context.Context) error {
	h := s.to.hop
	tconn, verified, err := s.c.startTLS(ctx, s.conn, h)
	if err != nil {
		return err
	}
	s.conn = tconn
	s.tlsState = "unverified"
	if verified {
		s.tlsState = "verified"
	}
	// RFC 3207 4.2: forget what was learnt before TLS and greet again.
	s.sc = s.c.newSMTP(WithGreeting(tconn, fakeGreeting), h.name)
	if err := s.sc.Hello(s.c.Hostname); err != nil {
		return replyError(h.name, err)
	}
	return nil
}

// transact sends MAIL, RCPT for each recipient and the message, and
// returns one result per recipient; or no result and the error when the
// server refused MAIL temporarily, so that the next address gets a try.
func (s *conversation) transact(env envelope) ([]error, error) {
	h := s.to.hop
	results := make([]error, len(env.rcpts))
	opts, refusal := s.mailOptions(env)
	if refusal != nil {
		s.hangUp()
		return s.failAll(results, refusal), nil
	}
	// An 8-bit body goes out even when 8BITMIME is not offered, as
	// Postfix and most MTAs do: downgrading to 7 bits would mean
	// rewriting (and breaking the DKIM signature of) the message, and
	// bouncing it would punish the sender for the receiver's age.
	if err := s.sc.Mail(env.from, opts); err != nil {
		e := replyError(h.name, err)
		if e.Code >= 500 {
			s.hangUp()
			return s.failAll(results, e), nil
		}
		return nil, s.fail(e)
	}
	for i, rcpt := range env.rcpts {
		if err := s.sc.Rcpt(rcpt, env.dsn.Rcpt(i)); err != nil {
			e := replyError(h.name, err)
			if e.Code == 0 {
				return s.failPending(results, e), nil
			}
			results[i] = e
			continue
		}
		s.accepted++
	}
	if s.accepted == 0 {
		s.err = errors.New("no recipient accepted")
		s.hangUp()
		return results, nil
	}
	if e := s.data(env.msg); e != nil {
		s.accepted = 0
		return s.failPending(results, e), nil
	}
	// The recipients are accepted. The caller must record that before
	// anything else happens, so QUIT goes on in the background.
	s.hangUp()
	return results, nil
}

// mailOptions returns the MAIL parameters for env, or the permanent
// failure of a message the server has said it will not take.
func (s *conversation) mailOptions(env envelope) (*smtp.MailOptions, *Error) {
	h := s.to.hop
	// RFC 1870 6: no point sending what the server has said it will refuse.
	if limit, ok := s.sc.MaxMessageSize(); ok && limit > 0 && len(env.msg) > limit {
		return nil, errPermanent(h.name, "5.3.4", fmt.Sprintf("message of %d bytes exceeds the server's SIZE limit of %d", len(env.msg), limit))
	}
	// go-smtp sends RET and ENVID only to a server that offers DSN.
	opts := &smtp.MailOptions{Size: int64(len(env.msg)), Return: env.dsn.Ret, EnvelopeID: env.dsn.EnvID}
	if !mailaddr.IsASCII(env.from) || !allASCII(env.rcpts) {
		// RFC 6531 3.2: a non-ASCII address needs SMTPUTF8 end to end.
		if ok, _ := s.sc.Extension("SMTPUTF8"); !ok {
			return nil, errPermanent(h.name, "5.6.7", "non-ASCII address but the server does not offer SMTPUTF8")
		}
		opts.UTF8 = true
	}
	return opts, nil
}

// data sends the message after DATA and reads the server's verdict; nil
// means the server took it.
func (s *conversation) data(msg []byte) *Error {
	h := s.to.hop
	w, err := s.sc.Data()
	if err != nil {
		return s.replied(replyError(h.name, err))
	}
	// go-smtp sets no deadline while the body is written.
	s.conn.SetWriteDeadline(time.Now().Add(2 * s.c.timeout()))
	if _, err := w.Write(msg); err != nil {
		return errConnection(h.name, err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return s.replied(replyError(h.name, err))
	}
	s.reply = "250 " + oneLine(resp.StatusText)
	return nil
}

// replied hangs up politely after a reply, which leaves the session in
// step; a broken connection is only closed.
func (s *conversation) replied(e *Error) *Error {
	if e.Code != 0 {
		s.hangUp()
	}
	return e
}

// failAll sets err for every recipient.
func (s *conversation) failAll(results []error, err *Error) []error {
	s.err = err
	for i := range results {
		results[i] = err
	}
	return results
}

// failPending sets err for every recipient without a verdict yet.
func (s *conversation) failPending(results []error, err *Error) []error {
	s.err = err
	for i := range results {
		if results[i] == nil {
			results[i] = err
		}
	}
	return results
}

// hangUp sends QUIT and closes the connection without waiting for either.
func (s *conversation) hangUp() {
	s.handedOff = true
	sc := s.sc
	sc.CommandTimeout = min(s.c.timeout(), quitTimeout)
	go func() {
		if sc.Quit() != nil {
			sc.Close()
		}
	}()
}

func (c *Client) newSMTP(conn net.Conn, host string) *smtp.Client {
	sc := smtp.NewClient(limitReplies(conn))
	if c.Transcript != nil {
		sc.DebugWriter = &skipFakeGreeting{w: c.Transcript(host)}
	}
	sc.CommandTimeout = c.timeout()
	sc.SubmissionTimeout = 2 * c.timeout() // RFC 5321 4.5.3.2.6: 10 minutes
	return sc
}

// fakeGreeting stands in for the 220 a server does not repeat after
// STARTTLS: go-smtp's client reads a greeting first, and offers no way to
// start TLS after an EHLO with our own name, so the plain-text part of the
// session is ours and the TLS part is handed to go-smtp as a fresh session.
const fakeGreeting = "220 TLS established\r\n"

// skipFakeGreeting keeps the stand-in greeting out of a transcript: the
// server never sent it.
type skipFakeGreeting struct {
	w       io.Writer
	started bool
}

func (s *skipFakeGreeting) Write(b []byte) (int, error) {
	first := !s.started
	s.started = true
	if first && string(b) == fakeGreeting {
		return len(b), nil
	}
	return s.w.Write(b)
}

// WithGreeting returns conn with greeting to be read first. go-smtp's
// client reads a greeting before anything else; this hands it a connection
// whose real greeting was read before STARTTLS (RFC 3207 4.2: none follows
// the handshake).
func WithGreeting(conn net.Conn, greeting string) net.Conn {
	return &greetedConn{Conn: conn, r: io.MultiReader(strings.NewReader(greeting), conn)}
}

type greetedConn struct {
	net.Conn
	r io.Reader
}

func (g *greetedConn) Read(p []byte) (int, error) { return g.r.Read(p) }

// startTLS sends STARTTLS on conn (after go-smtp's EHLO, with nothing left
// unread) and completes the handshake. For a hop with credentials the
// certificate must verify; otherwise it is checked only to be logged.
func (c *Client) startTLS(ctx context.Context, conn net.Conn, h hop) (*tls.Conn, bool, error) {
	conn.SetDeadline(time.Now().Add(c.timeout()))
	defer conn.SetDeadline(time.Time{})
	// The reply is read with the bounds go-smtp's replies get; the
	// handshake then runs on conn itself, as TLS records bound themselves.
	lc := limitReplies(conn)
	if _, err := io.WriteString(lc, "STARTTLS\r\n"); err != nil {
		return nil, false, errConnection(h.name, err)
	}
	code, msg, err := textproto.NewReader(bufio.NewReaderSize(lc, 512)).ReadResponse(220)
	if c.Transcript != nil {
		// This exchange bypasses go-smtp, so its DebugWriter misses it.
		fmt.Fprintf(c.Transcript(h.name), "STARTTLS\r\n%d %s\r\n", code, msg)
	}
	if err != nil {
		var pe *textproto.Error
		if errors.As(err, &pe) {
			return nil, false, replyError(h.name, &smtp.SMTPError{Code: pe.Code, Message: pe.Msg})
		}
		return nil, false, replyError(h.name, err)
	}
	cfg := &tls.Config{}
	if c.TLSConfig != nil {
		cfg = c.TLSConfig.Clone()
	}
	cfg.ServerName = h.name
	verified := false
	if !h.auth {
		// Opportunistic (RFC 7435): encrypt whatever the certificate.
		cfg.InsecureSkipVerify = true
		roots := cfg.RootCAs
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			verified = verifyChain(cs, h.name, roots)
			return nil
		}
	}
	tconn := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	if err := tconn.HandshakeContext(hctx); err != nil {
		return nil, false, errSecurity(h.name, "TLS handshake failed", fmt.Errorf("%w: %w", errHandshake, err))
	}
	return tconn, verified || h.auth, nil
}

func verifyChain(cs tls.ConnectionState, name string, roots *x509.CertPool) bool {
	if len(cs.PeerCertificates) == 0 {
		return false
	}
	inter := x509.NewCertPool()
	for _, cert := range cs.PeerCertificates[1:] {
		inter.AddCert(cert)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	return err == nil
}

// auth authenticates to a smarthost with AUTH PLAIN (RFC 4954, RFC 4616).
// Credentials never cross a connection that is not verified TLS. Failures
// are temporary: the mail waits while the administrator fixes the setup.
func (c *Client) auth(sc *smtp.Client, h hop, verifiedTLS bool) error {
	if !verifiedTLS {
		return errSecurity(h.name, "smarthost offers no verified TLS; credentials not sent", nil)
	}
	if !sc.SupportsAuth("PLAIN") {
		return errSecurity(h.name, "smarthost does not offer AUTH PLAIN", nil)
	}
	if err := sc.Auth(sasl.NewPlainClient("", c.SmarthostUsername, c.SmarthostPassword)); err != nil {
		return errSecurity(h.name, "smarthost authentication failed", replyError(h.name, err))
	}
	return nil
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !mailaddr.IsASCII(s) {
			return false
		}
	}
	return true
}
