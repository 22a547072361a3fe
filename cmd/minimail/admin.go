package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"minimail/mta"
	"minimail/mta/guard"
	"minimail/mta/mailaddr"
	"minimail/mta/queue"
	"minimail/store"
)

// The admin commands (user, queue, backup) must work whether or not `serve`
// is running on the same data_dir, and bbolt allows one opener. So `serve`
// listens on a unix socket, DATA_DIR/control.sock (mode 0600: only the
// account that runs the server may use it), and the commands send their
// request there when it answers, or open the store themselves when it does
// not. Either way the same adminOps code runs against an open store.

const controlSocket = "control.sock"

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes with its terminating NUL).
const maxSocketPath = 107

// adminQueue is what the admin commands need from the running server's
// queue (a stopped server's queue is handled in the store directly).
type adminQueue interface {
	Flush()
	Drop(id string) error
}

// adminOps runs admin requests against an open store (and the live queue
// when the server runs them).
type adminOps struct {
	st    *store.Store
	cfg   *Config    // the domains a user may be created in
	queue adminQueue // nil when the server is not running
	// throttle is the running server's login throttle (auth.go); nil
	// when the server is not running.
	throttle adminThrottle
	// status describes the running server; nil when it is not running.
	status func() serverStatus
	// submit takes a message from `minimail sendmail` (sendmail.go); nil
	// when the server is not running.
	submit func(mta.LocalMessage) (string, error)
}

// maxLocalPart is the longest local part (before the @) RFC 5321
// 4.5.3.1.1 requires servers to take: a longer one would be refused by
// other servers anyway.
const maxLocalPart = 64

// userAddress checks the address of `user add` and `user passwd`, whether
// it comes from the command line or the control socket: an address the
// store takes (store.CanonicalAddress) in one of the local domains. It
// returns the canonical form.
func userAddress(cfg *Config, addr string) (string, error) {
	canon, err := store.CanonicalAddress(addr)
	if err != nil {
		return "", err
	}
	if local := canon[:strings.LastIndexByte(canon, '@')]; len(local) > maxLocalPart {
		return "", fmt.Errorf("address %s: local part of %d octets, more than the %d RFC 5321 4.5.3.1.1 allows", canon, len(local), maxLocalPart)
	}
	if domain := canon[strings.LastIndexByte(canon, '@')+1:]; cfg == nil || !cfg.isLocalDomain(domain) {
		var domains, path string
		if cfg != nil {
			domains, path = strings.Join(cfg.Domains, ", "), cfg.path
		}
		return "", fmt.Errorf("address %s: domain %s is not in domains (%s) of %s", canon, domain, domains, path)
	}
	return canon, nil
}

// request is one admin command sent over the control socket.
type request struct {
	Op       string `json:"op"`
	Addr     string `json:"addr,omitempty"`
	Password string `json:"password,omitempty"`
	ID       string `json:"id,omitempty"`
	Quota    int64  `json:"quota,omitempty"` // user.quota
	// Targets are alias.add's.
	Targets []string `json:"targets,omitempty"`
	// Local is the message of "sendmail" (sendmail.go).
	Local *mta.LocalMessage `json:"local,omitempty"`
}

// response is the answer to a request. The answer to "backup" is Size
// (or Error) followed by exactly Size bytes of the database copy.
type response struct {
	Error string       `json:"error,omitempty"`
	Users []store.User `json:"users,omitempty"`
	// DefaultQuota is limits.max_mailbox_bytes, with Users: the quota of
	// a user whose Quota is 0.
	DefaultQuota int64              `json:"default_quota,omitempty"`
	Queue        []store.QueueEntry `json:"queue,omitempty"`
	Size         int64              `json:"size,omitempty"`
	// auth.blocked and auth.unblock (auth.go)
	Blocks  []guard.Block  `json:"blocks,omitempty"`
	Cleared []netip.Prefix `json:"cleared,omitempty"`
	Status  *serverStatus  `json:"status,omitempty"`  // status.go
	Aliases []store.Alias  `json:"aliases,omitempty"` // alias.list
	Events  []store.Event  `json:"events,omitempty"`  // trace (trace.go)
	Counts  map[string]int `json:"counts,omitempty"`  // trace.count: events of the last hour by kind
	Certs   []certInfo     `json:"certs,omitempty"`   // certs: the ACME certificates (acme.go)
	// Refused says Error is a request refused for what it asks (an alias
	// that would shadow a user, loop, ...): exit code 2, as for bad usage.
	Refused bool `json:"refused,omitempty"`
	// ID and SMTPCode answer "sendmail": the message's id, or the code
	// of the SMTP reply that refused it.
	ID       string `json:"id,omitempty"`
	SMTPCode int    `json:"smtp_code,omitempty"`
}

