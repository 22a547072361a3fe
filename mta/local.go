package mta

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/emersion/go-smtp"

	"minimail/mta/delivery"
)

// LocalMessage is a message handed in on this machine rather than over
// SMTP: `minimail sendmail`, for cron and scripts. Who may use which
// sender is the caller's rule (the command's); SubmitLocal does not hold
// From: to the sender as submission holds it to the login.
type LocalMessage struct {
	From     string // envelope sender, a full address
	FullName string // display name of the From: field added when there is none
	Rcpts    []string
	User     string // the Unix user who handed it in, for Received and the log
	UID      int
	Message  []byte // as read: LF or CRLF line endings
}

// SubmitLocal takes a message the way the submission listener takes one
// from a logged-in user, and returns its id once it is stored (local
// mailboxes, then the queue): the same recipient rules and limits
// (MaxRecipients, MaxMessageBytes, MaxHeaderBytes), Bcc: removed, Date:,
// Message-ID: (and From:) added when missing, DKIM-signed for the
// sender's domain when it goes out, and a Received field naming the local
// user. A refusal is an *smtp.SMTPError; a 4xx one is worth a retry.
func (s *Server) SubmitLocal(m LocalMessage) (string, error) {
	if s.kind != kindSubmission || s.queue == nil {
		return "", errors.New("mta: SubmitLocal needs a submission server")
	}
	ss := &session{srv: s}
	tx := &transaction{id: delivery.NewID(), start: time.Now(), utf8: true}
	reply := ss.submitLocal(tx, m)
	var se *smtp.SMTPError
	if !errors.As(reply, &se) {
		se = smtpErr(451, codeTransient, "local submission failed, try again later")
	}
	event := "delivered"
	switch {
	case se.Code >= 400:
		event = "rejected"
		if se.Code < 500 {
			event = "deferred"
		}
	case len(tx.remote) > 0:
		event = "queued"
	}
	attrs := []slog.Attr{
		slog.String("id", tx.id), slog.String("listener", "sendmail"), slog.String("user", m.User),
		slog.Int("uid", m.UID), slog.String("from", tx.from),
		slog.Any("rcpts", append(append([]string(nil), tx.local...), tx.remote...)), slog.Any("refused", tx.refused),
		slog.Int("size", len(m.Message)),
		slog.String("result", fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)),
		slog.Duration("duration", time.Since(tx.start)),
	}
	switch event {
	case "rejected":
		s.rejected(slog.LevelInfo, ss.reasonOf(se), attrs...)
	case "deferred":
		s.log.LogAttrs(s.ctx, slog.LevelWarn, event, attrs...)
	default:
		s.log.LogAttrs(s.ctx, slog.LevelInfo, event, attrs...)
		s.received("sendmail", tx.stored)
	}
	if se.Code >= 300 {
		return "", se
	}
	return tx.id, nil
}

