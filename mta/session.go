package mta

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"minimail/mta/delivery"
	"minimail/mta/guard"
	"minimail/mta/mailaddr"
	"minimail/mta/xtext"
	"minimail/store"
)

// session is one go-smtp session: from EHLO to QUIT, or to STARTTLS, after
// which go-smtp starts a new one on the same trackedConn.
type session struct {
	srv  *Server
	conn *smtp.Conn
	tc   *trackedConn
	view *engineConn // retired after STARTTLS: this session is then over
	ip   netip.Addr

	// mu guards user and tx: with CHUNKING, go-smtp runs Data in its own
	// goroutine, and RSET can arrive meanwhile.
	mu   sync.Mutex
	user string // authenticated address; "" before AUTH
	tx   *transaction
	// refusal is the last reply refuse made, refusalReason its reason
	// and refusalDetail what the log adds (see refusalOf).
	refusal                      *smtp.SMTPError
	refusalReason, refusalDetail string
}

// transaction is one MAIL ... DATA exchange.
type transaction struct {
	id       string
	start    time.Time
	from     string
	utf8     bool
	sizeHint int64
	local    []string // accepted local recipients, as written (domain lower-cased)
	remote   []string // accepted remote recipients (submission only)
	forwards bool     // a local recipient forwards to a remote address (Forwarder)
	refused  []string // "rcpt code" of refused recipients, for the log
	checks   string   // the inbound checks' verdicts (Verdict.Summary), for the log
	stored   int      // copies stored in local mailboxes, for Metrics
	logged   bool
	// RFC 3461 (submission only): RET and ENVID of MAIL, and the NOTIFY
	// and ORCPT of each accepted recipient that had any.
	ret      smtp.DSNReturn
	envID    string
	rcptOpts map[string]*smtp.RcptOptions
	queued   bool // the message went (also) to the queue
	// reason is why the last recipient or the message was refused (one of
	// Reasons), detail says more (a DNSBL zone, the SPF result), for the log.
	reason, reasonDetail string
	authenticated        []string // domains the message authenticated for (MX)
}

func smtpErr(code int, ec smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

var (
	codeOK        = smtp.EnhancedCode{2, 0, 0}
	codeTransient = smtp.EnhancedCode{4, 3, 0} // RFC 3463: mail system trouble
)

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	tc, view := trackedOf(c.Conn())
	if tc == nil {
		return nil, smtpErr(421, smtp.EnhancedCode{4, 3, 0}, "internal error")
	}
	ss := &session{srv: s, conn: c, tc: tc, view: view, ip: guard.IP(c.Conn().RemoteAddr())}
	if !validHelo(c.Hostname()) {
		return nil, ss.reject(501, smtp.EnhancedCode{5, 5, 2}, "invalid HELO/EHLO argument")
	}
	return ss, nil
}

// validHelo bounds the HELO/EHLO name, which goes into Received fields,
// logs and the SPF HELO check.
func validHelo(h string) bool { return len(h) <= mailaddr.MaxDomain && !hasControl(h) }

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// reject answers a command with an error caused by the client. It counts
// against MaxErrors as every refusal does, when trackedConn.Write sends it.
// Its reason is what the code says (reasonFor); refuse names another.
func (ss *session) reject(code int, ec smtp.EnhancedCode, msg string) error {
	return ss.refuse(reasonFor(code, ec), code, ec, msg)
}

// gone reports whether this session may no longer act: its connection was
// cut (a fragment of a command line may still be parsed by go-smtp), or it
// was handed on after STARTTLS (plain text pipelined after STARTTLS may
// still sit in go-smtp's buffer).
func (ss *session) gone() bool { return ss.view.retired.Load() || ss.tc.isCut() }

// drop sends a last reply and closes the connection. The error it returns
// is for go-smtp, whose own attempt to write it then fails silently.
func (ss *session) drop(code int, ec smtp.EnhancedCode, msg string) error {
	c := ss.conn.Conn()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%d %d.%d.%d %s %s\r\n", code, ec[0], ec[1], ec[2], ss.srv.opts.Hostname, msg)
	ss.srv.log.Warn("dropped", "client", ss.ip.String(), "reply", fmt.Sprintf("%d %d.%d.%d %s", code, ec[0], ec[1], ec[2], msg))
	ss.conn.Close()
	return smtpErr(code, ec, msg)
}