func (a *adminOps) do(req request) response {
	var resp response
	var err error
	switch req.Op {
	case "user.add", "user.passwd":
		err = a.setUser(req)
	case "user.del":
		err = a.st.DeleteUser(req.Addr)
		if errors.Is(err, store.ErrAliasInUse) {
			err = &refusedError{err}
		}
	case "alias.add":
		var al store.Alias
		if al, err = a.addAlias(req); err == nil {
			resp.Aliases = []store.Alias{al}
		}
	case "alias.del":
		err = a.st.DeleteAlias(req.Addr)
		if errors.Is(err, store.ErrAliasInUse) {
			err = &refusedError{err}
		}
	case "alias.list":
		resp.Aliases, err = a.st.Aliases()
	case "user.list":
		resp.Users, err = a.st.Users()
		if a.cfg != nil {
			resp.DefaultQuota = a.cfg.Limits.MaxMailboxBytes
		}
	case "user.quota":
		err = a.st.SetQuota(req.Addr, req.Quota)
	case "queue.list":
		resp.Queue, err = a.st.QueueEntries()
	case "queue.flush":
		if a.queue != nil {
			a.queue.Flush()
		} else {
			err = flushStored(a.st)
		}
	case "queue.drop":
		if a.queue != nil {
			err = a.queue.Drop(req.ID)
		} else {
			err = dropStored(a.st, req.ID)
		}
	case "trace":
		resp.Events, err = a.st.Trace(req.ID)
	case "trace.count":
		resp.Counts, err = a.st.TraceCount(time.Now().Add(-time.Hour))
	case "certs":
		resp.Certs, err = storedCerts(a.st, acmeNames(a.cfg))
	case "status":
		if a.status == nil {
			err = errors.New("no server is running")
		} else {
			st := a.status()
			resp.Status = &st
		}
	case "sendmail":
		err = a.submitLocal(req, &resp)
	case "auth.blocked":
		resp.Blocks, err = a.blocks()
	case "auth.unblock":
		resp.Cleared, err = a.unblock(req.Addr)
	default:
		err = fmt.Errorf("unknown admin operation %q", req.Op)
	}
	if err != nil {
		resp.Error = err.Error()
		var re *refusedError
		resp.Refused = errors.As(err, &re)
	}
	return resp
}

// refusedError is an admin request refused for what it asks: exit code 2.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// addAlias runs alias.add: the alias in a local domain, every target a
// local address or a remote one fit to forward to (checkRemoteTarget),
// then the store's rules (no shadowed user, local targets that exist, no
// loop). Every refusal is a refusedError.
func (a *adminOps) addAlias(req request) (store.Alias, error) {
	alias, err := store.CanonicalAlias(req.Addr)
	if err != nil {
		return store.Alias{}, &refusedError{err}
	}
	if local := alias[:strings.LastIndexByte(alias, '@')]; len(local) > maxLocalPart {
		return store.Alias{}, &refusedError{fmt.Errorf("alias %s: local part of %d octets, more than the %d RFC 5321 4.5.3.1.1 allows", alias, len(local), maxLocalPart)}
	}
	if d := store.Domain(alias); a.cfg == nil || !a.cfg.isLocalDomain(d) {
		var domains string
		if a.cfg != nil {
			domains = strings.Join(a.cfg.Domains, ", ")
		}
		return store.Alias{}, &refusedError{fmt.Errorf("alias %s: domain %s is not a local domain (domains: %s)", alias, d, domains)}
	}
	if len(req.Targets) == 0 {
		return store.Alias{}, &refusedError{fmt.Errorf("alias %s: no targets", alias)}
	}
	for _, t := range req.Targets {
		ct, err := store.CanonicalAddress(t)
		if err != nil {
			return store.Alias{}, &refusedError{fmt.Errorf("target: %w", err)}
		}
		if !a.cfg.isLocalDomain(store.Domain(ct)) {
			if err := checkRemoteTarget(ct); err != nil {
				return store.Alias{}, &refusedError{fmt.Errorf("alias %s: target %s: %w", alias, t, err)}
			}
		}
	}
	remote := func(t string) bool { return !a.cfg.isLocalDomain(store.Domain(t)) }
	al, err := a.st.AddAliasRemote(alias, req.Targets, remote)
	for _, e := range []error{store.ErrBadAlias, store.ErrAliasExists, store.ErrAliasShadowsUser, store.ErrNoTarget, store.ErrAliasLoop} {
		if errors.Is(err, e) {
			return store.Alias{}, &refusedError{err}
		}
	}
	return al, err
}

