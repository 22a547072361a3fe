package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// The client half of listen.sendmail (sendmailsock.go): `minimail
// sendmail` as a user who is neither root nor the service user.

// maxUnknownMessage is the most the command reads from stdin when it
// cannot read the config to learn limits.max_message_bytes; the server
// refuses what is over its limit without reading it.
const maxUnknownMessage = 1 << 30

// sendmailClientTimeout bounds one exchange with the server.
const sendmailClientTimeout = 5 * time.Minute

// sendmailBusyRetries are the pauses before asking again when the server
// says the user has too many messages in progress (a burst of cron jobs).
var sendmailBusyRetries = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}

// userSendmailSocket is the socket of a user who cannot read the config:
// $MINIMAIL_SENDMAIL_SOCKET, else where the systemd unit has it.
func userSendmailSocket() string {
	return cmp.Or(os.Getenv("MINIMAIL_SENDMAIL_SOCKET"), defaultSendmailSocket)
}

// sendmailOverSocket reads the message and hands it to the server on
// path. The exit code is the server's, or 75 when no server answers.
func sendmailOverSocket(path string, o sendmailOptions, stdin io.Reader, limit int64, limitName string) error {
	msg, err := readSendmailMessage(stdin, o.ignoreDots, limit, limitName)
	if err != nil {
		return err
	}
	req := sendmailRequest{Op: "sendmail", FromHeader: o.fromHeader, Sender: o.sender, FullName: o.fullName, Rcpts: o.rcpts, Size: int64(len(msg))}
	for attempt := 0; ; attempt++ {
		rep, err := callSendmailSocket(path, req, msg)
		if err != nil {
			return err
		}
		if rep.Busy && attempt < len(sendmailBusyRetries) {
			time.Sleep(sendmailBusyRetries[attempt])
			continue
		}
		switch rep.Exit {
		case exOK:
			return nil
		case exUsage, exDataErr, exTempFail, exNoPerm:
			return &exitError{code: rep.Exit, err: errors.New(rep.Error)}
		}
		return exitf(exTempFail, "sendmail socket %s: exit %d: %s", path, rep.Exit, rep.Error)
	}
}

// callSendmailSocket sends one request and reads the reply.
func callSendmailSocket(path string, req sendmailRequest, msg []byte) (sendmailReply, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	switch {
	case errors.Is(err, os.ErrPermission):
		return sendmailReply{}, exitf(exNoPerm, "sendmail socket %s: %v: its directory must let every user in (README: sendmail)", path, err)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return sendmailReply{}, exitf(exTempFail, "the mail server is not running (nothing answers on %s): "+
			"mail of users other than root and the service user waits for it, try again later", path)
	case err != nil:
		return sendmailReply{}, exitf(exTempFail, "sendmail socket %s: %v", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(sendmailClientTimeout))
	line, err := json.Marshal(req)
	if err != nil {
		return sendmailReply{}, exitf(exTempFail, "sendmail socket %s: %v", path, err)
	}
	w := bufio.NewWriter(c)
	w.Write(line)
	w.WriteByte('\n')
	w.Write(msg)
	// A server that refuses early (busy, too big) answers and hangs up
	// without reading the rest: its answer is still there to read.
	werr := w.Flush()
	var rep sendmailReply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return sendmailReply{}, exitf(exTempFail, "sendmail socket %s: no answer: %v", path, cmp.Or(werr, err))
	}
	return rep, nil
}