func (ss *session) current() (*transaction, string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.tx, ss.user
}

// Mail opens a transaction (RFC 5321 4.1.1.2).
func (ss *session) Mail(from string, opts *smtp.MailOptions) (err error) {
	if ss.gone() {
		return errGone
	}
	// No transaction opens, so no transaction line will tell of it: the
	// refusal gets its own.
	var refusal transaction // holds an antispam reason for that line, or SPF's pass
	defer func() {
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code >= 400 {
			_, user := ss.current()
			reason, detail, _ := ss.refusalOf(se)
			attrs := []slog.Attr{slog.String("listener", ss.listener()), slog.String("client", ss.ip.String()),
				slog.String("user", user), slog.String("from", logSafe(from))}
			if detail != "" {
				attrs = append(attrs, slog.String("detail", detail))
			}
			attrs = append(attrs, slog.String("result", fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)))
			ss.srv.rejected(slog.LevelInfo, reason, attrs...)
		}
	}()
	if ss.srv.isDraining() {
		return ss.drop(421, smtp.EnhancedCode{4, 3, 2}, "shutting down")
	}
	tx, user := ss.current()
	switch {
	case tx != nil:
		return ss.reject(503, smtp.EnhancedCode{5, 5, 1}, "nested MAIL command")
	case !validHelo(ss.conn.Hostname()):
		// go-smtp asks the backend only about the first HELO/EHLO; a later
		// one replaces the name unchecked.
		return ss.reject(501, smtp.EnhancedCode{5, 5, 2}, "invalid HELO/EHLO argument, send EHLO again")
	case mailLineLen(from, opts) > maxCommandLine:
		return ss.reject(500, smtp.EnhancedCode{5, 5, 2}, "command line too long")
	case !opts.UTF8 && !mailaddr.IsASCII(from):
		return ss.reject(553, smtp.EnhancedCode{5, 6, 7}, "non-ASCII address requires SMTPUTF8")
	case opts.Size > ss.srv.opts.MaxMessageBytes:
		return ss.reject(552, smtp.EnhancedCode{5, 3, 4}, ss.tooBig())
	case len(xtext.Encode(opts.EnvelopeID)) > maxEnvID:
		return ss.reject(501, smtp.EnhancedCode{5, 5, 4}, fmt.Sprintf("ENVID longer than %d characters", maxEnvID))
	}
	if ss.srv.kind == kindSubmission {
		// RFC 4954 6 and RFC 6409 6.1: who may send, and as whom.
		if user == "" {
			return ss.reject(530, smtp.EnhancedCode{5, 7, 0}, "authentication required")
		}
		if !ss.srv.maySendAs(user, from) {
			return ss.refuse(ReasonSenderDenied, 553, smtp.EnhancedCode{5, 7, 1}, "sender address not owned by "+user)
		}
	} else if from != "" {
		// Parsed once here; everything after uses this one reading.
		a, err := parseAddress(from)
		if err != nil {
			return ss.reject(553, smtp.EnhancedCode{5, 1, 7}, "bad sender address: "+err.Error())
		}
		from = a.Path()
		if err := ss.checkLocalSender(&refusal, a); err != nil {
			return err
		}
	}
	if !ss.srv.roomForMail() {
		return ss.refuse(ReasonUnavailable, 452, smtp.EnhancedCode{4, 3, 1}, "insufficient system storage, try again later")
	}
	if !ss.tc.begin() {
		return ss.drop(421, smtp.EnhancedCode{4, 3, 2}, "shutting down")
	}
	tx = &transaction{id: delivery.NewID(), start: time.Now(), from: from, utf8: opts.UTF8, sizeHint: opts.Size,
		ret: opts.Return, envID: opts.EnvelopeID, authenticated: refusal.authenticated}
	ss.mu.Lock()
	ss.tx = tx
	ss.mu.Unlock()
	return nil
}

