package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"net/textproto"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
	"github.com/urfave/cli/v2"

	"minimail/mda"
	"minimail/mta"
	"minimail/mta/resolve"
	"minimail/store"
)

// `minimail sendmail` is the sendmail(8) interface that cron, scripts and
// programs such as PHP's mail() and git send-email call: a message on
// stdin, queued as if a local user had submitted it. From root and the
// service user the running server takes it over the control socket
// (adminOps "sendmail", mta's SubmitLocal); with no server running, the
// command opens the store and runs the same SubmitLocal itself, so the
// next `serve` sends what it queued. Other users hand it to the running
// server over listen.sendmail (sendmailsock.go).
//
// Its exit codes are sendmail's (sysexits.h), not minimail's.
const (
	exOK       = 0
	exUsage    = 64 // bad flag, no recipients, a sender the user may not use
	exDataErr  = 65 // the message was refused for good (too big, unknown local user, ...)
	exTempFail = 75 // try again later: the store is locked, the server is busy
	exNoPerm   = 77 // the control socket or the store is not ours to use
	exConfig   = 78 // the config file is missing or bad
)

// sendmailConfig is the config a command invoked as "sendmail" (a
// symlink, /usr/sbin/sendmail) reads when neither -C nor MINIMAIL_CONFIG
// names one: cron runs it from the user's home, where ./minimail.toml is
// not.
const sendmailConfig = "/etc/minimail/minimail.toml"

// exitError is an error with the exit code it calls for.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitf(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

const sendmailUsage = "minimail sendmail [-t] [-i|-oi] [-f SENDER] [-F NAME] [-C CONFIG] [RCPT...] <message"

const sendmailHelp = "usage: " + sendmailUsage + `

Queues the message on stdin as a local submission (README: sendmail for cron and scripts).
  -t          recipients from To:, Cc: and Bcc: too (Bcc: is removed)
  -i, -oi     a line of one dot is text, not the end of the message
  -f SENDER   envelope sender (-r too); default USER@hostname
  -F NAME     display name of the From: field added when there is none
  -C CONFIG   config file
Root and the service user use control.sock, or the store when no server runs; any other user
hands the message to the running server over listen.sendmail ($MINIMAIL_SENDMAIL_SOCKET or
/run/minimail/sendmail.sock when the config is not readable).
Exit codes: 0 queued, 64 bad usage, 65 refused, 75 try again later, 77 no permission, 78 bad config.
`

func sendmailCommand() *cli.Command {
	return &cli.Command{
		Name:      "sendmail",
		Usage:     "queue the message on stdin as a local submission (sendmail's flags, for cron and scripts)",
		UsageText: sendmailUsage,
		// sendmail's flags are single-dash and run together (-oi, -fSENDER,
		// -FName): the command reads them itself.
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			if c.Args().Len() == 1 && c.Args().First() == "--help" {
				fmt.Fprint(c.App.Writer, sendmailHelp)
				return nil
			}
			o, err := parseSendmailArgs(c.Args().Slice())
			if err != nil {
				return &exitError{code: exUsage, err: fmt.Errorf("%w\nusage: %s", err, sendmailUsage)}
			}
			if o.config == "" {
				o.config = configPath(c)
			}
			return runSendmail(o, c.App.Reader)
		},
	}
}

// sendmailOptions are the command line of sendmail.
type sendmailOptions struct {
	fromHeader bool   // -t: recipients from To:, Cc:, Bcc: as well
	ignoreDots bool   // -i, -oi: a line of one dot does not end the message
	sender     string // -f, -r
	fullName   string // -F
	config     string // -C
	rcpts      []string
}

