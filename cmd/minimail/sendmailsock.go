package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"minimail/mta"
	"minimail/mta/guard"
)

// `minimail sendmail` run by a user other than root and the service user
// can use neither control.sock nor the database: both are the service
// user's. So the running server also listens on listen.sendmail, a unix
// socket any local user may connect to (mode 0666; under the systemd unit
// /run/minimail/sendmail.sock), which takes one request only: a message to
// submit. Who sends it is what the kernel recorded of the connecting
// process (SO_PEERCRED), never anything the client says; the rule of the
// command line (envelopeSender) then decides which senders that user may
// use, and the Received field names that uid.
//
// A request is one line of JSON (sendmailRequest) followed by exactly Size
// bytes of message; the answer is one line of JSON (sendmailReply). The
// client reads the whole message before it connects, so an honest
// connection lasts as long as the submission itself. A stuck or hostile
// one is cut off after limits.command_timeout; one user holds at most
// maxSendmailPerUser connections, and the socket serves maxSendmailConns
// at once (further clients wait in the kernel's backlog).

const (
	// maxSendmailConns bounds the connections served at once; more wait
	// to be accepted.
	maxSendmailConns = 16
	// maxSendmailPerUser bounds one uid's connections at once, so that
	// one user's flood leaves room for the others; more are told to retry
	// (the client does, briefly).
	maxSendmailPerUser = 4
	// maxSendmailRequestLine bounds the JSON line before the message:
	// max_recipients addresses fit many times over.
	maxSendmailRequestLine = 64 << 10
	// defaultSendmailSocket is listen.sendmail under the systemd unit
	// (RuntimeDirectory=minimail), where the command looks when it cannot
	// read the config.
	defaultSendmailSocket = "/run/minimail/sendmail.sock"
)

// sendmailRequest is sendmail's command line as the socket takes it. It
// has no field for who the sender is: the kernel says that.
type sendmailRequest struct {
	Op         string   `json:"op"`                    // "sendmail", and nothing else
	FromHeader bool     `json:"from_header,omitempty"` // -t
	Sender     string   `json:"sender,omitempty"`      // -f
	FullName   string   `json:"full_name,omitempty"`   // -F
	Rcpts      []string `json:"rcpts,omitempty"`
	Size       int64    `json:"size"` // bytes of message after the line
}

// sendmailReply answers a request with the exit code the command exits
// with.
type sendmailReply struct {
	ID    string `json:"id,omitempty"`
	Error string `json:"error,omitempty"`
	Exit  int    `json:"exit"`
	// Busy: the user has maxSendmailPerUser connections open; a retry in
	// a moment may succeed.
	Busy bool `json:"busy,omitempty"`
}

