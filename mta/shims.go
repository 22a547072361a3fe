package mta

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// This file owns every adjustment of go-smtp's behaviour: what it writes
// is rewritten here, and the one thing it cannot be stopped from doing
// wrong (TLS under its feet after STARTTLS) is taken over here. Each shim
// is pinned by a test in shims_test.go that fails when a go-smtp upgrade
// changes the text it corrects, so the next upgrade shows what can go.
//
// go-smtp writes each reply line with its own flush, so a rewrite never
// has to look across two writes.

// replyShims rewrites go-smtp's reply lines into RFC-exact ones.
type replyShims struct {
	exact map[string]string // whole line (without CRLF) -> replacement
	// sizeLine is the SIZE keyword go-smtp advertises: the engine runs
	// with one byte more than the limit (see Server.engine), the client
	// must see the limit itself (RFC 1870 4: "the maximum size").
	sizeFrom, sizeTo string
	hostname         string
}

func newReplyShims(maxMessageBytes int64, hostname string) *replyShims {
	r := &replyShims{exact: map[string]string{}, hostname: hostname}
	// RFC 5321 4.2.4 and 4.3.2: a command out of order is 503 ("bad
	// sequence of commands"); go-smtp says 502 ("not implemented").
	for _, text := range []string{
		"Please introduce yourself first.",
		"MAIL not allowed during message transfer",
		"Missing MAIL FROM command.",
		"RCPT not allowed during message transfer",
		"DATA not allowed during message transfer",
		"Missing RCPT TO command.",
	} {
		r.exact["502 5.5.1 "+text] = "503 5.5.1 " + text
	}
	// RFC 5321 4.2.4: an unrecognised command is 500, and RFC 3463 calls
	// it 5.5.1 (invalid command); go-smtp answers a verb longer than four
	// letters with 501 5.5.2 (syntax error in parameters).
	r.exact["501 5.5.2 Bad command"] = "500 5.5.1 command not recognized"
	// RFC 5321 4.1.1.11: an unknown MAIL or RCPT parameter is 555.
	r.exact["500 5.5.4 Unknown MAIL FROM argument"] = "555 5.5.4 unknown MAIL FROM parameter"
	r.exact["500 5.5.4 Unknown RCPT TO argument"] = "555 5.5.4 unknown RCPT TO parameter"
	// The same for the RFC 3461 parameters where DSN is not offered (the
	// MX): go-smtp says 504 ("not implemented"), as for a known command.
	for _, p := range []string{"RET", "ENVID"} {
		r.exact["504 5.5.4 "+p+" is not implemented"] = "555 5.5.4 unknown MAIL FROM parameter"
	}
	for _, p := range []string{"NOTIFY", "ORCPT"} {
		r.exact["504 5.5.4 "+p+" is not implemented"] = "555 5.5.4 unknown RCPT TO parameter"
	}
	// RFC 4954 4: a response that is not valid base64 is 501 5.5.2.
	r.exact["454 4.7.0 Invalid base64 data"] = "501 5.5.2 invalid base64 data"
	r.sizeFrom = "SIZE " + strconv.FormatInt(maxMessageBytes+1, 10)
	r.sizeTo = "SIZE " + strconv.FormatInt(maxMessageBytes, 10)
	return r
}

// unrecognizedPrefix is go-smtp's reply to an unknown four-letter verb,
// which carries the verb: "500 5.5.2 Syntax errors, FOOB command
// unrecognized". Only the enhanced code is wrong (RFC 3463 5.5.1).
const unrecognizedPrefix = "500 5.5.2 Syntax errors, "

// rewrite returns p with go-smtp's reply lines corrected, and how many of
// them refuse a command (4xx or 5xx, except 421, which closes anyway).
func (r *replyShims) rewrite(p []byte) (out []byte, refusals int) {
	out = p
	for rest, at := p, 0; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		text := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if isRefusal(text) {
			refusals++
		}
		if fixed, ok := r.fix(text); ok {
			if &out[0] == &p[0] {
				out = append([]byte(nil), p[:at]...)
			}
			out = append(append(out, fixed...), line[len(text):]...)
		} else if &out[0] != &p[0] {
			out = append(out, line...)
		}
		at += len(line)
	}
	return out, refusals
}

