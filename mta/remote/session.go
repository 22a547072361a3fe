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

	"minimail/mta/mailaddr"
)

// errHandshake marks a failed STARTTLS handshake.
var errHandshake = errors.New("TLS handshake")

// quitTimeout bounds the courtesy QUIT sent after a transaction.
const quitTimeout = 10 * time.Second

// session runs one SMTP transaction with the server at addr. A nil result
// means this server gave no verdict on the recipients (no connection, a
// refused session, TLS or AUTH trouble): err says why and the caller tries
// the next address. Otherwise the result has one entry per recipient.
//
// With plain set, STARTTLS is not attempted even when offered: the retry
// after a failed handshake.
func (c *Client) session(ctx context.Context, h hop, addr, from string, rcpts []string, msg []byte, plain bool) ([]error, error) {
	start := time.Now()
	tlsState := "none"
	accepted := 0
	var sessErr error
	defer func() {
		c.logger().Info("remote session", "host", h.name, "addr", addr, "tls", tlsState,
			"rcpts", len(rcpts), "accepted", accepted, "err", sessErr, "took", time.Since(start).Round(time.Millisecond))
	}()

	dctx, cancel := context.WithTimeout(ctx, c.timeout())
	conn, err := c.dialer().DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		sessErr = errNoAnswer(h.name, err)
		return nil, sessErr
	}
	// Cancelling ctx aborts the session by closing the connection.
	raw := conn
	stopAbort := context.AfterFunc(ctx, func() { raw.Close() })
	handedOff := false
	defer func() {
		if stopAbort() && !handedOff {
			raw.Close()
		}
	}()

	sc := c.newSMTP(conn, h.name)
	if err := sc.Hello(c.Hostname); err != nil {
		sessErr = replyError(h.name, err)
		return nil, sessErr
	}
	if ok, _ := sc.Extension("STARTTLS"); ok && !plain {
		tconn, verified, err := c.startTLS(ctx, conn, h)
		if err != nil {
			sessErr = err
			return nil, err
		}
		conn = tconn
		tlsState = "unverified"
		if verified {
			tlsState = "verified"
		}
		// RFC 3207 4.2: forget what was learnt before TLS and greet again.
		sc = c.newSMTP(WithGreeting(tconn, fakeGreeting), h.name)
		if err := sc.Hello(c.Hostname); err != nil {
			sessErr = replyError(h.name, err)
			return nil, sessErr
		}
	}
	if h.auth {
		if err := c.auth(sc, h, tlsState == "verified"); err != nil {
			sessErr = err
			return nil, err
		}
	}

	results := make([]error, len(rcpts))
	all := func(err *Error) []error {
		sessErr = err
		for i := range results {
			results[i] = err
		}
		return results
	}
	// RFC 1870 6: no point sending what the server has said it will refuse.
	if limit, ok := sc.MaxMessageSize(); ok && limit > 0 && len(msg) > limit {
		c.hangUp(sc, &handedOff)
		return all(errPermanent(h.name, "5.3.4", fmt.Sprintf("message of %d bytes exceeds the server's SIZE limit of %d", len(msg), limit))), nil
	}
	opts := &smtp.MailOptions{Size: int64(len(msg))}
	if !mailaddr.IsASCII(from) || !allASCII(rcpts) {
		// RFC 6531 3.2: a non-ASCII address needs SMTPUTF8 end to end.
		if ok, _ := sc.Extension("SMTPUTF8"); !ok {
			c.hangUp(sc, &handedOff)
			return all(errPermanent(h.name, "5.6.7", "non-ASCII address but the server does not offer SMTPUTF8")), nil
		}
		opts.UTF8 = true
	}
	// An 8-bit body goes out even when 8BITMIME is not offered, as
	// Postfix and most MTAs do: downgrading to 7 bits would mean
	// rewriting (and breaking the DKIM signature of) the message, and
	// bouncing it would punish the sender for the receiver's age.
	if err := sc.Mail(from, opts); err != nil {
		e := replyError(h.name, err)
		if e.Code >= 500 {
			c.hangUp(sc, &handedOff)
			return all(e), nil
		}
		sessErr = e
		return nil, e
	}
	for i, rcpt := range rcpts {
		if err := sc.Rcpt(rcpt, nil); err != nil {
			e := replyError(h.name, err)
			if e.Code == 0 {
				return fillPending(results, e, &sessErr), nil
			}
			results[i] = e
			continue
		}
		accepted++
	}
	if accepted == 0 {
		sessErr = errors.New("no recipient accepted")
		c.hangUp(sc, &handedOff)
		return results, nil
	}
	w, err := sc.Data()
	if err != nil {
		accepted = 0
		e := replyError(h.name, err)
		if e.Code != 0 {
			c.hangUp(sc, &handedOff)
		}
		return fillPending(results, e, &sessErr), nil
	}
	// go-smtp sets no deadline while the body is written.
	conn.SetWriteDeadline(time.Now().Add(2 * c.timeout()))
	if _, err := w.Write(msg); err != nil {
		accepted = 0
		return fillPending(results, errConnection(h.name, err), &sessErr), nil
	}
	if _, err := w.CloseWithResponse(); err != nil {
		accepted = 0
		e := replyError(h.name, err)
		if e.Code != 0 {
			c.hangUp(sc, &handedOff)
		}
		return fillPending(results, e, &sessErr), nil
	}
	// The recipients are accepted. The caller must record that before
	// anything else happens, so QUIT goes on in the background.
	c.hangUp(sc, &handedOff)
	return results, nil
}

// fillPending sets err for every recipient without a verdict yet.
func fillPending(results []error, err *Error, sessErr *error) []error {
	*sessErr = err
	for i := range results {
		if results[i] == nil {
			results[i] = err
		}
	}
	return results
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

// hangUp sends QUIT and closes the connection without waiting for either.
func (c *Client) hangUp(sc *smtp.Client, handedOff *bool) {
	*handedOff = true
	sc.CommandTimeout = min(c.timeout(), quitTimeout)
	go func() {
		if sc.Quit() != nil {
			sc.Close()
		}
	}()
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