// readSendmailRequest reads one request: the JSON line (at most
// maxSendmailRequestLine bytes, no unknown fields) and then exactly Size
// bytes of message, refused without being read when Size is over limit.
// It reads at most the line, a buffer's worth and Size bytes from r, and
// holds no more than Size bytes of message. Errors are *exitError.
func readSendmailRequest(r io.Reader, limit int64) (sendmailRequest, []byte, error) {
	var req sendmailRequest
	lr := &io.LimitedReader{R: r, N: maxSendmailRequestLine}
	br := bufio.NewReader(lr)
	line, err := br.ReadBytes('\n')
	switch {
	case err == io.EOF && lr.N == 0:
		return req, nil, exitf(exUsage, "bad request: its first line is longer than %d bytes", maxSendmailRequestLine)
	case err == io.EOF:
		return req, nil, exitf(exUsage, "bad request: the connection ended before the request line did")
	case err != nil:
		return req, nil, readError("the request", err)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, nil, exitf(exUsage, "bad request: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, nil, exitf(exUsage, "bad request: more than one JSON object on the request line")
	}
	switch {
	case req.Op != "sendmail":
		return req, nil, exitf(exUsage, "bad request: this socket takes only op \"sendmail\", not %q (admin commands go to control.sock, as root or the service user)", req.Op)
	case req.Size < 0:
		return req, nil, exitf(exUsage, "bad request: size %d", req.Size)
	case req.Size > limit:
		return req, nil, exitf(exDataErr, "message exceeds %d bytes (limits.max_message_bytes)", limit)
	}
	// What br holds beyond the line is the start of the message; lr lets
	// through no more than the rest of it.
	lr.N = max(0, req.Size-int64(br.Buffered()))
	msg, err := readExactly(br, req.Size)
	if err != nil {
		return req, nil, readError("the message", err)
	}
	return req, msg, nil
}

// readExactly reads n bytes, growing its buffer as they arrive rather than
// allocating n up front for a client that may never send them.
func readExactly(r io.Reader, n int64) ([]byte, error) {
	buf := make([]byte, 0, min(n, 64<<10))
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), n))
			copy(grown, buf)
			buf = grown
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if int64(len(buf)) == n {
			break
		}
		if err == io.EOF {
			return nil, fmt.Errorf("%w after %d of %d bytes", io.ErrUnexpectedEOF, len(buf), n)
		}
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// readError words a failed read: a client that stopped sending is a
// timeout (75), one that hung up early a bad request (64).
func readError(what string, err error) error {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return exitf(exTempFail, "reading %s: timed out (limits.command_timeout)", what)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return exitf(exUsage, "bad request: reading %s: %v", what, err)
	}
	return exitf(exTempFail, "reading %s: %v", what, err)
}

// listenSendmail makes the socket of listen.sendmail. Its directory must
// exist, belong to root or this process's user, and be writable by its
// owner alone: where others may write, another user could put a socket of
// their own at the path while the server is down, and read the mail
// everyone else hands to it.
func listenSendmail(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%w (under systemd, RuntimeDirectory=minimail in deploy/minimail.service makes /run/minimail; else create the directory, mode 0755, owned by the service user)", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return nil, fmt.Errorf("%s is not a directory", dir)
	case !ok:
		return nil, fmt.Errorf("%s: no owner information", dir)
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		return nil, fmt.Errorf("directory %s belongs to uid %d, neither root nor this server's user: it could replace the socket", dir, st.Uid)
	case fi.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("directory %s (mode %o) is writable by others, who could put a socket of their own there while the server is down: chmod go-w %s", dir, fi.Mode().Perm(), dir)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// Created under the umask (the unit's 0077); every user may connect.
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// removeStaleSocket removes the socket a killed server left at path. A
// socket someone still answers on (another server with the same
// listen.sendmail) and anything that is not a socket are left alone.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another server answers there", path)
	}
	return os.Remove(path)
}

// sendmailSocket serves listen.sendmail.
type sendmailSocket struct {
	cfg     *Config
	submit  func(mta.LocalMessage) (string, error)
	log     *slog.Logger
	timeout time.Duration // for reading a request: limits.command_timeout
	perUser int           // maxSendmailPerUser

	slots chan struct{} // one per connection being served (maxSendmailConns)
	done  chan struct{} // closed by Shutdown
	once  sync.Once
	wg    sync.WaitGroup

	mu      sync.Mutex
	l       net.Listener
	closing bool        // set by Shutdown: no connection is added after it
	byUID   map[int]int // connections being served per peer uid
	conns   map[net.Conn]struct{}
}

func newSendmailSocket(cfg *Config, submit func(mta.LocalMessage) (string, error), log *slog.Logger) *sendmailSocket {
	return &sendmailSocket{
		cfg: cfg, submit: submit, log: log,
		timeout: cfg.Limits.CommandTimeout.or(mta.DefaultCommandTimeout),
		perUser: maxSendmailPerUser,
		slots:   make(chan struct{}, maxSendmailConns),
		done:    make(chan struct{}),
		byUID:   map[int]int{},
		conns:   map[net.Conn]struct{}{},
	}
}

