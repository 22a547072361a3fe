package mta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"minimail/mta/guard"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Antispam on the MX (minimail/mta/antispam supplies the filters; none of
// them ever runs on submission, where every session is authenticated):
//
//	connect  -> early talker? 554 5.5.1, closed     (Options.GreetDelay)
//	         -> DNSBL lookups start                  (Options.Blocklist)
//	MAIL     -> local domain without SPF pass? 550 5.7.1 (Options.SenderSPF)
//	RCPT     -> client listed? 554 5.7.1, postmaster excepted
//	DATA     -> Verify -> From: in a local domain, unauthenticated? 550 5.7.1
//	         -> greylisted triplet? 451 4.7.1        (Options.Greylist)
//	         -> rspamd's action                      (Options.Scan)
//
// Every refusal has a reason, one of the words below, which the log line
// that tells of it carries as reason= (the transaction's line, or the
// connection's for an early talker), and passes through antispamRefusal.

// Their reasons are ReasonEarlyTalker, ReasonDNSBL, ReasonSpoofedSender,
// ReasonGreylist and ReasonRspamd (metrics.go holds every reason).

// DefaultGreetDelay is how long the MX waits before its greeting for a
// client to speak out of turn (RFC 5321 4.3.1: the client waits for the
// 220). Postscreen waits 6 s, but caches the clients that passed; with no
// such cache every sender pays the wait, so it is kept short: bots that
// talk first mostly do so at once.
const DefaultGreetDelay = 500 * time.Millisecond

// Blocklist tells whether a client is listed (*antispam.DNSBL): the zone
// and its reason. A lookup that fails is not a listing.
type Blocklist interface {
	Lookup(ctx context.Context, ip netip.Addr) (zone, reason string, listed bool)
}

// Greylister defers unknown (client network, sender, recipient) triplets
// (*antispam.Greylist). Check returns how long until the message's retry
// is accepted, 0 to accept it now; authenticated are the domains the
// message authenticated for (Verdict.Authenticated). Delivered records
// that mail for such domains was accepted.
type Greylister interface {
	Check(ip netip.Addr, from string, rcpts, authenticated []string) (time.Duration, error)
	Delivered(domains []string) error
}

// Envelope is what Options.Scan is told about a message besides its text.
type Envelope struct {
	IP    netip.Addr
	Helo  string
	From  string   // "" for the null sender
	Rcpts []string // the accepted recipients
	ID    string   // the transaction's id, the one the 250 gives
}

// antispamRefusal is the one place every antispam refusal of a session
// passes, with its reason (one of the Reason words) and a detail for the
// log (an early talker has no session: earlyTalker logs it through
// Server.rejected). tx, when not nil, is told the detail too: a refusal
// before MAIL (the local-sender rule) holds it in a scratch transaction.
func (ss *session) antispamRefusal(tx *transaction, reason, detail string, reply *smtp.SMTPError) error {
	if tx != nil {
		ss.setReason(tx, reason, detail)
	}
	return ss.refuseWith(reason, detail, reply)
}

// blocklisted is the DNSBL verdict on the session's client; a session
// with no connection of its own (SubmitLocal's) has none.
func (ss *session) blocklisted() (zone, reason string, listed bool) {
	if ss.tc == nil {
		return "", "", false
	}
	return ss.tc.blocklist.result()
}

// blockCheck is the DNSBL verdict on one connection, looked up once, in
// the background from the moment it is accepted.
type blockCheck struct {
	done         chan struct{}
	zone, reason string
	listed       bool
}

func (s *Server) startBlockCheck(ip netip.Addr) *blockCheck {
	if s.kind != kindMX || s.opts.Blocklist == nil {
		return nil
	}
	b := &blockCheck{done: make(chan struct{})}
	go func() {
		defer close(b.done)
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("dnsbl lookup panicked", "client", ip.String(), "panic", fmt.Sprint(p))
			}
		}()
		b.zone, b.reason, b.listed = s.opts.Blocklist.Lookup(s.ctx, ip)
	}()
	return b
}

// result waits for the lookup, which its own timeout bounds.
func (b *blockCheck) result() (zone, reason string, listed bool) {
	if b == nil {
		return "", "", false
	}
	<-b.done
	return b.zone, b.reason, b.listed
}

// earlyTalker waits GreetDelay before the greeting and reports whether the
// client sent anything meanwhile (postscreen's pregreet test); such a
// client is refused and closed here, before go-smtp sees it, so nothing it
// sent is read as a command. A client that hangs up is simply closed. A
// client that waited is not made to wait again for a day (greetPassed), as
// postscreen does: a real MX that sends often pays the wait once.
func (s *Server) earlyTalker(tc *trackedConn) bool {
	d := s.opts.GreetDelay
	if s.kind != kindMX || d <= 0 || tc.implicitTLS {
		return false
	}
	conn := tc.transport()
	ip := guard.IP(conn.RemoteAddr())
	if s.greetPassed.Has(ip) {
		return false
	}
	conn.SetReadDeadline(time.Now().Add(d))
	var one [1]byte
	n, err := conn.Read(one[:])
	conn.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case n > 0:
		s.rejected(slog.LevelInfo, ReasonEarlyTalker, slog.String("listener", "smtp"), slog.String("client", s.clientIP(conn)),
			slog.String("result", "554 5.5.1 "+earlyTalkerText))
		tc.reply(554, "5.5.1", s.opts.Hostname+" "+earlyTalkerText)
		tc.Close()
		return true
	case err != nil && errors.As(err, &ne) && ne.Timeout():
		s.greetPassed.Add(ip)
		return false
	case err != nil:
		tc.Close() // gone before the greeting
		return true
	}
	return false
}