// parseSendmailArgs reads sendmail's command line. Flags that sendmail's
// callers pass by habit and that change nothing here are taken and
// ignored: -odi/-odb/-odq (delivery mode: always queued), -oem/-oee/-oep/
// -oeq/-om (error reporting and me-too), -bm (the default mode), -v, and
// the DSN options -N, -R, -V and -B with their argument (cron passes
// -B8BITMIME). Any other flag is bad usage, so that a mode this command
// does not have (-bs, -bp, -q) is never mistaken for a message to send.
func parseSendmailArgs(args []string) (sendmailOptions, error) {
	var o sendmailOptions
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			o.rcpts = append(o.rcpts, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			o.rcpts = append(o.rcpts, a)
			continue
		}
		// value returns the flag's argument, attached (-fbob) or next.
		value := func(flag string) (string, error) {
			if v := strings.TrimPrefix(a, flag); v != "" {
				return v, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag %s needs an argument", flag)
			}
			i++
			return args[i], nil
		}
		var err error
		switch {
		case a == "-t":
			o.fromHeader = true
		case a == "-i", a == "-oi":
			o.ignoreDots = true
		case a == "-odi", a == "-odb", a == "-odq", a == "-oem", a == "-oee", a == "-oep", a == "-oeq",
			a == "-om", a == "-bm", a == "-v":
		case strings.HasPrefix(a, "-f"):
			o.sender, err = value("-f")
		case strings.HasPrefix(a, "-r"):
			o.sender, err = value("-r")
		case strings.HasPrefix(a, "-F"):
			o.fullName, err = value("-F")
		case strings.HasPrefix(a, "-C"):
			o.config, err = value("-C")
		case strings.HasPrefix(a, "-N"), strings.HasPrefix(a, "-R"), strings.HasPrefix(a, "-V"), strings.HasPrefix(a, "-B"):
			_, err = value(a[:2])
		default:
			return o, fmt.Errorf("flag %s is not supported", a)
		}
		if err != nil {
			return o, err
		}
	}
	return o, nil
}

// invoker is the Unix user running the command.
type invoker struct {
	name string
	uid  int
	// trusted: root or the service user (the owner of data_dir), who may
	// send as anyone, as with sendmail's trusted users.
	trusted bool
}

// invokerFor is the user with uid: the command's own, or the peer of
// listen.sendmail as the kernel names it (sendmailsock.go).
func invokerFor(uid int, dataDir string) invoker {
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	inv := invoker{name: name, uid: uid, trusted: uid == 0}
	if o, err := ownerOf(dataDir); err == nil && o.uid == uid {
		inv.trusted = true
	}
	return inv
}

// runSendmail submits as root or the service user did before there was
// listen.sendmail: over control.sock, or into the store when no server
// runs. Any other user can use neither, and hands the message to the
// running server over listen.sendmail (sendmailsock.go), which knows who
// it is from the kernel; such a user cannot read an installed config
// (mode 0640, group minimail) either, and then finds the socket where the
// systemd unit puts it.
func runSendmail(o sendmailOptions, stdin io.Reader) error {
	if f, err := os.Open(o.config); errors.Is(err, os.ErrPermission) {
		return sendmailOverSocket(userSendmailSocket(), o, stdin, maxUnknownMessage, "the most sendmail reads when it cannot read the config")
	} else if err == nil {
		f.Close()
	}
	cfg, err := loadConfig(o.config)
	if err != nil {
		return &exitError{code: exConfig, err: err}
	}
	inv := invokerFor(os.Getuid(), cfg.DataDir)
	if !inv.trusted {
		// Said here, before the message is read; the server checks
		// again with the uid the kernel gives it.
		if _, err := envelopeSender(cfg, inv, o.sender); err != nil {
			return &exitError{code: exUsage, err: err}
		}
		if cfg.Listen.Sendmail == "" {
			return exitf(exNoPerm, "%s: listen.sendmail is off, so only root and the owner of %s may send mail (README: sendmail)", cfg.path, cfg.DataDir)
		}
		return sendmailOverSocket(cfg.Listen.Sendmail, o, stdin, cfg.Limits.MaxMessageBytes, "limits.max_message_bytes")
	}
	msg, err := readSendmailMessage(stdin, o.ignoreDots, cfg.Limits.MaxMessageBytes, "limits.max_message_bytes")
	if err != nil {
		return err
	}
	lm, err := localMessage(cfg, inv, o, msg)
	if err != nil {
		return err
	}
	_, err = submitSendmail(cfg, lm)
	return err
}