// checkRemoteTarget refuses a remote target the queue could not (or must
// not) send to, as submission refuses such recipients: a local part over
// 64 octets or one needing quotes, a malformed domain, an IP address in
// place of a domain (it would make the queue dial internal hosts).
func checkRemoteTarget(addr string) error {
	at := strings.LastIndexByte(addr, '@')
	local, domain := addr[:at], addr[at+1:]
	switch {
	case len(local) > maxLocalPart:
		return fmt.Errorf("local part of %d octets, more than the %d RFC 5321 4.5.3.1.1 allows", len(local), maxLocalPart)
	case !mailaddr.IsDotString(local):
		return fmt.Errorf("local part %q needs quoting, which is not supported", local)
	case mailaddr.IsIPDomain(domain):
		return fmt.Errorf("forwarding to an IP address is refused")
	case !mailaddr.ValidDomain(domain):
		return fmt.Errorf("malformed domain %q", domain)
	}
	return nil
}

// setUser runs user.add and user.passwd. The socket takes the addresses and
// passwords the command line takes, no others.
func (a *adminOps) setUser(req request) error {
	addr, err := userAddress(a.cfg, req.Addr)
	if err != nil {
		return err
	}
	if err := checkPassword(a.cfg, addr, req.Password); err != nil {
		return err
	}
	if req.Op == "user.add" {
		return a.st.AddUser(addr, req.Password)
	}
	return a.st.SetPassword(addr, req.Password)
}

// serveControl answers admin requests on DATA_DIR/control.sock until ctx ends.
func serveControl(dataDir string, ops *adminOps, log *slog.Logger) (stop func(), err error) {
	path := filepath.Join(dataDir, controlSocket)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket %s: path longer than the %d bytes a unix socket allows; choose a shorter data_dir", path, maxSocketPath)
	}
	// A socket left by a killed server would make Listen fail; nobody else
	// can be serving on it, since we hold the database lock.
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Minute))
				var req request
				if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
					return
				}
				if req.Op == "backup" {
					n, err := serveBackup(c, ops.st)
					log.Info("admin", "op", req.Op, "bytes", n, "error", errString(err))
					return
				}
				resp := ops.do(req)
				log.Info("admin", "op", req.Op, "addr", req.Addr, "id", cmp.Or(req.ID, resp.ID), "error", resp.Error)
				json.NewEncoder(c).Encode(resp)
			}()
		}
	}()
	return func() {
		l.Close()
		<-done
		os.Remove(path)
	}, nil
}

// errNoServer means no server answered on the control socket.
var errNoServer = errors.New("no server on the control socket")

// dialControl connects to a running server's control socket. It returns
// errNoServer when none is listening, and says whom to run as when the
// socket is there but not ours to use.
func dialControl(dataDir string) (net.Conn, error) {
	path := filepath.Join(dataDir, controlSocket)
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("control socket %s: %w: %s", path, err, runAsHint(dataDir))
	}
	if err != nil {
		return nil, errNoServer
	}
	return c, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// callServer sends req to a running server. It returns errNoServer when
// none is listening.
func callServer(dataDir string, req request) (response, error) {
	c, err := dialControl(dataDir)
	if err != nil {
		return response{}, err
	}
	defer c.Close()
	path := filepath.Join(dataDir, controlSocket)
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	var resp response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return response{}, fmt.Errorf("control socket %s: no answer: %w", path, err)
	}
	return resp, nil
}

// adminDo runs req on the running server if there is one, else on the store
// opened directly.
func adminDo(cfg *Config, req request) (response, error) {
	resp, err := callServer(cfg.DataDir, req)
	if err == nil {
		return resp, respError(resp)
	}
	if !errors.Is(err, errNoServer) {
		return resp, err
	}
	st, err := openStoreDirect(cfg.DataDir)
	if err != nil {
		return resp, err
	}
	defer st.Close()
	ops := &adminOps{st: st, cfg: cfg}
	resp = ops.do(req)
	return resp, respError(resp)
}

// respError is the error an answer carries: a refusedError (exit 2) when
// the request was refused for what it asks.
func respError(resp response) error {
	switch {
	case resp.Error == "":
		return nil
	case resp.Refused:
		return &refusedError{errors.New(resp.Error)}
	}
	return errors.New(resp.Error)
}

// flushStored makes every queued message due now, for the next `serve`, when
// no server is running to flush its live queue.
func flushStored(st *store.Store) error {
	entries, err := st.QueueEntries()
	if err != nil {
		return err
	}
	now := time.Now()
	for _, e := range entries {
		e.NextAttempt = now
		if err := st.UpdateQueueEntry(e); err != nil && !errors.Is(err, store.ErrNoQueueEntry) {
			return err
		}
	}
	return nil
}

// dropStored deletes a queued message when no server is running.
func dropStored(st *store.Store, id string) error {
	n, err := queue.Find(st, id)
	if err != nil {
		return err
	}
	if _, err := st.QueueEntry(n); err != nil {
		return fmt.Errorf("queue id %s: %w", id, err)
	}
	return st.DeleteQueueEntry(n)
}
