package mta

import "github.com/emersion/go-smtp"

// Verdict is what the inbound checks (Options.Verify) decide about one
// message on the MX. The checks speak of messages, not of SMTP; this
// package turns the verdict into the reply to DATA.
type Verdict struct {
	Disposition Disposition
	// Reason is the text of the reply when the message is not accepted.
	Reason string
	// Message replaces the message for Accept (the checks removed fields
	// from it); nil keeps the message as it was.
	Message []byte
	// Summary is the checks' verdicts for the transaction's log line.
	Summary string
	// Prepend is what the checks add in front of the message for Accept
	// (their Authentication-Results field), CRLF-terminated.
	Prepend []byte
	// Authenticated is the domains the message authenticated for (SPF or
	// DKIM pass), for the local-sender rule and greylisting.
	Authenticated []string
}

// Disposition is what becomes of a message the checks have seen.
type Disposition int

const (
	// Accept stores Verdict.Message.
	Accept Disposition = iota
	// RejectMalformed: the message cannot carry the checks' results (a
	// header that starts with a continuation line): 550 5.6.0.
	RejectMalformed
	// RejectUnevaluable: the message cannot be checked (no single From
	// domain, RFC 7489 6.6.1): 550 5.7.1.
	RejectUnevaluable
	// RejectPolicy: the checks fail under the author domain's reject
	// policy (RFC 7489 6.6.4): 550 5.7.1.
	RejectPolicy
	// Defer: the checks could not reach a verdict for now (DNS trouble
	// where the policy may reject): 451 4.7.0, the sender tries again.
	Defer
	// RejectSpam: the spam filter refuses the message: 550 5.7.1.
	RejectSpam
	// DeferSpam: the spam filter wants the message again later (rspamd's
	// soft reject and greylist): 451 4.7.1.
	DeferSpam
)

// reply is the answer to DATA for a message the checks do not accept. A
// disposition this package does not know defers the message: a 4xx costs
// a retry, a wrong 5xx loses the message.
func (v Verdict) reply() *smtp.SMTPError {
	switch v.Disposition {
	case RejectMalformed:
		return smtpErr(550, smtp.EnhancedCode{5, 6, 0}, v.Reason)
	case RejectUnevaluable, RejectPolicy, RejectSpam:
		// RFC 3463 X.7.1: delivery not authorized, message refused.
		return smtpErr(550, smtp.EnhancedCode{5, 7, 1}, v.Reason)
	case Defer:
		return smtpErr(451, smtp.EnhancedCode{4, 7, 0}, v.Reason)
	case DeferSpam:
		return smtpErr(451, smtp.EnhancedCode{4, 7, 1}, v.Reason)
	}
	return smtpErr(451, codeTransient, "temporary failure checking message, try again later")
}
