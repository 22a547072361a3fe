package mta

import (
	"log/slog"

	"github.com/emersion/go-smtp"
)

// Metrics is what a Server reports for monitoring (cmd/minimail counts it
// with Prometheus). Options.Metrics nil reports nothing. The methods are
// called from many sessions at once and must not block.
type Metrics interface {
	// Received is one message accepted (a 250 after DATA, or a local
	// submission queued) on listener: "smtp", "submission", "submissions"
	// or "sendmail".
	Received(listener string)
	// Delivered is n copies of a message stored in local mailboxes at
	// receipt, one per mailbox.
	Delivered(n int)
	// Rejected is one refusal, exactly as a "rejected" log line records
	// it: reason is one of Reasons.
	Rejected(reason string)
}

// The reasons of refusals, as the "rejected" log line names them and
// Metrics.Rejected counts them: a fixed set, so that a metric labelled by
// it stays small. A refusal made with an unlisted reason is counted as
// ReasonOther by the metrics.
const (
	ReasonUnknownUser   = "unknown_user"  // 550 5.1.1
	ReasonRelayDenied   = "relay_denied"  // 550 5.7.1 on a recipient we do not serve
	ReasonSenderDenied  = "sender_denied" // submission: MAIL FROM or From: not the user's
	ReasonAuthRequired  = "auth_required" // 530 5.7.0
	ReasonBadAddress    = "bad_address"   // 553 5.1.3, 5.1.7, 5.6.7
	ReasonTooBig        = "too_big"       // 552 5.3.4
	ReasonMailboxFull   = "mailbox_full"  // 452 4.2.2, 552 5.2.2
	ReasonMalformed     = "malformed"     // 550 5.6.0: a message that is no RFC 5322 message
	ReasonProtocol      = "protocol"      // bad sequence or syntax, lines too long
	ReasonPolicy        = "policy"        // the inbound checks' verdict (DMARC), other x.7.x
	ReasonUnavailable   = "unavailable"   // 421/451: shutting down, local trouble
	ReasonTooManyConns  = "too_many_connections"
	ReasonDNSBL         = "dnsbl"
	ReasonRspamd        = "rspamd"
	ReasonGreylist      = "greylist"
	ReasonSpoofedSender = "spoofed_local_sender"
	ReasonEarlyTalker   = "early_talker"
	ReasonOther         = "other"
)

// Reasons lists every reason a refusal may give.
var Reasons = []string{
	ReasonUnknownUser, ReasonRelayDenied, ReasonSenderDenied, ReasonAuthRequired, ReasonBadAddress,
	ReasonTooBig, ReasonMailboxFull, ReasonMalformed, ReasonProtocol, ReasonPolicy, ReasonUnavailable,
	ReasonTooManyConns, ReasonDNSBL, ReasonRspamd, ReasonGreylist, ReasonSpoofedSender, ReasonEarlyTalker,
	ReasonOther,
}

// reasonFor is the reason of a refusal made without one (reject): what its
// reply code says. The refusals whose code is shared by several reasons
// (x.7.1 above all) name theirs with refuse.
func reasonFor(code int, ec smtp.EnhancedCode) string {
	switch {
	case ec[1] == 1 && ec[2] == 1:
		return ReasonUnknownUser
	case ec[1] == 3 && ec[2] == 4:
		return ReasonTooBig
	case ec[1] == 2 && ec[2] == 2:
		return ReasonMailboxFull
	case ec[1] == 7 && ec[2] == 0 && code == 530:
		return ReasonAuthRequired
	case ec[1] == 1, ec[1] == 6 && ec[2] == 7:
		return ReasonBadAddress
	case ec[1] == 6:
		return ReasonMalformed
	case ec[1] == 5:
		return ReasonProtocol
	case ec[1] == 7:
		return ReasonPolicy
	case code == 421, ec[1] == 3, ec[1] == 4:
		return ReasonUnavailable
	}
	return ReasonOther
}

// refuse answers a command with a refusal for reason (one of Reasons). The
// reason goes with the reply to the "rejected" line that logs it (see
// reasonOf).
func (ss *session) refuse(reason string, code int, ec smtp.EnhancedCode, msg string) error {
	return ss.refuseWith(reason, "", smtpErr(code, ec, msg))
}

// refuseWith records reply as the session's last refusal, for reason, with
// detail for the log line that tells of it, and returns it.
func (ss *session) refuseWith(reason, detail string, reply *smtp.SMTPError) error {
	ss.mu.Lock()
	ss.refusal, ss.refusalReason, ss.refusalDetail = reply, reason, detail
	ss.mu.Unlock()
	return reply
}

// reasonOf is the reason of reply (see refusalOf).
func (ss *session) reasonOf(se *smtp.SMTPError) string {
	reason, _, _ := ss.refusalOf(se)
	return reason
}

// refusalOf is the reason and detail of reply: those it was made with
// (named), if it was the session's last refusal, else what its code says,
// with no detail.
func (ss *session) refusalOf(se *smtp.SMTPError) (reason, detail string, named bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if se == ss.refusal {
		return ss.refusalReason, ss.refusalDetail, true
	}
	return reasonFor(se.Code, se.EnhancedCode), "", false
}

// rejected is the one place that logs a refusal, of a connection, a
// sender or a whole transaction, and it counts each one it logs: a new kind
// of refusal is counted once it has a reason.
func (s *Server) rejected(level slog.Level, reason string, attrs ...slog.Attr) {
	s.log.LogAttrs(s.ctx, level, "rejected", append(attrs, slog.String("reason", reason))...)
	if s.opts.Metrics != nil {
		s.opts.Metrics.Rejected(reason)
	}
}

func (s *Server) received(listener string, delivered int) {
	if s.opts.Metrics == nil {
		return
	}
	s.opts.Metrics.Received(listener)
	if delivered > 0 {
		s.opts.Metrics.Delivered(delivered)
	}
}
