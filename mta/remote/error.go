package remote

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/emersion/go-smtp"
)

// Error is why one recipient was not accepted. Whether to retry travels
// inside it (Temporary), together with what a delivery status notification
// needs: the RFC 3463 status, the RFC 3464 Diagnostic-Code and the host that
// answered.
type Error struct {
	// Code is the remote SMTP reply code, or 0 when no server answered
	// (DNS, connection or TLS trouble).
	Code int
	// Enhanced is the RFC 3463 status code, such as "5.1.1". Always set:
	// derived from Code or from the kind of local failure.
	Enhanced string
	// Message is the remote reply text, or a description of the failure.
	Message string
	// Host is the remote host that answered or was tried last; "" if none.
	Host string
	// Err is the underlying cause of a failure without a reply.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Host != "" {
		b.WriteString(e.Host)
		b.WriteString(": ")
	}
	if e.Code != 0 {
		fmt.Fprintf(&b, "%d %s ", e.Code, e.Enhanced)
	}
	b.WriteString(oneLine(e.Message))
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(oneLine(e.Err.Error()))
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether a later attempt may succeed: 4xx replies and
// failures to reach anyone (RFC 5321 4.2.1, 4.5.4.1).
func (e *Error) Temporary() bool { return strings.HasPrefix(e.Enhanced, "4") }

// Status returns the RFC 3463 enhanced status code.
func (e *Error) Status() string { return e.Enhanced }

// Diagnostic returns the RFC 3464 2.3.6 Diagnostic-Code value for a remote
// reply ("smtp; 550 5.1.1 no such user"), or "" when there was no reply.
func (e *Error) Diagnostic() string {
	if e.Code == 0 {
		return ""
	}
	return fmt.Sprintf("smtp; %d %s %s", e.Code, e.Enhanced, oneLine(e.Message))
}

// RemoteMTA returns the host that answered, for RFC 3464 2.3.5.
func (e *Error) RemoteMTA() string {
	if e.Code == 0 {
		return ""
	}
	return e.Host
}

// Failures without a remote reply, with their RFC 3463 codes.
func errNoAnswer(host string, err error) *Error { // X.4.1 no answer from host
	return &Error{Enhanced: "4.4.1", Host: host, Message: "no answer from host", Err: err}
}

func errConnection(host string, err error) *Error { // X.4.2 bad connection
	return &Error{Enhanced: "4.4.2", Host: host, Message: "connection failed", Err: err}
}

func errProtocol(host string, err error) *Error { // X.5.0 other protocol status
	return &Error{Enhanced: "4.5.0", Host: host, Message: "unacceptable reply", Err: err}
}

// errDNS is a failed lookup of name, naming the server that was asked.
// Go's resolver names the first server of /etc/resolv.conf in its errors
// even when every query went to c.DNS, so that name is dropped then.
func (c *Client) errDNS(name string, err error) *Error { // X.4.3 directory server failure
	via := "system resolver"
	if c.DNS != "" {
		via = c.DNS
		if dnsErr, ok := err.(*net.DNSError); ok {
			e := *dnsErr
			e.Server = ""
			err = &e
		}
	}
	return &Error{Enhanced: "4.4.3", Message: "DNS lookup for " + name + " via " + via + " failed", Err: err}
}

func errSecurity(host, msg string, err error) *Error { // X.7.0 security
	return &Error{Enhanced: "4.7.0", Host: host, Message: msg, Err: err}
}

func errPermanent(host, enhanced, msg string) *Error {
	return &Error{Enhanced: enhanced, Host: host, Message: msg}
}

// replyError turns what go-smtp returned into an *Error: a reply keeps its
// code and text; a reply over our bounds (see limit.go) is a protocol
// error, temporary so that a misbehaving next hop delays the mail rather
// than bounces it; anything else is a broken connection.
func replyError(host string, err error) *Error {
	var le *replyLimitError
	if errors.As(err, &le) || errors.Is(err, smtp.ErrTooLongLine) {
		return errProtocol(host, err)
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return errConnection(host, err)
	}
	e := &Error{Code: se.Code, Host: host, Message: se.Message}
	switch {
	case se.Code >= 400 && se.Code < 600:
		class := se.Code / 100
		if ec := se.EnhancedCode; ec[0] == class && inRange(ec[1]) && inRange(ec[2]) {
			e.Enhanced = fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
		} else {
			// RFC 3463 2: without an enhanced code, only the class is known.
			e.Enhanced = fmt.Sprintf("%d.0.0", class)
		}
	default:
		// An unexpected code (a 2xx or 3xx where another was due) is a
		// protocol error: RFC 5321 4.2.1 says to treat it as transient.
		e.Enhanced = "4.5.0"
	}
	return e
}

// inRange checks an RFC 3463 subject or detail: one to three digits.
func inRange(n int) bool { return n >= 0 && n <= 999 }

// oneLine folds a multi-line reply into one line for logs and DSN fields.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\r' || r == '\n' }), " ")
}
