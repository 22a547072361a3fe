package mta

import (
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// authAllowed: AUTH only over TLS (RFC 8314 and RFC 4954 4) unless the
// operator allowed otherwise for testing.
func (ss *session) authAllowed() bool {
	_, isTLS := ss.tlsState()
	return isTLS || ss.srv.opts.AllowInsecureAuth
}

// AuthMechanisms is what EHLO advertises: PLAIN and LOGIN on submission
// once TLS is up; nothing on the MX, nothing before TLS.
func (ss *session) AuthMechanisms() []string {
	_, user := ss.current()
	if ss.srv.kind != kindSubmission || !ss.authAllowed() || user != "" {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth starts a SASL exchange (RFC 4954).
func (ss *session) Auth(mech string) (sasl.Server, error) {
	tx, _ := ss.current()
	switch {
	case ss.gone():
		return nil, errGone
	case ss.srv.kind != kindSubmission:
		return nil, ss.reject(502, smtp.EnhancedCode{5, 5, 1}, "AUTH not available on this port")
	case !ss.authAllowed():
		return nil, ss.reject(538, smtp.EnhancedCode{5, 7, 11}, "encryption required for authentication")
	case tx != nil:
		return nil, ss.reject(503, smtp.EnhancedCode{5, 5, 1}, "AUTH not permitted during a mail transaction")
	case ss.srv.opts.AuthThrottle.Blocked(ss.ip):
		return nil, ss.throttled()
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return ss.newPlainServer(), nil
	case sasl.Login:
		return &loginServer{auth: ss.authenticate}, nil
	}
	return nil, ss.reject(504, smtp.EnhancedCode{5, 5, 4}, "unrecognized authentication type")
}

func (ss *session) throttled() error {
	ss.srv.log.Warn("auth_failed", "listener", ss.listener(), "client", ss.ip.String(), "reason", "too many failed logins")
	return ss.reject(454, smtp.EnhancedCode{4, 7, 0}, "too many failed logins, try again later")
}

var (
	errAuthFailed = smtpErr(535, smtp.EnhancedCode{5, 7, 8}, "authentication credentials invalid")
	errNoDomain   = smtpErr(535, smtp.EnhancedCode{5, 7, 8}, "use your full address as the user name")
)

// authenticate checks one set of credentials. The password is never logged.
func (ss *session) authenticate(authz, user, password string) error {
	// A response line cut short by the command timeout reaches here as if
	// whole (see trackedConn.Read); it is never checked.
	if ss.gone() {
		return errGone
	}
	throttle := ss.srv.opts.AuthThrottle
	if throttle.Blocked(ss.ip) {
		return ss.throttled()
	}
	if !strings.Contains(strings.TrimSpace(user), "@") {
		// A login name is a full address (alice@example.org); a bare
		// "alice" is a client set up wrongly, not a guess at anyone's
		// password, so it is told what to fix and counts neither
		// against the address nor toward the user's slowdown.
		ss.srv.log.Warn("auth_failed", "listener", ss.listener(), "client", ss.ip.String(), "user", logSafe(user), "reason", "login name has no domain")
		return errNoDomain
	}
	addr, err := ss.srv.users.Authenticate(authz, user, password)
	switch {
	case errors.Is(err, ErrNotAuthorized):
		// Nothing was checked (the store refuses before the password),
		// so nothing is counted.
		ss.srv.log.Warn("auth_failed", "listener", ss.listener(), "client", ss.ip.String(), "user", logSafe(user), "reason", "authorization identity differs")
		return ss.reject(535, smtp.EnhancedCode{5, 7, 8}, "authorization identity must be empty or the login name")
	case errors.Is(err, ErrAuthFailed):
		throttle.Fail(ss.ip)
		// One spelling per user for the throttle and the store alike; a
		// name no user can have counts as "".
		name, nameErr := ss.srv.opts.LoginName(user)
		if nameErr != nil {
			name = ""
		}
		reason := "wrong user or password"
		if nameErr != nil {
			reason = "login name is not an address"
		}
		ss.srv.log.Warn("auth_failed", "listener", ss.listener(), "client", ss.ip.String(), "user", logSafe(user), "reason", reason)
		// The delay slows guessing within the throttle's allowance, and
		// grows for a user name that keeps failing from anywhere.
		throttle.Pause(throttle.FailureDelay(name, ss.srv.opts.AuthFailDelay), ss.srv.ctx.Done())
		return errAuthFailed
	case err != nil:
		ss.srv.log.Error("auth_failed", "listener", ss.listener(), "client", ss.ip.String(), "user", logSafe(user), "reason", "credentials not checked", "err", err)
		return smtpErr(454, smtp.EnhancedCode{4, 7, 0}, "temporary authentication failure")
	}
	ss.mu.Lock()
	ss.user = addr
	ss.mu.Unlock()
	ss.srv.log.Info("authenticated", "listener", ss.listener(), "client", ss.ip.String(), "user", addr)
	return nil
}

// logSafe bounds client-supplied text (a login name, a header value) for
// the log, control characters shown as '?'.
func logSafe(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

var errMalformed = smtpErr(501, smtp.EnhancedCode{5, 5, 2}, "malformed authentication response")

// plainServer is go-sasl's SASL PLAIN server (RFC 4616), the one POP3 uses
// too, with this server's replies: a response that is not authzid NUL
// authcid NUL passwd, or has an empty authcid (RFC 4616 section 2: authcid
// = 1*SAFE), is 501 5.5.2, where go-smtp would answer go-sasl's plain error
// with 454, a temporary failure. The three strings go to authenticate as
// they came.
type plainServer struct {
	sasl.Server
	parsed bool // the response was well formed and went to authenticate
}

func (ss *session) newPlainServer() *plainServer {
	p := &plainServer{}
	p.Server = sasl.NewPlainServer(func(authz, user, password string) error {
		if user == "" {
			return errMalformed
		}
		p.parsed = true
		return ss.authenticate(authz, user, password)
	})
	return p
}

func (p *plainServer) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := p.Server.Next(response)
	if err != nil && !p.parsed {
		err = errMalformed
	}
	return challenge, done, err
}

// loginServer is the server side of the obsolete but widespread LOGIN
// mechanism (draft-murchison-sasl-login): Outlook, ssmtp and many devices
// still need it, and go-sasl ships only the client.
type loginServer struct {
	auth  func(authz, user, password string) error
	state int // 0 start, 1 username asked, 2 password asked, 3 done
	user  string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.state {
	case 0:
		if len(response) == 0 {
			l.state = 1
			return []byte("Username:"), false, nil
		}
		l.user, l.state = string(response), 2
		return []byte("Password:"), false, nil
	case 1:
		if len(response) == 0 {
			return nil, true, errMalformed
		}
		l.user, l.state = string(response), 2
		return []byte("Password:"), false, nil
	case 2:
		l.state = 3
		return nil, true, l.auth("", l.user, string(response))
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}