// localMessage is the submission of msg by inv with the command line o:
// the envelope sender inv may use and the recipients. Either error is bad
// usage (64).
func localMessage(cfg *Config, inv invoker, o sendmailOptions, msg []byte) (mta.LocalMessage, error) {
	from, err := envelopeSender(cfg, inv, o.sender)
	if err != nil {
		return mta.LocalMessage{}, &exitError{code: exUsage, err: err}
	}
	rcpts, err := sendmailRecipients(cfg, o, msg)
	if err != nil {
		return mta.LocalMessage{}, &exitError{code: exUsage, err: err}
	}
	return mta.LocalMessage{From: from, FullName: o.fullName, Rcpts: rcpts, User: inv.name, UID: inv.uid, Message: msg}, nil
}

// envelopeSender is -f's address, or the invoking user at hostname. A
// user other than root and the service user may give -f only an address
// of its own: its login name (with an extension, user+tag) in a local
// domain. Anything else would let any account on the machine send as
// anyone through the server's DKIM key.
func envelopeSender(cfg *Config, inv invoker, sender string) (string, error) {
	if sender == "" || sender == "<>" {
		// sendmail -f '<>' is the null sender; only a bounce may use it,
		// which a local submission is not.
		if sender == "<>" {
			return "", errors.New("-f <>: the null sender is for bounces, not for submissions")
		}
		return inv.name + "@" + cfg.Hostname, nil
	}
	sender = strings.TrimSuffix(strings.TrimPrefix(sender, "<"), ">")
	at := strings.LastIndexByte(sender, '@')
	if at <= 0 || at == len(sender)-1 {
		return "", fmt.Errorf("-f %s: want a full address, local@domain", sender)
	}
	if inv.trusted {
		return sender, nil
	}
	local, domain := sender[:at], sender[at+1:]
	base, _, _ := strings.Cut(local, "+")
	if !cfg.isLocalDomain(domain) || !strings.EqualFold(base, inv.name) {
		return "", fmt.Errorf("-f %s: %s may send only as %s@ a local domain (%s); root and the owner of %s may send as anyone",
			sender, inv.name, inv.name, strings.Join(cfg.Domains, ", "), cfg.DataDir)
	}
	return sender, nil
}

// readSendmailMessage reads the message: to the end of input with -i,
// else up to a line holding only a dot, as sendmail does. More than limit
// bytes (limits.max_message_bytes, as on SMTP, which limitName names) is
// refused without reading on.
func readSendmailMessage(r io.Reader, ignoreDots bool, limit int64, limitName string) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, limit+1))
	var msg bytes.Buffer
	for {
		line, err := br.ReadBytes('\n')
		if !ignoreDots && (string(line) == ".\n" || string(line) == ".\r\n" || err == io.EOF && string(line) == ".") {
			break
		}
		msg.Write(line)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &exitError{code: exTempFail, err: fmt.Errorf("reading the message: %w", err)}
		}
	}
	if int64(msg.Len()) > limit {
		return nil, exitf(exDataErr, "message exceeds %d bytes (%s)", limit, limitName)
	}
	return msg.Bytes(), nil
}

// sendmailRecipients are the arguments, plus with -t the addresses of
// To:, Cc: and Bcc: (Bcc: itself is removed from the message by the
// submission path). A bare name (cron's MAILTO=root) is that user in the
// first local domain.
func sendmailRecipients(cfg *Config, o sendmailOptions, msg []byte) ([]string, error) {
	var rcpts []string
	add := func(addr string) {
		if !strings.Contains(addr, "@") {
			addr += "@" + cfg.Domains[0]
		}
		for _, r := range rcpts {
			if strings.EqualFold(r, addr) {
				return
			}
		}
		rcpts = append(rcpts, addr)
	}
	for _, a := range o.rcpts {
		// An argument may be a list, "a@x, b@y", as sendmail allows.
		for _, part := range strings.Split(a, ",") {
			if part = strings.TrimSpace(part); part != "" {
				add(strings.TrimSuffix(strings.TrimPrefix(part, "<"), ">"))
			}
		}
	}
	if o.fromHeader {
		m, err := mail.ReadMessage(bytes.NewReader(msg))
		if err != nil {
			return nil, fmt.Errorf("-t: cannot read the message header: %w", err)
		}
		for _, name := range []string{"To", "Cc", "Bcc"} {
			for _, v := range m.Header[textproto.CanonicalMIMEHeaderKey(name)] {
				if strings.TrimSpace(v) == "" {
					continue
				}
				list, err := headerAddresses(v)
				if err != nil {
					return nil, fmt.Errorf("-t: %s: %q: %w", name, v, err)
				}
				for _, a := range list {
					add(a)
				}
			}
		}
	}
	if len(rcpts) == 0 {
		return nil, errors.New("no recipients: name them as arguments, or use -t to read To:, Cc: and Bcc:")
	}
	return rcpts, nil
}