func (ss *session) submitLocal(tx *transaction, m LocalMessage) error {
	s := ss.srv
	if s.isDraining() {
		return smtpErr(421, smtp.EnhancedCode{4, 3, 2}, "shutting down")
	}
	a, err := parseAddress(m.From)
	if err != nil {
		return ss.reject(553, smtp.EnhancedCode{5, 1, 7}, "bad sender address: "+err.Error())
	}
	tx.from = a.Path()
	if len(m.Rcpts) == 0 {
		return ss.reject(554, smtp.EnhancedCode{5, 5, 1}, "no valid recipients")
	}
	if len(m.Rcpts) > s.opts.MaxRecipients {
		return ss.reject(452, smtp.EnhancedCode{4, 5, 3}, fmt.Sprintf("more than %d recipients", s.opts.MaxRecipients))
	}
	// Every recipient must pass, or nothing is stored: the caller is told
	// at once, rather than by a bounce, and may fix and resend.
	for _, r := range m.Rcpts {
		err := ss.rcpt(tx, r, nil)
		var se *smtp.SMTPError
		switch {
		case err == nil:
			continue
		case !errors.As(err, &se):
			return err
		}
		tx.refused = append(tx.refused, fmt.Sprintf("%s %d", logSafe(r), se.Code))
		return ss.refuse(ss.reasonOf(se), se.Code, se.EnhancedCode, fmt.Sprintf("<%s>: %s", logSafe(r), se.Message))
	}
	if int64(len(m.Message)) > s.opts.MaxMessageBytes {
		return ss.reject(552, smtp.EnhancedCode{5, 3, 4}, ss.tooBig())
	}
	msg := normalizeCRLF(m.Message)
	if int64(len(msg)) > s.opts.MaxMessageBytes {
		return ss.reject(552, smtp.EnhancedCode{5, 3, 4}, ss.tooBig())
	}
	if se := s.checkHeader(msg); se != nil {
		return se
	}
	fields, err := parseHeader(msg, "From", "Date", "Message-ID")
	if err != nil {
		return ss.reject(550, smtp.EnhancedCode{5, 6, 0}, "malformed message header")
	}
	mb := s.bufs.get(len(msg))
	defer s.bufs.put(mb)
	mb.b = append(mb.b, stripBcc(msg)...)
	now := s.opts.Now()
	var from []byte
	if len(fieldsNamed(fields, "From")) == 0 {
		from = localFrom(m.FullName, tx.from)
	}
	mb.prepend(from, submissionHeaders(fields, false, tx.from, s.opts.Hostname, now))
	if err := s.sign(tx, tx.from, mb); err != nil {
		return err
	}
	mb.prepend(receivedLocal(m.User, m.UID, s.opts.Hostname, tx.id, append(append([]string(nil), tx.local...), tx.remote...), now))
	if !s.beginCommit() {
		return smtpErr(421, smtp.EnhancedCode{4, 3, 2}, "shutting down")
	}
	defer s.endCommit()
	return ss.store(tx, m.User, mb.bytes())
}

// sign prepends the DKIM signature of the sender's domain to a message
// that leaves the machine (Options.Sign).
func (s *Server) sign(tx *transaction, sender string, mb *msgBuf) error {
	// Signed when it leaves: to a remote recipient, or through an alias
	// that forwards (mail from the MX is never signed as ours).
	if (len(tx.remote) == 0 && !tx.forwards) || s.opts.Sign == nil {
		return nil
	}
	a, _ := parseAddress(sender)
	sig, err := s.opts.Sign(a.Domain, mb.bytes())
	if err != nil {
		s.log.Error("dkim signing failed", "id", tx.id, "err", err)
		return smtpErr(451, codeTransient, "temporary failure signing message, try again later")
	}
	mb.prepend(sig)
	return nil
}

// localFrom is the From: field of a local message without one: the
// sender, with the full name (sendmail -F) as its display name, quoted.
func localFrom(name, addr string) []byte {
	var b bytes.Buffer
	b.WriteString("From: ")
	if name != "" {
		b.WriteByte('"')
		for _, r := range name {
			switch {
			case r == '"' || r == '\\':
				b.WriteByte('\\')
				b.WriteRune(r)
			case r < ' ' || r == 0x7f:
				b.WriteByte(' ')
			default:
				b.WriteRune(r)
			}
		}
		b.WriteString(`" `)
	}
	fmt.Fprintf(&b, "<%s>\r\n", addr)
	return b.Bytes()
}

// receivedLocal is the Received field of a message handed in on this
// machine, in the form Postfix's pickup gives it:
//
//	Received: by HOSTNAME (minimail sendmail, from userid UID)
//		id ID for <RCPT>; DATE
func receivedLocal(user string, uid int, hostname, id string, rcpts []string, now time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: by %s (minimail sendmail, from userid %d, %s)\r\n\tid %s", traceToken(hostname), uid, traceToken(user), id)
	if len(rcpts) == 1 {
		fmt.Fprintf(&b, " for <%s>", traceToken(rcpts[0]))
	}
	fmt.Fprintf(&b, "; %s\r\n", now.Format(time.RFC1123Z))
	return b.Bytes()
}