// mailLineLen is the length of the MAIL command line as far as it can be
// rebuilt from what go-smtp passes on (it does not expose the raw line).
// Only the address and the AUTH= mailbox are unbounded, so this catches
// every line over RFC 5321 4.5.3.1.4's 512 octets that matters.
func mailLineLen(from string, opts *smtp.MailOptions) int {
	n := len("MAIL FROM:<>\r\n") + len(from)
	if opts.Size > 0 {
		n += len(" SIZE=") + len(strconv.FormatInt(opts.Size, 10))
	}
	if opts.Body != "" {
		n += len(" BODY=") + len(opts.Body)
	}
	if opts.UTF8 {
		n += len(" SMTPUTF8")
	}
	if opts.Auth != nil {
		n += len(" AUTH=<>") + len(*opts.Auth)
	}
	// RET and ENVID are left out: RFC 3461 4 lets them lengthen the line
	// beyond 512 octets, and ENVID has its own bound (maxEnvID).
	return n
}

// RFC 3461 4.2 and 4.4: the longest ORCPT and ENVID values, as sent.
const (
	maxORCPT = 500
	maxEnvID = 100
)

// Rcpt accepts or refuses one recipient (RFC 5321 4.1.1.3).
func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if ss.gone() {
		return errGone
	}
	tx, _ := ss.current()
	if tx == nil {
		return ss.reject(503, smtp.EnhancedCode{5, 5, 1}, "need MAIL first")
	}
	err := ss.rcpt(tx, to, opts)
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		// The address is the client's, as long as its line limit allows.
		tx.refused = append(tx.refused, fmt.Sprintf("%s %d", logSafe(to), se.Code))
		reason, detail, _ := ss.refusalOf(se)
		ss.setReason(tx, reason, detail)
	}
	return err
}

// setReason records why tx's last recipient or tx itself was refused, for
// its log line; under mu, since with CHUNKING the line may be written from
// Data's goroutine or from Reset's.
func (ss *session) setReason(tx *transaction, reason, detail string) {
	ss.mu.Lock()
	tx.reason, tx.reasonDetail = reason, detail
	ss.mu.Unlock()
}

func (ss *session) rcpt(tx *transaction, to string, opts *smtp.RcptOptions) error {
	if len("RCPT TO:<>\r\n")+len(to) > maxCommandLine {
		return ss.reject(500, smtp.EnhancedCode{5, 5, 2}, "command line too long")
	}
	if opts != nil && len(opts.OriginalRecipientType)+1+len(xtext.Encode(opts.OriginalRecipient)) > maxORCPT {
		return ss.reject(501, smtp.EnhancedCode{5, 5, 4}, fmt.Sprintf("ORCPT longer than %d characters", maxORCPT))
	}
	if !tx.utf8 && !mailaddr.IsASCII(to) {
		return ss.reject(553, smtp.EnhancedCode{5, 6, 7}, "non-ASCII address requires SMTPUTF8")
	}
	// RFC 5321 4.1.1.3 and 4.5.1: a bare "Postmaster" (any case) names the
	// postmaster of this server, which is that of its first local domain.
	if strings.EqualFold(to, "postmaster") && len(ss.srv.opts.Domains) > 0 {
		to = "postmaster@" + mailaddr.NormalDomain(ss.srv.opts.Domains[0])
	}
	a, err := parseAddress(to)
	if err != nil {
		return ss.reject(553, smtp.EnhancedCode{5, 1, 3}, "bad recipient address: "+err.Error())
	}
	if ss.srv.isLocal(a.Domain) {
		if ss.srv.kind == kindMX && relayTrick(a.Local) {
			return ss.refuse(ReasonRelayDenied, 550, smtp.EnhancedCode{5, 7, 1}, "relay access denied")
		}
		if zone, reason, listed := ss.blocklisted(); listed && !ss.srv.isPostmaster(a) {
			text := fmt.Sprintf("client [%s] is listed in %s", ss.ip, zone)
			if reason != "" {
				text += ": " + reason
			}
			return ss.antispamRefusal(tx, ReasonDNSBL, zone, smtpErr(554, smtp.EnhancedCode{5, 7, 1}, text))
		}
		_, err := ss.srv.local.Resolve(a.String())
		switch {
		case permanent(err):
			return ss.reject(550, smtp.EnhancedCode{5, 1, 1}, "no such user here")
		case status(err) == "4.2.2":
			return ss.reject(452, smtp.EnhancedCode{4, 2, 2}, "mailbox full, try again later")
		case err != nil:
			ss.srv.log.Error("recipient lookup failed", "id", tx.id, "rcpt", logSafe(to), "err", err)
			return smtpErr(451, codeTransient, "temporary failure looking up recipient, try again later")
		}
		// Kept as the client wrote it (an extension too: Delivered-To names
		// it); Local delivers one copy per mailbox however many reach it.
		tx.local = appendNew(tx.local, a.String())
		tx.keepDSN(a.String(), opts)
		if f, ok := ss.srv.local.(Forwarder); ok && ss.srv.kind == kindSubmission && f.Forwards(a.String()) {
			tx.forwards = true
		}
		return nil
	}
	if ss.srv.kind == kindMX || ss.srv.queue == nil {
		return ss.refuse(ReasonRelayDenied, 550, smtp.EnhancedCode{5, 7, 1}, "relay access denied")
	}
	if isAddressLiteral(a.Domain) {
		// A literal makes the queue connect wherever the user says, port
		// 25 of internal and metadata addresses included.
		return ss.refuse(ReasonRelayDenied, 550, smtp.EnhancedCode{5, 7, 1}, "relay to an IP address denied")
	}
	if !isDotAtom(a.Local) {
		return ss.reject(553, smtp.EnhancedCode{5, 1, 3}, "local part needs quoting, which is not supported")
	}
	tx.remote = appendNew(tx.remote, a.String())
	tx.keepDSN(a.String(), opts)
	return nil
}

