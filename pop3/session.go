package pop3

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"
)

// state is the RFC 1939 session state. UPDATE has no value of its own: it is
// the QUIT handler in TRANSACTION, after which the session ends.
type state int

const (
	stateAuthorization state = iota
	stateTransaction
)

// message is one entry of the session's fixed snapshot of the maildrop.
// Message number n is msgs[n-1] for the whole session (RFC 1939 section 5).
type message struct {
	MessageInfo
	deleted   bool
	retrieved bool // RETR sent it whole, for the Updater's trace
}

// Session results, logged as "result".
const (
	resultQuit         = "quit"
	resultDropped      = "dropped"
	resultTimeout      = "timeout"
	resultLoginTimeout = "login timeout"
	resultShutdown     = "shutdown"
	resultTooManyErrs  = "too many errors"
	resultLineFlood    = "line flood"
	resultTLSFailed    = "tls failed"
	resultDeleteFailed = "delete failed"
)

// maxDiscard bounds how much of one overlong line is read and thrown away
// before the session gives up on the client.
const maxDiscard = 64 << 10

var (
	errLineTooLong = errors.New("line too long")
	errLineFlood   = errors.New("line far too long")
)

type session struct {
	srv *Server
	raw net.Conn // the accepted connection; closing it ends everything
	cut atomic.Bool

	conn  net.Conn // raw, or the TLS connection over it after STLS
	r     *bufio.Reader
	w     *bufio.Writer
	tls   bool
	ip    netip.Addr
	start time.Time
	line  []byte // reused line buffer

	// loginBy ends the AUTHORIZATION state: no deadline before login goes
	// past it. lineBy is when the line being read must be complete; once
	// lineStarted (its first byte has come), CommandTimeout shortens it.
	loginBy     time.Time
	lineBy      time.Time
	lineStarted bool

	state state
	user  string // from USER, waiting for PASS
	addr  string // canonical address once logged in
	// tried is the login name of the last login, bounded for the log (the
	// canonical address once the credentials are good); authResult is
	// "authenticated" or why that login failed.
	tried, authResult string
	unlock            func()
	msgs              []message

	errs         int
	authFailures int
	retrieved    int
	deleted      int
	result       string
}

func newSession(srv *Server, conn net.Conn) *session {
	now := time.Now()
	s := &session{
		srv:     srv,
		raw:     conn,
		conn:    conn,
		ip:      clientIP(conn),
		start:   now,
		loginBy: now.Add(srv.opts.LoginTimeout),
	}
	_, s.tls = conn.(*tls.Conn)
	s.r = bufio.NewReaderSize(connReader{s}, 4096)
	s.w = bufio.NewWriterSize(connWriter{s}, 32<<10)
	return s
}

// deadline is d from now, but never past the end of the time allowed to
// log in while the session is in AUTHORIZATION.
func (s *session) deadline(d time.Duration) time.Time {
	t := time.Now().Add(d)
	if s.state == stateAuthorization && t.After(s.loginBy) {
		return s.loginBy
	}
	return t
}