func (r *replyShims) fix(text []byte) (string, bool) {
	if len(text) < 4 {
		return "", false
	}
	switch text[0] {
	case '2':
		// EHLO keyword line: "250-SIZE n" or, last, "250 SIZE n".
		if string(text[4:]) == r.sizeFrom {
			return string(text[:4]) + r.sizeTo, true
		}
		// RFC 5321 4.1.1.1: the reply to EHLO and HELO starts with the
		// server's own name; go-smtp starts with "Hello", gives HELO an
		// enhanced code (RFC 2034 3: only after EHLO), and echoes the
		// client's name as it came, control characters included (a bare
		// CR in a reply, RFC 5321 2.3.8).
		if greet, ok := bytes.CutPrefix(text, []byte("250-Hello ")); ok {
			return "250-" + r.hostname + " Hello " + printable(greet), true
		}
		if greet, ok := bytes.CutPrefix(text, []byte("250 2.0.0 Hello ")); ok {
			return "250 " + r.hostname + " Hello " + printable(greet), true
		}
	case '4':
		if fixed, ok := r.exact[string(text)]; ok {
			return fixed, true
		}
	case '5':
		if fixed, ok := r.exact[string(text)]; ok {
			return fixed, true
		}
		if bytes.HasPrefix(text, []byte(unrecognizedPrefix)) {
			return "500 5.5.1 " + string(text[len("500 5.5.2 "):]), true
		}
	}
	return "", false
}

// printable shows control characters as '?'.
func printable(b []byte) string {
	out := []byte(string(b))
	for i, c := range out {
		if c < 0x20 || c == 0x7f {
			out[i] = '?'
		}
	}
	return string(out)
}

// isRefusal: the last line of a 4xx or 5xx reply (RFC 5321 4.2: a space
// after the code), except 421, which the server sends as it closes.
func isRefusal(text []byte) bool {
	return len(text) >= 4 && (text[0] == '4' || text[0] == '5') && text[3] == ' ' &&
		!bytes.HasPrefix(text, []byte("421"))
}

// engineConn is the connection go-smtp holds: a view of a trackedConn.
//
// go-smtp implements STARTTLS by wrapping the connection it holds in a
// *tls.Conn of its own, after which everything it reads and writes is
// encrypted below it and out of reach of any shim (and of the timeout
// handling in trackedConn.Read). So the server does STARTTLS itself: when
// go-smtp writes its "220 Ready to start TLS", the view sends it, runs the
// handshake on the transport (within CommandTimeout), retires itself and
// hands the now-TLS trackedConn to the engine for TLS connections as a new
// view, whose greeting is suppressed (RFC 3207 4.2: the client speaks
// first, with EHLO). go-smtp's own handshake on the retired view reads EOF
// and fails; what it writes is dropped, and the session of the retired view
// refuses everything (session.gone), so plain-text commands pipelined
// after STARTTLS, which go-smtp may still hold in its buffer, are never
// run (the STARTTLS command injection of CVE-2011-0411).
type engineConn struct {
	tc           *trackedConn
	retired      atomic.Bool
	skipGreeting atomic.Bool
}

// startTLSReady is go-smtp's reply to STARTTLS, just before its handshake.
var startTLSReady = []byte("220 2.0.0 Ready to start TLS")

func (v *engineConn) Read(p []byte) (int, error) {
	if v.retired.Load() {
		return 0, io.EOF
	}
	return v.tc.Read(p)
}

func (v *engineConn) Write(p []byte) (int, error) {
	switch {
	case v.retired.Load():
		return len(p), nil
	case v.skipGreeting.CompareAndSwap(true, false) && bytes.HasPrefix(p, []byte("220 ")):
		return len(p), nil
	case bytes.HasPrefix(p, startTLSReady):
		v.startTLS(p)
		return len(p), nil
	}
	return v.tc.Write(p)
}

func (v *engineConn) startTLS(ready []byte) {
	tc := v.tc
	v.retired.Store(true)
	if _, err := tc.Write(ready); err != nil {
		tc.Close()
		return
	}
	raw := tc.transport()
	t := tls.Server(raw, tc.srv.starttls)
	raw.SetDeadline(time.Now().Add(tc.srv.opts.CommandTimeout))
	if err := t.HandshakeContext(tc.srv.ctx); err != nil {
		tc.srv.log.Debug("tls handshake failed", "client", tc.srv.clientIP(raw), "err", err)
		tc.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	tc.mu.Lock()
	tc.conn, tc.tls = t, t
	tc.mu.Unlock()
	tc.srv.toEngine(tc, true)
}

func (v *engineConn) Close() error {
	if v.retired.Load() {
		return nil
	}
	return v.tc.Close()
}

func (v *engineConn) LocalAddr() net.Addr  { return v.tc.LocalAddr() }
func (v *engineConn) RemoteAddr() net.Addr { return v.tc.RemoteAddr() }

func (v *engineConn) SetDeadline(t time.Time) error {
	if v.retired.Load() {
		return nil
	}
	return v.tc.SetDeadline(t)
}

func (v *engineConn) SetReadDeadline(t time.Time) error {
	if v.retired.Load() {
		return nil
	}
	return v.tc.SetReadDeadline(t)
}

func (v *engineConn) SetWriteDeadline(t time.Time) error {
	if v.retired.Load() {
		return nil
	}
	return v.tc.SetWriteDeadline(t)
}

var _ net.Conn = (*engineConn)(nil)

// errGone answers what go-smtp still parses for a session whose
// connection was cut or handed on; nobody reads it.
var errGone = fmt.Errorf("mta: connection already ended")