// permanent reports whether a delivery or lookup error is a verdict that
// no retry can change; for Local that means the mailbox does not exist.
// The rule is delivery.Temporary's: an error that says nothing is
// temporary, since a 4xx costs the sender a retry and a wrong 5xx loses
// the message.
func permanent(err error) bool { return err != nil && !delivery.Temporary(err) }

// status is the RFC 3463 status an error names (a Status() string method
// in its chain), "" when none does.
func status(err error) string {
	var st interface{ Status() string }
	if errors.As(err, &st) {
		return st.Status()
	}
	return ""
}

func appendNew(list []string, addr string) []string {
	for _, a := range list {
		if sameAddress(a, addr) {
			return list
		}
	}
	return append(list, addr)
}

// Data receives, completes and stores the message. Its reply is returned as
// an *smtp.SMTPError in every case, 250 included, so that go-smtp sends our
// text (with the transaction id) and never its own 554 for a plain error.
func (ss *session) Data(r io.Reader) (reply error) {
	ss.srv.enterData()
	defer ss.srv.leaveData()
	if ss.gone() {
		return errGone
	}
	tx, user := ss.current()
	if tx == nil {
		return ss.reject(503, smtp.EnhancedCode{5, 5, 1}, "need MAIL first")
	}
	// A panic in a hook (Verify, Sign) or below (Local, Queue) costs this
	// message a 451, not the connection: go-smtp's own recovery would
	// answer 421 and hang up, and BDAT runs this in a goroutine of its own.
	// Nothing has been acknowledged, so the client retries.
	defer func() {
		if p := recover(); p != nil {
			ss.srv.log.Error("panic handling message", "id", tx.id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			reply = ss.finish(tx, user, 0, smtpErr(451, codeTransient, "internal error, try again later"))
		}
	}()
	// The message is in memory until it is stored: it holds its share of
	// MaxBufferedBytes until then (counted once, though it is copied a
	// few times on its way to disk), and a big one its place in the
	// TransferGate.
	var hold dataHold
	defer hold.release(ss.srv)
	mb, err := ss.readData(r, tx, &hold)
	defer ss.srv.bufs.put(mb)
	if err != nil {
		return ss.finish(tx, user, 0, err)
	}
	size := len(mb.bytes())
	// The one place that makes messages CRLF-only (see crlf.go).
	mb.set(normalizeCRLF(mb.bytes()))
	if se := ss.srv.checkHeader(mb.bytes()); se != nil {
		return ss.finish(tx, user, size, se)
	}
	if err := ss.complete(tx, user, mb); err != nil {
		return ss.finish(tx, user, size, err)
	}
	msg := mb.bytes()
	if !ss.srv.beginCommit() {
		// Shutdown gave up on this transaction and cut its connection:
		// storing now would deliver a message the client will send again.
		return ss.finish(tx, user, len(msg), smtpErr(421, smtp.EnhancedCode{4, 3, 2}, "shutting down"))
	}
	err = ss.store(tx, user, msg)
	ss.srv.endCommit()
	return ss.finish(tx, user, len(msg), err)
}

// readData reads the message, renewing the read deadline as data arrives
// (RFC 5321 4.5.3.2.6) and mapping go-smtp's errors to replies.
func (ss *session) readData(r io.Reader, tx *transaction, hold *dataHold) (*msgBuf, error) {
	ss.tc.beginData()
	defer ss.tc.endData()
	dr := &deadlineReader{r: r, conn: ss.conn.Conn(), tc: ss.tc, timeout: ss.srv.opts.DataTimeout,
		rate: ss.srv.opts.MinDataRate, start: time.Now(), srv: ss.srv, hold: hold}
	if tx.sizeHint >= bigTransfer {
		dr.enterGate() // before the buffer that SIZE= sizes
	}
	// Trust the SIZE= hint only so far: it is the client's word, and a
	// buffer sized by it before any data arrives would be free to demand.
	size := int(min(max(tx.sizeHint, 4096), 1<<20)) + 1024
	mb := ss.srv.bufs.get(size)
	var err error
	for {
		var n int
		n, err = dr.Read(mb.grow(&ss.srv.bufs, dataReadSize))
		mb.b = mb.b[:len(mb.b)+n]
		if err != nil {
			break
		}
	}
	if err == io.EOF {
		err = nil
	}
	var ne net.Error
	switch {
	case errors.Is(err, errBufferFull):
		return mb, smtpErr(452, smtp.EnhancedCode{4, 3, 1}, "insufficient system storage, try again later")
	case err == nil && int64(len(mb.bytes())) <= ss.srv.opts.MaxMessageBytes:
		return mb, nil
	case err == nil, errors.Is(err, smtp.ErrDataTooLarge):
		// go-smtp discards the rest of the message; nothing is stored.
		return mb, ss.reject(552, smtp.EnhancedCode{5, 3, 4}, ss.tooBig())
	case errors.Is(err, errEndOfDataMismatch):
		return mb, ss.drop(550, smtp.EnhancedCode{5, 6, 0}, "bare CR before the end of data, message refused")
	case errors.Is(err, smtp.ErrTooLongLine):
		// The stream cannot be resynchronised: answer once and close.
		return mb, ss.drop(500, smtp.EnhancedCode{5, 5, 2},
			fmt.Sprintf("line longer than %d octets", ss.srv.opts.MaxLineLength))
	case errors.Is(err, errDataTimeout), errors.As(err, &ne) && ne.Timeout():
		if dr.tooSlow() {
			return mb, ss.drop(421, smtp.EnhancedCode{4, 4, 2},
				fmt.Sprintf("message data slower than %d bytes per second", ss.srv.opts.MinDataRate))
		}
		return mb, ss.drop(421, smtp.EnhancedCode{4, 4, 2}, "timeout waiting for message data")
	}
	return mb, smtpErr(451, codeTransient, "message transfer aborted")
}

func (ss *session) tooBig() string {
	return fmt.Sprintf("message exceeds %d bytes", ss.srv.opts.MaxMessageBytes)
}

// deadlineReader sets the read deadlines of a message transfer: DataTimeout
// per read (RFC 5321 4.5.3.2.6), and the transfer as a whole held to
// MinDataRate. go-smtp's DATA reader returns only once the buffer it is
// given is full, so reads are kept small: a read then waits for 4 KiB, and
// a client sending at the floor rate fills one well within DataTimeout.
type deadlineReader struct {
	r       io.Reader
	conn    net.Conn
	tc      *trackedConn
	timeout time.Duration
	rate    int // bytes per second; 0 = no floor
	start   time.Time
	n       int64     // bytes read so far
	until   time.Time // the end of the transfer's allowance, as last set
	srv     *Server
	hold    *dataHold
	gated   bool // the TransferGate was entered (or waited for in vain)
}

// dataHold is what a message transfer holds until its message is stored.
type dataHold struct {
	bytes int64  // counted against MaxBufferedBytes
	leave func() // gives the TransferGate's place back; nil: none held
}

func (h *dataHold) release(s *Server) {
	s.releaseBuffer(h.bytes)
	if h.leave != nil {
		h.leave()
	}
}

var errBufferFull = errors.New("message buffers full")

// enterGate takes a place in the TransferGate, once per transfer. The time
// waited is the server's, not the client's: the MinDataRate allowance
// starts again that much later.
func (d *deadlineReader) enterGate() {
	if d.gated {
		return
	}
	d.gated = true
	waited, leave := d.srv.opts.BigTransfers.enter(d.srv.ctx, d.tc.stepAside)
	d.start = d.start.Add(waited)
	d.hold.leave = leave
}

const dataReadSize = 4 << 10

func (d *deadlineReader) Read(p []byte) (int, error) {
	if len(p) > dataReadSize {
		p = p[:dataReadSize]
	}
	if d.n >= bigTransfer {
		d.enterGate()
	}
	if d.rate > 0 {
		// By the end of this read n+len(p) bytes will have arrived, which
		// the floor rate allows until start + timeout + (n+len(p))/rate.
		allowance := time.Duration(float64(d.n+int64(len(p))) / float64(d.rate) * float64(time.Second))
		d.until = d.start.Add(d.timeout + allowance)
		d.tc.limitData(d.until)
	}
	d.conn.SetReadDeadline(time.Now().Add(d.timeout))
	n, err := d.r.Read(p)
	d.n += int64(n)
	if n > 0 {
		if !d.srv.holdBuffer(int64(n)) {
			return n, errBufferFull
		}
		d.hold.bytes += int64(n)
	}
	return n, err
}

// tooSlow reports whether the transfer ran out of its MinDataRate
// allowance (rather than waiting DataTimeout for one read).
func (d *deadlineReader) tooSlow() bool {
	return !d.until.IsZero() && !time.Now().Before(d.until)
}

// complete runs the per-listener checks and additions and prepends the
// Received field.
func (ss *session) complete(tx *transaction, user string, mb *msgBuf) error {
	o := &ss.srv.opts
	now := o.Now()
	var checks []byte // the checks' field (Authentication-Results), MX only
	var spam []byte   // the spam filter's fields, MX only
	if ss.srv.kind == kindMX {
		var authenticated []string
		if o.Verify != nil {
			v, err := o.Verify(ss.srv.ctx, net.IP(ss.ip.AsSlice()), ss.conn.Hostname(), tx.from, mb.bytes())
			tx.checks = v.Summary
			switch {
			case err != nil:
				ss.srv.log.Error("verify failed", "id", tx.id, "err", err)
				return smtpErr(451, codeTransient, "temporary failure checking message, try again later")
			case v.Disposition != Accept:
				return v.reply()
			}
			if v.Message != nil {
				mb.set(v.Message)
			}
			checks = v.Prepend
			authenticated = v.Authenticated
		}
		for _, d := range tx.authenticated { // SPF's pass at MAIL
			if !containsFold(authenticated, d) {
				authenticated = append(authenticated, d)
			}
		}
		tx.authenticated = authenticated
		if err := ss.checkLocalFrom(tx, mb.bytes(), authenticated); err != nil {
			return err
		}
		if err := ss.greylist(tx, authenticated); err != nil {
			return err
		}
		var err error
		if spam, err = ss.scan(tx, mb); err != nil {
			return err
		}
	} else {
		msg := mb.bytes()
		fields, err := parseHeader(msg, "From", "Sender", "Date", "Message-ID")
		if err != nil {
			return ss.reject(550, smtp.EnhancedCode{5, 6, 0}, "malformed message header")
		}
		addFrom, err := checkFrom(fields, user, func(addr string) bool { return ss.srv.maySendAs(user, addr) })
		if err != nil {
			return ss.refuse(ReasonSenderDenied, 550, smtp.EnhancedCode{5, 7, 1}, err.Error())
		}
		mb.set(ss.submissionHeaderEdits(tx, user, fields, msg))
		mb.prepend(submissionHeaders(fields, addFrom, user, o.Hostname, now))
		if err := ss.srv.sign(tx, user, mb); err != nil {
			return err
		}
	}
	rcv := received(trace{
		Helo:     ss.conn.Hostname(),
		IP:       ss.ip,
		Hostname: o.Hostname,
		TLS:      ss.tlsInfo(),
		User:     user,
		ID:       tx.id,
		Rcpts:    append(append([]string(nil), tx.local...), tx.remote...),
		Time:     now,
	})
	mb.prepend(rcv, checks, spam)
	return nil
}

// store makes the message durable: local recipients first, in one commit,
// then the queue for the rest (see the package comment for why this order).
// Local recipients that asked for a success notice (NOTIFY=SUCCESS) go
// through the queue too, which stores the notice in the same commit as the
// record of the delivery it reports: none lost, none sent twice.
func (ss *session) store(tx *transaction, user string, msg []byte) error {
	stored, loops := 0, 0
	// The received event commits with the first copy that is stored.
	trace := delivery.Trace{ID: tx.id, Events: []store.Event{ss.receivedEvent(tx, user, msg)}}
	var full []string // local recipients whose mailbox had no room
	local, queued := tx.local, tx.remote
	if ss.srv.dsnQueue() != nil {
		local, queued = nil, nil
		for _, r := range tx.local {
			if wantsSuccess(tx.rcptOpts[r]) {
				queued = append(queued, r)
			} else {
				local = append(local, r)
			}
		}
		queued = append(queued, tx.remote...)
	}
	if len(local) > 0 {
		for i, err := range ss.deliverLocal(tx, trace, local, msg) {
			switch {
			case err == nil:
				stored++
				tx.stored++
			case permanent(err) && status(err) == "5.2.2":
				full = append(full, local[i])
				tx.refused = append(tx.refused, local[i]+" 552")
			case permanent(err) && status(err) == "5.4.6":
				// An alias would forward a message that is looping.
				loops++
				tx.refused = append(tx.refused, local[i]+" 554")
			case permanent(err):
				// The mailbox vanished since RCPT; nothing to retry.
				tx.refused = append(tx.refused, local[i]+" 550")
			default:
				ss.srv.log.Error("local delivery failed", "id", tx.id, "rcpt", local[i], "err", err)
				return smtpErr(451, codeTransient, "temporary local delivery failure, try again later")
			}
		}
	}
	if stored > 0 {
		trace.Events = nil
	}
	if len(queued) > 0 {
		// The queue keeps the message under the transaction's id, the one
		// the 250 gives: one id in the reply, the logs and the queue.
		if _, err := ss.enqueue(ss.srv.queue, tx, trace, queued, msg); err != nil {
			ss.srv.log.Error("enqueue failed", "id", tx.id, "local_stored", stored, "err", err)
			return smtpErr(451, codeTransient, "temporary queue failure, try again later")
		}
		stored += len(queued)
		tx.queued = true
		trace.Events = nil
	}
	if stored == 0 && loops > 0 {
		// RFC 5321 6.3: a message with too many Received fields is looping.
		return ss.reject(554, smtp.EnhancedCode{5, 4, 6}, "forwarding loop detected (too many Received fields)")
	}
	if stored == 0 && len(full) > 0 {
		return ss.reject(552, smtp.EnhancedCode{5, 2, 2}, "mailbox full")
	}
	if stored == 0 {
		return ss.reject(550, smtp.EnhancedCode{5, 1, 1}, "no such user here")
	}
	if len(full) > 0 {
		ss.overflow(tx, trace, full, msg)
	}
	ss.greylistDelivered(tx)
	return smtpErr(250, codeOK, "OK id="+tx.id)
}

// deliverLocal hands the local recipients to Local, with the transaction's
// id and events when Local takes them (tracedLocal): forwarded copies are
// queued under that id.
func (ss *session) deliverLocal(tx *transaction, trace delivery.Trace, rcpts []string, msg []byte) []error {
	if d, ok := ss.srv.local.(tracedLocal); ok {
		return d.DeliverTraced(trace, tx.from, rcpts, msg)
	}
	return ss.srv.local.Deliver(tx.from, rcpts, msg)
}

// overflow hands the recipients whose mailbox had no room for a message
// others received to the queue, so that the sender hears of them after
// the 250 (a bounce with 5.2.2, or the copy if room was made meanwhile).
func (ss *session) overflow(tx *transaction, trace delivery.Trace, full []string, msg []byte) {
	q := ss.srv.opts.Overflow
	if q == nil {
		q = ss.srv.queue
	}
	if q == nil {
		ss.srv.log.Warn("over_quota", "id", tx.id, "rcpts", full, "result", "dropped")
		return
	}
	if _, err := ss.enqueue(q, tx, trace, full, msg); err != nil {
		ss.srv.log.Error("over_quota", "id", tx.id, "rcpts", full, "err", err, "result", "dropped")
		return
	}
	ss.srv.log.Info("over_quota", "id", tx.id, "rcpts", full, "result", "queued")
}

// finish writes the transaction's one log line and returns its reply.
func (ss *session) finish(tx *transaction, user string, size int, reply error) error {
	var se *smtp.SMTPError
	if !errors.As(reply, &se) {
		se = smtpErr(451, codeTransient, "message transfer aborted")
	}
	event := "delivered"
	reason, detail, named := ss.refusalOf(se)
	switch {
	case se.Code >= 500:
		event = "rejected"
		ss.setReason(tx, reason, detail)
	case se.Code >= 400:
		event = "deferred"
		// A deferral tells its reason when one was named (greylisting,
		// rspamd's soft reject); a passing trouble of ours has none.
		if !named {
			reason, detail = "", ""
		}
		ss.setReason(tx, reason, detail)
	case len(tx.remote) > 0 || tx.queued:
		event = "queued"
	}
	if se.Code < 300 {
		ss.srv.received(ss.listener(), tx.stored)
	}
	ss.logTx(tx, user, event, slog.Int("size", size),
		slog.String("result", fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)))
	return se
}