// startLine sets the read deadline for the next command line: all of it
// within IdleTimeout of the previous reply, the autologout timer of RFC
// 1939 section 3, which only a whole command resets. Bytes already
// buffered have started the line.
func (s *session) startLine() {
	s.lineBy = s.deadline(s.srv.opts.IdleTimeout)
	s.lineStarted = false
	if s.r.Buffered() > 0 {
		s.lineStarted = true
		s.lineBy = earliest(s.lineBy, s.deadline(s.srv.opts.CommandTimeout))
	}
	s.conn.SetReadDeadline(s.lineBy)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// connReader holds the line being read to its deadline: reads never renew
// it, so a client trickling a byte at a time gains nothing. The line's
// first byte starts the CommandTimeout.
type connReader struct{ s *session }

func (c connReader) Read(p []byte) (int, error) {
	s := c.s
	n, err := s.conn.Read(p)
	if n > 0 && !s.lineStarted {
		s.lineStarted = true
		s.lineBy = earliest(s.lineBy, s.deadline(s.srv.opts.CommandTimeout))
		s.conn.SetReadDeadline(s.lineBy)
	}
	return n, err
}

// connWriter renews the write deadline on every write, so a slow but live
// client can still fetch a large message.
type connWriter struct{ s *session }

func (c connWriter) Write(p []byte) (int, error) {
	c.s.conn.SetWriteDeadline(c.s.deadline(c.s.srv.opts.IdleTimeout))
	return c.s.conn.Write(p)
}

// cutOff ends the session from outside (Shutdown): it will delete nothing.
func (s *session) cutOff() {
	s.cut.Store(true)
	s.raw.Close()
}

// run is the whole session: greeting, commands, one log line.
func (s *session) run() {
	defer func() {
		if s.unlock != nil {
			s.unlock()
		}
		s.logEnd()
	}()
	if tc, ok := s.conn.(*tls.Conn); ok {
		// POP3S: finish the handshake before the greeting, within the
		// command time limit.
		tc.SetDeadline(s.deadline(s.srv.opts.CommandTimeout))
		if err := tc.Handshake(); err != nil {
			s.result = resultTLSFailed
			return
		}
	}
	s.ok("%s POP3 server ready", s.srv.opts.Hostname)
	for s.result == "" {
		line, err := s.readLine(s.srv.opts.MaxLineLength)
		switch {
		case errors.Is(err, errLineTooLong):
			s.err("line too long")
		case err != nil:
			s.result = s.ioResult(err)
			return
		default:
			s.execute(line)
		}
		if s.result == "" && s.errs >= maxBadCommands {
			s.w.WriteString("-ERR too many bad commands, closing connection\r\n")
			s.result = resultTooManyErrs
		}
	}
	s.w.Flush()
}

// ioResult names why reading or writing failed.
func (s *session) ioResult(err error) string {
	switch {
	case s.cut.Load():
		return resultShutdown
	case errors.Is(err, os.ErrDeadlineExceeded):
		// RFC 1939 section 3: on autologout the server closes the
		// connection without entering UPDATE and without a response.
		if s.state == stateAuthorization && !time.Now().Before(s.loginBy) {
			return resultLoginTimeout
		}
		return resultTimeout
	case errors.Is(err, errLineFlood):
		return resultLineFlood
	default:
		return resultDropped
	}
}

func (s *session) logEnd() {
	if s.result == "" {
		s.result = resultDropped
	}
	s.srv.log.Info("pop3 session",
		"client", s.ip.String(),
		"tls", s.tls,
		"user", s.tried,
		"auth", s.authResult,
		"auth_failures", s.authFailures,
		"retrieved", s.retrieved,
		"deleted", s.deleted,
		"duration", time.Since(s.start).Round(time.Millisecond),
		"result", s.result)
}

// readLine returns the next line without its line ending (CRLF, or a bare
// LF from a sloppy client). Replies still buffered are flushed first unless
// a whole pipelined command is already waiting (RFC 2449 section 6.6), so a
// pipelining client gets its answers in few packets and never waits on us.
func (s *session) readLine(limit int) (string, error) {
	if !s.lineBuffered() {
		if err := s.w.Flush(); err != nil {
			return "", err
		}
	}
	s.startLine()
	s.line = s.line[:0]
	tooLong, discarded := false, 0
	for {
		chunk, err := s.r.ReadSlice('\n')
		if !tooLong && len(s.line)+len(chunk) > limit+2 {
			tooLong, s.line = true, s.line[:0]
		}
		if tooLong {
			if discarded += len(chunk); discarded > maxDiscard {
				return "", errLineFlood
			}
		} else {
			s.line = append(s.line, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(chunk) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		break
	}
	line := bytes.TrimSuffix(bytes.TrimSuffix(s.line, []byte("\n")), []byte("\r"))
	if tooLong || len(line) > limit {
		return "", errLineTooLong
	}
	return string(line), nil
}

func (s *session) lineBuffered() bool {
	b, _ := s.r.Peek(s.r.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// ok writes a positive status line.
func (s *session) ok(format string, args ...any) {
	s.w.WriteString("+OK")
	if format != "" {
		s.w.WriteByte(' ')
		fmt.Fprintf(s.w, format, args...)
	}
	s.w.WriteString(crlf)
}

// err writes a negative status line and counts it against the session.
func (s *session) err(format string, args ...any) {
	s.errs++
	s.w.WriteString("-ERR ")
	fmt.Fprintf(s.w, format, args...)
	s.w.WriteString(crlf)
}

// execute parses and runs one command line.
func (s *session) execute(line string) {
	c, err := parseCommand(line)
	if err != nil {
		s.err("%v", err)
		return
	}
	// CAPA, QUIT and NOOP-like commands are valid in both states; the rest
	// belong to one (RFC 1939 sections 4 and 5, RFC 2449 section 5).
	switch c.Verb {
	case "CAPA":
		s.cmdCapa(c)
		return
	case "QUIT":
		s.cmdQuit(c)
		return
	}
	if s.state == stateAuthorization {
		switch c.Verb {
		case "USER":
			s.cmdUser(c)
		case "PASS":
			s.cmdPass(c)
		case "AUTH":
			s.cmdAuth(c)
		case "STLS":
			s.cmdSTLS(c)
		case "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL":
			s.err("not logged in: use USER and PASS, or AUTH, first")
		default:
			s.err("unknown command")
		}
		return
	}
	switch c.Verb {
	case "STAT":
		s.cmdStat(c)
	case "LIST":
		s.cmdList(c)
	case "UIDL":
		s.cmdUidl(c)
	case "RETR":
		s.cmdRetr(c)
	case "TOP":
		s.cmdTop(c)
	case "DELE":
		s.cmdDele(c)
	case "RSET":
		s.cmdRset(c)
	case "NOOP":
		if s.wantArgs(c, 0) {
			s.ok("")
		}
	case "USER", "PASS", "AUTH", "STLS":
		s.err("already logged in")
	default:
		s.err("unknown command")
	}
}

// wantArgs checks the argument count, answering -ERR if it is wrong.
func (s *session) wantArgs(c command, n int) bool {
	if len(c.Args) != n {
		s.err("%s takes %d argument(s)", c.Verb, n)
		return false
	}
	return true
}