const earlyTalkerText = "protocol error: client sent data before the greeting"

// isPostmaster: RFC 5321 4.5.1's address, which a listed client may still
// write to (to ask why it is listed).
func (s *Server) isPostmaster(a address) bool {
	return strings.EqualFold(a.Local, "postmaster") && s.isLocal(a.Domain)
}

// checkLocalSender applies the rule that a local domain's address, on the
// MX, is only for clients its SPF record names: the sender of such mail is
// one of our users, who sends through submission.
func (ss *session) checkLocalSender(tx *transaction, a address) error {
	o := &ss.srv.opts
	if ss.srv.kind != kindMX || o.SenderSPF == nil || !ss.srv.isLocal(a.Domain) {
		return nil
	}
	from := a.Path()
	result := o.SenderSPF(ss.srv.ctx, net.IP(ss.ip.AsSlice()), ss.conn.Hostname(), from)
	switch result {
	case "pass":
		tx.authenticated = []string{a.Domain}
		return nil
	case "temperror":
		// Our own domain's record could not be read: a retry may pass.
		return ss.antispamRefusal(tx, ReasonSpoofedSender, "spf="+result, smtpErr(451, smtp.EnhancedCode{4, 7, 1},
			fmt.Sprintf("<%s> is in a local domain and its SPF record could not be checked, try again later", logSafe(from))))
	}
	return ss.antispamRefusal(tx, ReasonSpoofedSender, "spf="+result, smtpErr(550, smtp.EnhancedCode{5, 7, 1},
		fmt.Sprintf("<%s> is in a local domain and this client is not authorized to send for it (SPF %s): use submission", logSafe(from), result)))
}

// checkLocalFrom applies the same rule to From: the author may be in a
// local domain only if the message authenticated for that domain (SPF
// for it passed, or its own DKIM signature verified).
func (ss *session) checkLocalFrom(tx *transaction, msg []byte, authenticated []string) error {
	if ss.srv.kind != kindMX || ss.srv.opts.SenderSPF == nil {
		return nil
	}
	fields, err := parseHeader(msg, "From")
	if err != nil {
		return nil // Verify has judged the header already
	}
	for _, f := range fields {
		list, err := addrParser.ParseList(f.Value)
		if err != nil {
			continue
		}
		for _, m := range list {
			a, err := parseAddress(m.Address)
			if err != nil || !ss.srv.isLocal(a.Domain) || containsFold(authenticated, a.Domain) {
				continue
			}
			return ss.antispamRefusal(tx, ReasonSpoofedSender, "from="+logSafe(m.Address), smtpErr(550, smtp.EnhancedCode{5, 7, 1},
				fmt.Sprintf("From: <%s> is in a local domain and the message is not authenticated for it: use submission", logSafe(m.Address))))
		}
	}
	return nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// greylist asks Options.Greylist about the message; a failure lets it
// through.
func (ss *session) greylist(tx *transaction, authenticated []string) error {
	g := ss.srv.opts.Greylist
	if ss.srv.kind != kindMX || g == nil {
		return nil
	}
	wait, err := g.Check(ss.ip, tx.from, tx.local, authenticated)
	if err != nil {
		ss.srv.log.Error("greylist check failed", "id", tx.id, "err", err, "result", "not greylisted")
		return nil
	}
	if wait <= 0 {
		return nil
	}
	secs := int((wait + time.Second - 1) / time.Second)
	return ss.antispamRefusal(tx, ReasonGreylist, "", smtpErr(451, smtp.EnhancedCode{4, 7, 1},
		fmt.Sprintf("greylisted, please try again in %d seconds", secs)))
}

// scan asks Options.Scan (rspamd) about the message and applies its
// verdict to mb. A scan that fails delivers the message unscanned: rspamd
// down must not stop mail.
func (ss *session) scan(tx *transaction, mb *msgBuf) ([]byte, error) {
	o := &ss.srv.opts
	if ss.srv.kind != kindMX || o.Scan == nil {
		return nil, nil
	}
	env := Envelope{IP: ss.ip, Helo: ss.conn.Hostname(), From: tx.from, Rcpts: tx.local, ID: tx.id}
	v, err := o.Scan(ss.srv.ctx, env, mb.bytes())
	if v.Message != nil {
		mb.set(v.Message) // forged result fields removed, even unscanned
	}
	if err != nil {
		ss.srv.log.Warn("scan failed", "id", tx.id, "err", err, "result", "delivered unscanned")
		tx.checks = strings.TrimSpace(tx.checks + " spam=unscanned")
		return nil, nil
	}
	if v.Summary != "" {
		tx.checks = strings.TrimSpace(tx.checks + " " + v.Summary)
	}
	if v.Disposition != Accept {
		return nil, ss.antispamRefusal(tx, ReasonRspamd, "", v.reply())
	}
	return v.Prepend, nil
}

// greylistDelivered tells the greylist which domains delivered a message.
func (ss *session) greylistDelivered(tx *transaction) {
	g := ss.srv.opts.Greylist
	if ss.srv.kind != kindMX || g == nil || len(tx.authenticated) == 0 {
		return
	}
	if err := g.Delivered(tx.authenticated); err != nil {
		ss.srv.log.Error("greylist update failed", "id", tx.id, "err", err)
	}
}
