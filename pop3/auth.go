package pop3

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
)

// authAllowed reports whether the client may send credentials: over TLS, or
// when the operator allowed plaintext (RFC 2595 section 2.1 lets servers
// refuse plaintext passwords on unencrypted links).
func (s *session) authAllowed() bool { return s.tls || s.srv.opts.AllowInsecureAuth }

// refuseInsecure answers a login attempt made without TLS.
func (s *session) refuseInsecure() {
	if s.srv.opts.TLSConfig != nil {
		s.err("[AUTH] authentication requires TLS: use STLS first")
	} else {
		s.err("[AUTH] authentication requires TLS: use the POP3S port")
	}
}

// cmdCapa lists capabilities (RFC 2449 section 5). The list is the same in
// both states, as section 5 requires of AUTHORIZATION capabilities, and
// changes only when TLS starts (RFC 2595 section 4).
func (s *session) cmdCapa(c command) {
	if !s.wantArgs(c, 0) {
		return
	}
	s.ok("capability list follows")
	s.w.WriteString("TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n")
	if s.authAllowed() {
		s.w.WriteString("USER\r\nSASL PLAIN\r\n")
	}
	if s.srv.opts.TLSConfig != nil && !s.tls {
		s.w.WriteString("STLS\r\n")
	}
	s.w.WriteString("IMPLEMENTATION minimail\r\n")
	s.w.WriteString(terminator)
}

// cmdUser remembers the name for PASS (RFC 1939 section 7).
func (s *session) cmdUser(c command) {
	if !s.authAllowed() {
		s.refuseInsecure()
		return
	}
	if len(c.Args) != 1 {
		s.err("USER takes one argument")
		return
	}
	s.user = c.Args[0]
	s.ok("send PASS")
}

// cmdPass completes a USER/PASS login. The whole rest of the line is the
// password, spaces included (RFC 1939 section 7).
func (s *session) cmdPass(c command) {
	// PASS is valid only right after a successful USER, and a failed PASS
	// needs a new USER (RFC 1939 section 7: after -ERR the session is back
	// at the start of AUTHORIZATION), so the name is used up here whatever
	// the outcome.
	user := s.user
	s.user = ""
	if !s.authAllowed() {
		s.refuseInsecure()
		return
	}
	if user == "" {
		s.err("send USER first")
		return
	}
	if c.Rest == "" {
		s.err("PASS takes one argument")
		return
	}
	s.login("", user, c.Rest)
}

// cmdAuth runs SASL PLAIN (RFC 5034, RFC 4616), with or without an initial
// response. AUTH without arguments lists the mechanisms, which some clients
// still probe with (RFC 1734 style).
func (s *session) cmdAuth(c command) {
	// AUTH starts a login of its own: a USER given before it is not
	// waiting for PASS any more (RFC 1939 section 7, RFC 5034 section 4),
	// so a PASS after a failed AUTH cannot complete the older name.
	s.user = ""
	if !s.authAllowed() {
		s.refuseInsecure()
		return
	}
	switch {
	case len(c.Args) == 0:
		s.ok("SASL mechanisms follow")
		s.w.WriteString("PLAIN\r\n" + terminator)
		return
	case len(c.Args) > 2:
		s.err("AUTH takes a mechanism and an optional initial response")
		return
	case !strings.EqualFold(c.Args[0], sasl.Plain):
		s.err("unsupported SASL mechanism")
		return
	}

	// The three strings go to the Maildrop as they came: the rule for
	// the authorization identity is its own (Maildrop.Authenticate).
	var authz, user, pass string
	server := sasl.NewPlainServer(func(identity, username, password string) error {
		if username == "" {
			return errNoUser // RFC 4616 section 2: authcid = 1*SAFE
		}
		authz, user, pass = identity, username, password
		return nil
	})

	var resp []byte
	if len(c.Args) == 2 {
		var ok bool
		if resp, ok = s.decodeSASL(c.Args[1]); !ok {
			return
		}
	} else {
		challenge, _, _ := server.Next(nil)
		s.w.WriteString("+ " + base64.StdEncoding.EncodeToString(challenge) + crlf)
		// SASL responses may exceed a command's length (RFC 5034 section
		// 4); they are still bounded.
		line, err := s.readLine(max(s.srv.opts.MaxLineLength, 4096))
		switch {
		case errors.Is(err, errLineTooLong):
			s.err("line too long")
			return
		case err != nil:
			s.result = s.ioResult(err)
			return
		case line == "*":
			s.err("authentication cancelled")
			return
		}
		var ok bool
		if resp, ok = s.decodeSASL(line); !ok {
			return
		}
	}

	if _, done, err := server.Next(resp); err != nil || !done {
		s.err("malformed PLAIN response")
		return
	}
	s.login(authz, user, pass)
}

var errNoUser = errors.New("empty authentication identity")