func (ss *session) logTx(tx *transaction, user, event string, attrs ...slog.Attr) {
	ss.mu.Lock()
	if tx.logged {
		ss.mu.Unlock()
		return
	}
	tx.logged = true
	reason, detail := tx.reason, tx.reasonDetail
	ss.mu.Unlock()
	attrs = append([]slog.Attr{
		slog.String("id", tx.id),
		slog.String("client", ss.ip.String()),
		slog.String("helo", ss.conn.Hostname()),
		slog.String("user", user),
		slog.String("from", tx.from),
		slog.Any("rcpts", append(append([]string(nil), tx.local...), tx.remote...)),
		slog.Any("refused", tx.refused),
		slog.String("listener", ss.listener()),
	}, attrs...)
	if tx.checks != "" {
		attrs = append(attrs, slog.String("checks", tx.checks))
	}
	// The reason and detail of the last refusal in the transaction (a
	// recipient's too, when others were accepted).
	if detail != "" {
		attrs = append(attrs, slog.String("detail", detail))
	}
	attrs = append(attrs, slog.Duration("duration", time.Since(tx.start)))
	level := slog.LevelInfo
	switch event {
	case "deferred":
		level = slog.LevelWarn
	case "rejected":
		ss.srv.rejected(level, reason, attrs...)
		return
	}
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	ss.srv.log.LogAttrs(ss.srv.ctx, level, event, attrs...)
}