// headerAddresses reads an address list field: RFC 5322 addresses, or
// bare local names as scripts write them ("To: root, admin").
func headerAddresses(v string) ([]string, error) {
	if list, err := mail.ParseAddressList(v); err == nil {
		out := make([]string, len(list))
		for i, a := range list {
			out[i] = a.Address
		}
		return out, nil
	}
	var out []string
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if a, err := mail.ParseAddress(part); err == nil {
			out = append(out, a.Address)
			continue
		}
		if !isBareName(part) {
			return nil, fmt.Errorf("%q is no address", part)
		}
		out = append(out, part)
	}
	return out, nil
}

// isBareName reports whether s is a login name without a domain.
func isBareName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+", r)) {
			return false
		}
	}
	return s != ""
}

// submitSendmail hands the message to the running server, or, when none
// runs, stores it through the same submission path itself.
func submitSendmail(cfg *Config, lm mta.LocalMessage) (string, error) {
	resp, err := callServer(cfg.DataDir, request{Op: "sendmail", Local: &lm})
	switch {
	case err == nil && resp.Error == "":
		return resp.ID, nil
	case err == nil:
		return "", submitError(resp.SMTPCode, errors.New(resp.Error))
	case errors.Is(err, os.ErrPermission):
		return "", &exitError{code: exNoPerm, err: err}
	case !errors.Is(err, errNoServer):
		return "", &exitError{code: exTempFail, err: err}
	}
	st, err := openStoreDirect(cfg.DataDir)
	switch {
	case errors.Is(err, store.ErrLocked):
		return "", &exitError{code: exTempFail, err: err}
	case errors.Is(err, os.ErrPermission):
		return "", &exitError{code: exNoPerm, err: err}
	case err != nil:
		return "", &exitError{code: exTempFail, err: err}
	}
	defer st.Close()
	sub, err := offlineSubmission(cfg, st)
	if err != nil {
		return "", &exitError{code: exConfig, err: err}
	}
	id, err := sub.SubmitLocal(lm)
	return id, submitExit(err)
}

// replyError words a refusal as the SMTP reply it is: "550 5.1.1 <x>: no
// such user here".
func replyError(se *smtp.SMTPError) error {
	return fmt.Errorf("refused: %d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
}

// submitError gives a refusal its exit code: 75 for a 4xx (or none), 65
// for a 5xx.
func submitError(code int, err error) error {
	if code >= 500 {
		return &exitError{code: exDataErr, err: err}
	}
	return &exitError{code: exTempFail, err: err}
}

// offlineSubmission is the submission server of a stopped server: the
// options, signer and queue `serve` would use, over the store opened here.
// What it queues waits for the next `serve`.
func offlineSubmission(cfg *Config, st *store.Store) (*mta.Server, error) {
	var s server
	s.log = slog.New(slog.DiscardHandler)
	_, signer, err := s.loadKeys(&Config{DKIM: cfg.DKIM, path: cfg.path})
	if err != nil {
		return nil, err
	}
	agent := &mda.Agent{Mailboxes: st, Delimiter: cfg.recipientDelimiter(), DefaultQuota: cfg.Limits.MaxMailboxBytes}
	q := newQueue(cfg, st, agent, resolve.NewCache(resolve.CacheOptions{}), s.log, nil, nil)
	opts := smtpOptions(cfg, nil, nil, s.log)
	opts.Senders = agent
	if signer != nil {
		opts.Sign = signer.Signature
	}
	return mta.NewSubmission(agent, q, smtpUsers{st}, opts), nil
}

// submitLocal runs the control socket's "sendmail" request.
func (a *adminOps) submitLocal(req request, resp *response) error {
	if a.submit == nil || req.Local == nil {
		return errors.New("sendmail: no server to take the message")
	}
	id, err := a.submit(*req.Local)
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		resp.SMTPCode = se.Code
		err = replyError(se)
	}
	resp.ID = id
	return err
}