// decodeSASL decodes a base64 SASL response; "=" is an empty initial
// response (RFC 5034 section 4).
func (s *session) decodeSASL(arg string) ([]byte, bool) {
	if arg == "=" {
		return []byte{}, true
	}
	b, err := base64.StdEncoding.DecodeString(arg)
	if err != nil {
		s.err("invalid base64")
		return nil, false
	}
	return b, true
}

// login checks credentials, then locks and opens the maildrop. Every
// attempt is logged: "authenticated", or "auth_failed" with the reason.
func (s *session) login(authz, user, pass string) {
	// One spelling per user for the throttle and the log; names no user
	// can have share the one count of "".
	name, nameErr := s.srv.opts.LoginName(user)
	if nameErr != nil {
		name = ""
	}
	s.tried = loggable(user)
	if s.srv.throttle.Blocked(s.ip) {
		s.authFailed("too many failed logins")
		s.err("[SYS/TEMP] too many failed logins from your address, try again later")
		return
	}
	if !strings.Contains(strings.TrimSpace(user), "@") {
		// A login name is a full address; a bare "alice" is a client set
		// up wrongly, not a guess at anyone's password, so it is told
		// what to fix and counts neither against the address nor toward
		// the user's slowdown.
		s.authFailed("login name has no domain")
		s.err("[AUTH] use your full address as the user name")
		return
	}
	addr, err := s.srv.md.Authenticate(authz, user, pass)
	switch {
	case errors.Is(err, ErrNotAuthorized):
		s.authFailed("authorization identity differs")
		s.err("[AUTH] %v", ErrNotAuthorized)
		return
	case errors.Is(err, ErrAuthFailed):
		reason := "wrong user or password"
		if nameErr != nil {
			reason = "login name is not an address"
		}
		s.authFailed(reason)
		s.srv.throttle.Fail(s.ip)
		s.authFailures++
		s.failDelay(name)
		// RFC 3206 section 4: [AUTH] means the credentials are wrong.
		s.err("[AUTH] invalid user name or password")
		return
	case err != nil:
		s.authFailed("credentials not checked", "err", err)
		s.err("[SYS/TEMP] cannot check credentials now, try again later")
		return
	}

	s.tried = addr
	unlock, ok := s.srv.locks.TryLock(addr)
	if !ok {
		s.authFailed("maildrop in use")
		// RFC 2449 section 8.1.1.
		s.err("[IN-USE] maildrop is in use by another session")
		return
	}
	infos, err := s.srv.md.List(addr)
	if err != nil {
		unlock()
		s.authFailed("maildrop not opened", "err", err)
		s.err("[SYS/TEMP] cannot open maildrop, try again later")
		return
	}
	s.unlock, s.addr, s.state = unlock, addr, stateTransaction
	s.authResult = "authenticated"
	s.srv.log.Info("authenticated", "proto", "pop3", "client", s.ip.String(), "user", addr)
	s.msgs = make([]message, len(infos))
	for i, info := range infos {
		s.msgs[i].MessageInfo = info
	}
	count, size := s.stat()
	s.ok("%s has %d messages (%d octets)", addr, count, size)
}

// authFailed logs a login that did not open the maildrop, and remembers
// why for the session line.
func (s *session) authFailed(reason string, attrs ...any) {
	s.authResult = reason
	s.srv.log.Warn("auth_failed", append([]any{"proto", "pop3", "client", s.ip.String(), "user", s.tried, "reason", reason}, attrs...)...)
}

// loggable bounds a login name the client sent for the log: no address is
// longer (RFC 5321 section 4.5.3.1.3), and the handler quotes the rest.
func loggable(user string) string {
	return strings.ToValidUTF8(user[:min(len(user), 254)], "?")
}

// failDelay slows down password guessing (RFC 1939 section 13 suggests it),
// longer for a user name that keeps failing. name is the login name as
// Options.LoginName spells it, so that case and spaces give no fresh count.
func (s *session) failDelay(name string) {
	t := s.srv.throttle
	t.Pause(t.FailureDelay(name, s.srv.opts.AuthFailDelay), s.srv.closing)
}

// cmdSTLS starts TLS (RFC 2595 section 4).
func (s *session) cmdSTLS(c command) {
	switch {
	case !s.wantArgs(c, 0):
		return
	case s.tls:
		s.err("TLS already active")
		return
	case s.srv.opts.TLSConfig == nil:
		s.err("STLS not available")
		return
	}
	s.ok("begin TLS negotiation")
	if err := s.w.Flush(); err != nil {
		s.result = s.ioResult(err)
		return
	}
	tc := tls.Server(s.raw, s.srv.opts.TLSConfig)
	tc.SetDeadline(s.deadline(s.srv.opts.CommandTimeout))
	if err := tc.Handshake(); err != nil {
		s.result = resultTLSFailed
		return
	}
	// Whatever the client pipelined after STLS arrived in plaintext and must
	// not be taken as sent over TLS (the STARTTLS command injection flaw,
	// CVE-2011-0411): resetting the reader drops it. So does a USER given
	// before TLS.
	s.conn, s.tls, s.user = tc, true, ""
	s.r.Reset(connReader{s})
	s.w.Reset(connWriter{s})
}