// Reset ends the transaction (RSET, EHLO, after DATA, STARTTLS). One that
// never reached DATA is logged here.
func (ss *session) Reset() {
	ss.mu.Lock()
	tx, user := ss.tx, ss.user
	ss.tx = nil
	ss.mu.Unlock()
	ss.tc.end()
	if tx != nil {
		event := "aborted"
		if len(tx.refused) > 0 && len(tx.local)+len(tx.remote) == 0 {
			event = "rejected"
		}
		ss.logTx(tx, user, event)
	}
}

func (ss *session) Logout() error {
	ss.Reset()
	return nil
}

// tlsState reports whether the session runs over TLS, from STARTTLS
// (go-smtp sees it) or implicit TLS (only the trackedConn knows).
func (ss *session) tlsState() (state tls.ConnectionState, ok bool) {
	if t := ss.tc.tlsConn(); t != nil {
		return t.ConnectionState(), true
	}
	return state, false
}

func (ss *session) tlsInfo() string {
	st, ok := ss.tlsState()
	if !ok {
		return ""
	}
	return tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite)
}

// listener names the listener the session came in on, as the config does
// (listen.smtp, listen.submission, listen.submissions): 587 and 465 are one
// Server, told apart by implicit TLS.
func (ss *session) listener() string {
	switch {
	case ss.srv.kind == kindMX:
		return "smtp"
	case ss.tc.implicitTLS:
		return "submissions"
	}
	return "submission"
}