// Serve accepts connections until Shutdown.
func (s *sendmailSocket) Serve(l net.Listener) error {
	s.mu.Lock()
	s.l = l
	closing := s.closing
	s.mu.Unlock()
	if closing { // shut down before serving
		l.Close()
		return net.ErrClosed
	}
	l = &guard.Listener{Listener: l, Log: s.log}
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.done:
			return net.ErrClosed
		}
		c, err := l.Accept()
		if err != nil {
			<-s.slots
			return err
		}
		sc, ok := c.(syscall.Conn)
		var peer peerCredentials
		if ok {
			peer, err = peerCred(sc)
		} else {
			err = errors.New("peer credentials: not a unix socket connection")
		}
		if err != nil {
			s.log.Error("sendmail_refused", "reason", "no peer credentials", "error", err)
			c.Close()
			<-s.slots
			continue
		}
		// Counted here, in the order the kernel queued the connections,
		// so that a user's fifth connection is its fifth.
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			<-s.slots
			return net.ErrClosed
		}
		busy := s.byUID[peer.uid] >= s.perUser
		if !busy {
			s.byUID[peer.uid]++
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1) // under mu: before Shutdown's Wait, or not at all
		s.mu.Unlock()
		go s.serveConn(c, peer, busy)
	}
}

// Shutdown stops accepting and waits for the connections being served
// until ctx ends, then closes them.
func (s *sendmailSocket) Shutdown(ctx context.Context) error {
	s.once.Do(func() { close(s.done) })
	s.mu.Lock()
	s.closing = true
	if s.l != nil {
		s.l.Close()
	}
	s.mu.Unlock()
	finished := make(chan struct{})
	go func() { s.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-finished
	return ctx.Err()
}

func (s *sendmailSocket) serveConn(c net.Conn, peer peerCredentials, busy bool) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		if !busy {
			if s.byUID[peer.uid]--; s.byUID[peer.uid] <= 0 {
				delete(s.byUID, peer.uid)
			}
		}
		s.mu.Unlock()
		<-s.slots
		s.wg.Done()
	}()
	inv := invokerFor(peer.uid, s.cfg.DataDir)
	rep, submitted := s.handle(c, inv, busy)
	if !submitted {
		// A submission logs its own line (mta's SubmitLocal); this is
		// the line of a request refused before it got that far.
		s.log.Info("sendmail_refused", "user", inv.name, "uid", inv.uid, "pid", peer.pid, "exit", rep.Exit, "error", rep.Error)
	}
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	json.NewEncoder(c).Encode(rep)
}

// handle reads one request and submits it as inv; submitted says it got
// as far as SubmitLocal.
func (s *sendmailSocket) handle(c net.Conn, inv invoker, busy bool) (rep sendmailReply, submitted bool) {
	if busy {
		return sendmailReply{Exit: exTempFail, Busy: true,
			Error: fmt.Sprintf("busy: %s has %d messages in progress already; try again in a moment", inv.name, s.perUser)}, false
	}
	c.SetReadDeadline(time.Now().Add(s.timeout))
	req, msg, err := readSendmailRequest(c, s.cfg.Limits.MaxMessageBytes)
	if err != nil {
		return replyFor("", err), false
	}
	o := sendmailOptions{fromHeader: req.FromHeader, sender: req.Sender, fullName: req.FullName, rcpts: req.Rcpts}
	lm, err := localMessage(s.cfg, inv, o, msg)
	if err != nil {
		return replyFor("", err), false
	}
	id, err := s.submit(lm)
	return replyFor(id, submitExit(err)), true
}

// replyFor is the reply for err, an *exitError or nil.
func replyFor(id string, err error) sendmailReply {
	if err == nil {
		return sendmailReply{ID: id}
	}
	rep := sendmailReply{ID: id, Error: err.Error(), Exit: exTempFail}
	var ee *exitError
	if errors.As(err, &ee) {
		rep.Exit = ee.code
	}
	return rep
}

// submitExit gives SubmitLocal's error its exit code: a refusal is worded
// as its SMTP reply, 65 for a 5xx and 75 for a 4xx; anything else is
// worth a retry.
func submitExit(err error) error {
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return submitError(se.Code, replyError(se))
	}
	return &exitError{code: exTempFail, err: err}
}
