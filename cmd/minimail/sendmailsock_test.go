package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"minimail/mta"
	"minimail/mta/remote/smtptest"
)

// socketSite is sendmailSite serving listen.sendmail in a directory every
// user may enter. Its config stays the test's alone (mode 0600), as an
// installed one is root's and the service group's: other users find the
// socket through MINIMAIL_SENDMAIL_SOCKET.
func socketSite(t *testing.T, sink *smtptest.Server, extra string) (*site, string) {
	t.Helper()
	a := sendmailSite(t, sink, extra)
	a.stop(t)
	sock := filepath.Join(openDir(t), "sendmail.sock")
	b, err := os.ReadFile(a.cfg.path)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("[listen]\n"), fmt.Appendf(nil, "[listen]\nsendmail = %q\n", sock), 1)
	if err := os.WriteFile(a.cfg.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if a.cfg, err = loadConfig(a.cfg.path); err != nil {
		t.Fatal(err)
	}
	a.start(t)
	return a, sock
}

// sendmailAs runs the built binary's sendmail as acct, who cannot read the
// config (mode 0600 in a directory of mode 0700, the test's) and so uses
// the socket of MINIMAIL_SENDMAIL_SOCKET.
func sendmailAs(t *testing.T, acct account, a *site, sock, stdin string, args ...string) result {
	t.Helper()
	return runMinimail(t, runOptions{stdin: stdin, cred: acct.credential(), env: []string{"MINIMAIL_SENDMAIL_SOCKET=" + sock}, timeout: time.Minute},
		append([]string{"--config", a.cfg.path, "sendmail"}, args...)...)
}

// TestSendmailSocket_OrdinaryUser: a user who is neither root nor the
// service user, and cannot read the config, sends as itself at hostname
// through the running server; the Received field and the log name the
// uid the kernel gave; -f of someone else is refused (64), -f of its own
// name with a tag in a local domain is taken.
func TestSendmailSocket_OrdinaryUser(t *testing.T) {
	requireRoot(t)
	joe := newServiceUser(t)
	sink := smtptest.Start(t, smtptest.Options{})
	a, sock := socketSite(t, sink, "")
	wantMode(t, sock, 0o666, 0, -1)
	if r := runMinimail(t, runOptions{cred: joe.credential()}, "--config", a.cfg.path, "user", "list"); r.code == 0 {
		t.Fatalf("the test's premise fails: %s can read %s", joe.name, a.cfg.path)
	}

	r := sendmailAs(t, joe, a, sock, "Subject: from joe\n\nhi\n", "alice", "dave@far.test")
	if r.code != 0 {
		t.Fatalf("sendmail as %s: exit %d: %s", joe.name, r.code, r.stderr)
	}
	m := a.waitMessages(t, "alice@a.test", 1)[0]
	for _, want := range []string{
		"Return-Path: <" + joe.name + "@mx.a.test>",
		fmt.Sprintf("Received: by mx.a.test (minimail sendmail, from userid %d, %s)", joe.uid, joe.name),
		"\r\nFrom: <" + joe.name + "@mx.a.test>\r\n",
	} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("alice's copy lacks %q:\n%s", want, m)
		}
	}
	if remote := sink.Wait(t); remote.From != joe.name+"@mx.a.test" {
		t.Errorf("the remote copy has MAIL FROM %s", remote.From)
	}
	if want := fmt.Sprintf("listener=sendmail user=%s uid=%d", joe.name, joe.uid); !strings.Contains(a.logs.String(), want) {
		t.Errorf("no log line with %q:\n%s", want, a.logs)
	}

	r = sendmailAs(t, joe, a, sock, "Subject: x\n\nx\n", "-f", "alice@a.test", "bob")
	if r.code != 64 || !strings.Contains(r.stderr, joe.name+" may send only as "+joe.name+"@") {
		t.Errorf("-f alice as %s: exit %d %q, want 64", joe.name, r.code, r.stderr)
	}
	r = sendmailAs(t, joe, a, sock, "To: bob\nSubject: tagged\n\nx\n", "-t", "-f", joe.name+"+cron@a.test")
	if r.code != 0 {
		t.Fatalf("-f %s+cron@a.test: exit %d %q", joe.name, r.code, r.stderr)
	}
	if m := a.waitMessages(t, "bob@a.test", 1)[0]; !bytes.Contains(m, []byte("Return-Path: <"+joe.name+"+cron@a.test>")) {
		t.Errorf("bob's copy is not from %s+cron@a.test:\n%s", joe.name, m)
	}
	if n := len(a.waitMessages(t, "bob@a.test", 1)); n != 1 {
		t.Errorf("bob has %d messages: the refused -f alice was stored", n)
	}
	// A script's 10 MiB report, under the default 25 MiB limit.
	big := "Subject: big\n\n" + strings.Repeat(strings.Repeat("y", 1023)+"\n", 10<<10)
	if r := sendmailAs(t, joe, a, sock, big, "bob"); r.code != 0 {
		t.Fatalf("10 MiB: exit %d %q", r.code, r.stderr)
	}
	if got := a.waitMessages(t, "bob@a.test", 2)[1]; len(got) < 10<<20 {
		t.Errorf("stored %d bytes of 10 MiB", len(got))
	}
}

// TestSendmailSocket_ServerDown: with no server running, a user other than
// root and the service user is told to try again later (75): it cannot
// write to the store, and nothing is stored.
func TestSendmailSocket_ServerDown(t *testing.T) {
	requireRoot(t)
	joe := newServiceUser(t)
	sink := smtptest.Start(t, smtptest.Options{})
	a, sock := socketSite(t, sink, "")
	a.stop(t)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after stop: %v, want it removed", sock, err)
	}
	r := sendmailAs(t, joe, a, sock, "Subject: x\n\nx\n", "alice")
	if r.code != 75 || !strings.Contains(r.stderr, "the mail server is not running") {
		t.Errorf("server down: exit %d %q, want 75", r.code, r.stderr)
	}
	st, err := openStoreForTest(a.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if list, _ := st.List("alice@a.test"); len(list) != 0 {
		t.Errorf("alice has %d messages", len(list))
	}
}

// TestSendmailSocket_OverTheLimit: a message over limits.max_message_bytes
// from a user who cannot read the config (so the command cannot refuse it
// itself) is refused by the server from the size it is announced with,
// before a byte of it is read (65); nothing is stored.
func TestSendmailSocket_OverTheLimit(t *testing.T) {
	requireRoot(t)
	joe := newServiceUser(t)
	sink := smtptest.Start(t, smtptest.Options{})
	a, sock := socketSite(t, sink, "max_message_bytes = 100000\n")
	big := "Subject: big\n\n" + strings.Repeat(strings.Repeat("z", 999)+"\n", 4<<10) // 4 MiB: more than a socket buffer
	r := sendmailAs(t, joe, a, sock, big, "alice")
	if r.code != 65 || !strings.Contains(r.stderr, "message exceeds 100000 bytes (limits.max_message_bytes)") {
		t.Errorf("4 MiB over a 100000-byte limit: exit %d %q, want 65", r.code, r.stderr)
	}
	if r := sendmailAs(t, joe, a, sock, "Subject: small\n\nx\n", "alice"); r.code != 0 {
		t.Errorf("a small one after it: exit %d %q", r.code, r.stderr)
	}
	if got := a.waitMessages(t, "alice@a.test", 1); !bytes.Contains(got[0], []byte("Subject: small")) {
		t.Errorf("stored: %s", got[0])
	}
}

// dialAs connects to the unix socket at path as acct, so that the kernel
// names acct as the peer: the thread that connects takes acct's ids and
// ends with its goroutine, never to run anything else.
func dialAs(t *testing.T, acct account, path string) net.Conn {
	t.Helper()
	type dialed struct {
		c   net.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, uintptr(acct.gid), uintptr(acct.gid), uintptr(acct.gid)); e != 0 {
			ch <- dialed{nil, fmt.Errorf("setresgid: %w", e)}
			return
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(acct.uid), uintptr(acct.uid), uintptr(acct.uid)); e != 0 {
			ch <- dialed{nil, fmt.Errorf("setresuid: %w", e)}
			return
		}
		c, err := net.Dial("unix", path)
		ch <- dialed{c, err}
	}()
	d := <-ch
	if d.err != nil {
		t.Fatalf("dial %s as %s: %v", path, acct.name, d.err)
	}
	t.Cleanup(func() { d.c.Close() })
	return d.c
}

// rawRequest sends a request line and body as written on c and returns
// the server's reply; the deadline only guards against a hang.
func rawRequest(t *testing.T, c net.Conn, line string, body []byte) sendmailReply {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		c.Write(append([]byte(line+"\n"), body...))
	}()
	return readReply(t, c)
}

func readReply(t *testing.T, c net.Conn) sendmailReply {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var rep sendmailReply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return rep
}

// TestSendmailSocket_TrustsOnlyTheKernel, with clients written by hand as
// an ordinary user: fields claiming another uid or user, and the control
// socket's own sendmail request with its user and uid, are refused (64)
// and grant nothing; admin operations (user.add, queue.drop, backup) are
// not reachable; a well-formed request is stored under the kernel's uid.
func TestSendmailSocket_TrustsOnlyTheKernel(t *testing.T) {
	requireRoot(t)
	joe := newServiceUser(t)
	sink := smtptest.Start(t, smtptest.Options{})
	a, sock := socketSite(t, sink, "")
	body := []byte("Subject: raw\n\nx\n")
	for _, tc := range []struct {
		name, line, say string
	}{
		{"claims root", fmt.Sprintf(`{"op":"sendmail","sender":"ceo@elsewhere.test","rcpts":["alice@a.test"],"uid":0,"user":"root","size":%d}`, len(body)), `unknown field "uid"`},
		{"claims trust", fmt.Sprintf(`{"op":"sendmail","sender":"ceo@elsewhere.test","rcpts":["alice@a.test"],"trusted":true,"size":%d}`, len(body)), `unknown field "trusted"`},
		{"control.sock's sendmail", fmt.Sprintf(`{"op":"sendmail","local":{"From":"ceo@elsewhere.test","Rcpts":["alice@a.test"],"User":"root","UID":0,"Message":"U3ViamVjdDogeAoKeAo="},"size":%d}`, len(body)), `unknown field "local"`},
		{"someone else's sender", fmt.Sprintf(`{"op":"sendmail","sender":"ceo@a.test","rcpts":["alice@a.test"],"size":%d}`, len(body)), joe.name + " may send only as"},
		{"user.add", `{"op":"user.add"}`, `only op "sendmail", not "user.add"`},
		{"user.add with its fields", `{"op":"user.add","addr":"eve@a.test","password":"a long password"}`, `unknown field "addr"`},
		{"queue.drop", `{"op":"queue.drop"}`, `only op "sendmail", not "queue.drop"`},
		{"backup", `{"op":"backup"}`, `only op "sendmail", not "backup"`},
		{"not JSON", `HELO there`, "bad request"},
	} {
		rep := rawRequest(t, dialAs(t, joe, sock), tc.line, body)
		if rep.Exit != exUsage || !strings.Contains(rep.Error, tc.say) || rep.ID != "" {
			t.Errorf("%s: reply %+v, want exit 64 and %q", tc.name, rep, tc.say)
		}
	}
	if users, _ := a.srv.st.Users(); len(users) != 2 {
		t.Errorf("users after the requests: %+v", users)
	}
	// One log line per request: the socket's for those refused before
	// submission, SubmitLocal's alone for one it refused.
	rep := rawRequest(t, dialAs(t, joe, sock), fmt.Sprintf(`{"op":"sendmail","rcpts":["nobody"],"size":%d}`, len(body)), body)
	if rep.Exit != exDataErr || !strings.Contains(rep.Error, "5.1.1") {
		t.Errorf("to an unknown user: %+v, want 65", rep)
	}
	waitFor(t, "the log line of the refused submission", func() bool { return strings.Contains(a.logs.String(), "nobody@a.test") })
	if n := strings.Count(a.logs.String(), "msg=sendmail_refused"); n != 9 {
		t.Errorf("%d sendmail_refused lines for 9 refused requests:\n%s", n, a.logs)
	}
	if !strings.Contains(a.logs.String(), fmt.Sprintf("msg=sendmail_refused user=%s uid=%d", joe.name, joe.uid)) {
		t.Errorf("the refusals do not name %s's uid:\n%s", joe.name, a.logs)
	}
	rep = rawRequest(t, dialAs(t, joe, sock), fmt.Sprintf(`{"op":"sendmail","rcpts":["alice"],"size":%d}`, len(body)), body)
	if rep.Exit != exOK || rep.ID == "" {
		t.Fatalf("a well-formed request: %+v", rep)
	}
	m := a.waitMessages(t, "alice@a.test", 1)[0]
	if want := fmt.Sprintf("(minimail sendmail, from userid %d, %s)\r\n\tid %s", joe.uid, joe.name, rep.ID); !bytes.Contains(m, []byte(want)) {
		t.Errorf("alice's copy lacks %q:\n%s", want, m)
	}
	if len(a.waitMessages(t, "alice@a.test", 1)) != 1 {
		t.Error("a refused request was stored")
	}
}

// TestSendmailSocket_SizeIsCheckedBeforeReading: a request announcing more
// than limits.max_message_bytes is answered at once, without the server
// waiting for (or holding) its body; a client that sends more than it
// announced gets exactly what it announced stored.
func TestSendmailSocket_SizeIsCheckedBeforeReading(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	// An hour to send the body: a reply before it proves none was awaited.
	a, sock := socketSite(t, sink, "max_message_bytes = 100000\ncommand_timeout = \"1h\"\n")
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(`{"op":"sendmail","rcpts":["alice"],"size":100001}` + "\n"))
	if rep := readReply(t, c); rep.Exit != exDataErr || !strings.Contains(rep.Error, "exceeds 100000 bytes") {
		t.Errorf("size 100001: %+v, want 65", rep)
	}

	c, err = net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "Subject: exact\n\nbody\n"
	rep := rawRequest(t, c, fmt.Sprintf(`{"op":"sendmail","rcpts":["alice"],"size":%d}`, len(msg)), []byte(msg+"and more that was not announced\n"))
	if rep.Exit != exOK {
		t.Fatalf("%+v", rep)
	}
	if got := body(a.waitMessages(t, "alice@a.test", 1)[0]); string(got) != "body\r\n" {
		t.Errorf("stored body %q", got)
	}
}

// TestSendmailSocket_StuckClientIsCutOff: a client that connects and says
// nothing is answered 75 and disconnected after limits.command_timeout.
func TestSendmailSocket_StuckClientIsCutOff(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a, sock := socketSite(t, sink, "command_timeout = \"100ms\"\n")
	for _, sent := range []string{"", `{"op":"sendmail","rcpts":["alice"],"size":50}` + "\nSubject: half"} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(sent))
		if rep := readReply(t, c); rep.Exit != exTempFail || !strings.Contains(rep.Error, "timed out (limits.command_timeout)") {
			t.Errorf("sent %q and waited: %+v, want 75", sent, rep)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("sent %q: the connection is still open (%v)", sent, err)
		}
	}
	if !strings.Contains(a.logs.String(), "msg=sendmail_refused") {
		t.Errorf("no log line for the refusals:\n%s", a.logs)
	}
}

// TestSendmailSocket_OneUserCannotTakeEveryConnection: a user holds at most
// maxSendmailPerUser connections; its next one is told it is busy (and the
// command, after a few retries, exits 75), while another user is served;
// once the first user's connections end it is served again.
func TestSendmailSocket_OneUserCannotTakeEveryConnection(t *testing.T) {
	requireRoot(t)
	joe, ann := newServiceUser(t), newServiceUser(t)
	sink := smtptest.Start(t, smtptest.Options{})
	a, sock := socketSite(t, sink, "command_timeout = \"1h\"\n")
	var held []net.Conn
	for range maxSendmailPerUser {
		held = append(held, dialAs(t, joe, sock))
	}
	rep := readReply(t, dialAs(t, joe, sock))
	if !rep.Busy || rep.Exit != exTempFail {
		t.Errorf("joe's connection %d: %+v, want busy (75)", maxSendmailPerUser+1, rep)
	}
	if r := sendmailAs(t, joe, a, sock, "Subject: x\n\nx\n", "alice"); r.code != 75 || !strings.Contains(r.stderr, "busy") {
		t.Errorf("joe's sendmail: exit %d %q, want 75 busy", r.code, r.stderr)
	}
	if r := sendmailAs(t, ann, a, sock, "Subject: from ann\n\nx\n", "alice"); r.code != 0 {
		t.Errorf("ann's sendmail while joe holds %d connections: exit %d %q", maxSendmailPerUser, r.code, r.stderr)
	}
	a.waitMessages(t, "alice@a.test", 1)
	for _, c := range held {
		c.Close()
	}
	// The server sees the hang-ups as it reads; joe's next try may come
	// first and be retried.
	if r := sendmailAs(t, joe, a, sock, "Subject: from joe\n\nx\n", "alice"); r.code != 0 {
		t.Errorf("joe's sendmail after hanging up: exit %d %q", r.code, r.stderr)
	}
	a.waitMessages(t, "alice@a.test", 2)
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestReadSendmailRequest: the request line's rules and the bound on what
// is read: never more than the line, a buffer (4096 bytes) and the
// announced size, whatever follows.
func TestReadSendmailRequest(t *testing.T) {
	const limit = 1000
	flood := strings.Repeat("x", 1<<20)
	for _, tc := range []struct {
		name    string
		input   string
		exit    int // 0: taken
		say     string
		message string
		maxRead int
	}{
		{"taken", `{"op":"sendmail","rcpts":["a@b.test"],"size":5}` + "\nhello" + flood, 0, "", "hello", 4096 + 50},
		{"empty message", `{"op":"sendmail","size":0}` + "\n", 0, "", "", 4096},
		{"the limit exactly", `{"op":"sendmail","size":1000}` + "\n" + flood, 0, "", flood[:1000], 4096 + 1000 + 30},
		{"over the limit", `{"op":"sendmail","size":1001}` + "\n" + flood, exDataErr, "exceeds 1000 bytes", "", 4096},
		{"short", `{"op":"sendmail","size":10}` + "\nabc", exUsage, "after 3 of 10 bytes", "", 4096},
		{"no line end", `{"op":"sendmail","size":1}`, exUsage, "ended before the request line did", "", 4096},
		{"a line without end", flood, exUsage, "longer than 65536 bytes", "", maxSendmailRequestLine},
		{"unknown field", `{"op":"sendmail","uid":0,"size":1}` + "\nx", exUsage, `unknown field "uid"`, "", 4096},
		{"two objects", `{"op":"sendmail","size":1}{"op":"x"}` + "\nx", exUsage, "more than one JSON object", "", 4096},
		{"another op", `{"op":"user.del","size":0}` + "\n", exUsage, `not "user.del"`, "", 4096},
		{"negative size", `{"op":"sendmail","size":-1}` + "\n", exUsage, "size -1", "", 4096},
		{"not JSON", "EHLO x\r\n", exUsage, "bad request", "", 4096},
	} {
		cr := &countingReader{r: strings.NewReader(tc.input)}
		_, msg, err := readSendmailRequest(cr, limit)
		var ee *exitError
		switch {
		case tc.exit == 0 && (err != nil || string(msg) != tc.message):
			t.Errorf("%s: %q, %v; want %q", tc.name, msg, err, tc.message)
		case tc.exit != 0 && (!errors.As(err, &ee) || ee.code != tc.exit || !strings.Contains(err.Error(), tc.say)):
			t.Errorf("%s: %v, want exit %d and %q", tc.name, err, tc.exit, tc.say)
		}
		if cr.n > tc.maxRead {
			t.Errorf("%s: read %d bytes, more than %d", tc.name, cr.n, tc.maxRead)
		}
	}
}

// FuzzSendmailRequest: whatever a local user writes to the socket, the
// parser never panics, never returns a message over the limit or of
// another size than announced, never an op but sendmail, and every error
// carries one of sendmail's exit codes.
func FuzzSendmailRequest(f *testing.F) {
	f.Add([]byte(`{"op":"sendmail","from_header":true,"sender":"a@b.test","full_name":"A","rcpts":["x"],"size":3}` + "\nabc"))
	f.Add([]byte(`{"op":"sendmail","size":2000}` + "\n"))
	f.Add([]byte(`{"op":"user.add","addr":"x@y"}` + "\n"))
	f.Add([]byte("\n"))
	const limit = 1 << 10
	f.Fuzz(func(t *testing.T, in []byte) {
		req, msg, err := readSendmailRequest(bufio.NewReader(bytes.NewReader(in)), limit)
		if err != nil {
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != exUsage && ee.code != exDataErr && ee.code != exTempFail {
				t.Fatalf("error %v without a sendmail exit code", err)
			}
			return
		}
		if req.Op != "sendmail" || int64(len(msg)) != req.Size || len(msg) > limit {
			t.Fatalf("op %q, size %d, message of %d bytes", req.Op, req.Size, len(msg))
		}
	})
}

// TestListenSendmail: the socket is mode 0666 in a directory only its
// owner may write; a directory others may write, a missing one, a file in
// the way and a socket another server answers on are refused; a stale
// socket is replaced.
func TestListenSendmail(t *testing.T) {
	dir := openDir(t)
	path := filepath.Join(dir, "sendmail.sock")
	l, err := listenSendmail(path)
	if err != nil {
		t.Fatal(err)
	}
	wantMode(t, path, 0o666, -1, -1)
	if _, err := listenSendmail(path); err == nil || !strings.Contains(err.Error(), "another server answers there") {
		t.Errorf("a second listener on a live socket: %v", err)
	}
	// A killed server's socket: still there, nobody answers.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if l, err = listenSendmail(path); err != nil {
		t.Errorf("over a stale socket: %v", err)
	} else {
		l.Close()
	}

	shared := openDir(t)
	os.Chmod(shared, 0o777|os.ModeSticky)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct{ path, say string }{
		{filepath.Join(shared, "sendmail.sock"), "is writable by others"},
		{filepath.Join(dir, "missing", "sendmail.sock"), "RuntimeDirectory=minimail"},
		{file, "is not a socket"},
	} {
		if l, err := listenSendmail(tc.path); err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("%s: %v, want %q", tc.path, err, tc.say)
			if l != nil {
				l.Close()
			}
		}
	}
	if os.Geteuid() == 0 {
		other := openDir(t)
		os.Chown(other, 4242, 4242)
		if _, err := listenSendmail(filepath.Join(other, "s.sock")); err == nil || !strings.Contains(err.Error(), "belongs to uid 4242") {
			t.Errorf("a directory of another user: %v", err)
		}
	}
}

// TestSendmailSocketConfig: listen.sendmail is relative to the config
// file, and a path too long for a unix socket is refused naming the key.
func TestSendmailSocketConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ value, want, err string }{
		{"run/sendmail.sock", filepath.Join(dir, "run/sendmail.sock"), ""},
		{"/run/minimail/sendmail.sock", "/run/minimail/sendmail.sock", ""},
		{"/" + strings.Repeat("d", 110), "", "key listen.sendmail"},
	} {
		path := filepath.Join(dir, "minimail.toml")
		os.WriteFile(path, fmt.Appendf(nil, "hostname = \"mx.a.test\"\ndomains = [\"a.test\"]\ndata_dir = \"data\"\n[listen]\nsendmail = %q\n", tc.value), 0o600)
		cfg, err := loadConfig(path)
		switch {
		case tc.err == "" && (err != nil || cfg.Listen.Sendmail != tc.want):
			t.Errorf("%s: %v %v, want %s", tc.value, cfg, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want %q", tc.value, err, tc.err)
		}
	}
	t.Setenv("MINIMAIL_SENDMAIL_SOCKET", "")
	if got := userSendmailSocket(); got != "/run/minimail/sendmail.sock" {
		t.Errorf("default socket %s", got)
	}
	t.Setenv("MINIMAIL_SENDMAIL_SOCKET", "/srv/mail/s.sock")
	if got := userSendmailSocket(); got != "/srv/mail/s.sock" {
		t.Errorf("MINIMAIL_SENDMAIL_SOCKET: %s", got)
	}
}

// TestSendmailSocket_ConnectionsAtOnce: the socket serves maxSendmailConns
// connections at once (here 2); the next waits, unanswered, in the
// kernel's backlog until one of them ends, and is then served. Shutdown
// ends the held ones once its context does.
func TestSendmailSocket_ConnectionsAtOnce(t *testing.T) {
	cfg := &Config{Hostname: "mx.a.test", Domains: []string{"a.test"}, DataDir: t.TempDir()}
	cfg.Limits.MaxMessageBytes = 1000
	cfg.Limits.CommandTimeout.Duration = time.Hour
	submitted := make(chan mta.LocalMessage, 10)
	s := newSendmailSocket(cfg, func(m mta.LocalMessage) (string, error) { submitted <- m; return "ID1", nil }, slog.New(slog.DiscardHandler))
	s.slots = make(chan struct{}, 2)
	s.perUser = 100 // the test's connections are all one uid's
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := listenSendmail(path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	dial := func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	held := []net.Conn{dial(), dial()}
	third := dial()
	msg := "Subject: x\n\nx\n"
	third.Write(fmt.Appendf(nil, `{"op":"sendmail","rcpts":["alice"],"size":%d}`+"\n%s", len(msg), msg))
	// Nothing can answer it while both slots are held; a wrong server
	// would answer within this pause (a slow machine only hides it).
	third.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := third.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the third connection was answered while two were held: %d, %v", n, err)
	}
	held[0].Close()
	if rep := readReply(t, third); rep.Exit != exOK || rep.ID != "ID1" {
		t.Fatalf("the third connection: %+v", rep)
	}
	if m := <-submitted; m.From != m.User+"@mx.a.test" || m.UID != os.Getuid() || string(m.Message) != msg {
		t.Errorf("submitted %+v", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a connection held: %v", err)
	}
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve returned %v", err)
	}
	if _, err := held[1].Read(make([]byte, 1)); err == nil {
		t.Error("the held connection is still open after Shutdown")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Shutdown: %v", err)
	}
}

// TestServeRefusesAnUnsafeSendmailSocket: serve does not start with
// listen.sendmail in a directory others may write, and says which key.
func TestServeRefusesAnUnsafeSendmailSocket(t *testing.T) {
	sink := smtptest.Start(t, smtptest.Options{})
	a := sendmailSite(t, sink, "")
	a.stop(t)
	shared := openDir(t)
	os.Chmod(shared, 0o777|os.ModeSticky)
	a.cfg.Listen.Sendmail = filepath.Join(shared, "sendmail.sock")
	srv, err := startServer(a.cfg, slog.New(slog.DiscardHandler), nil)
	if err == nil {
		srv.stop(5 * time.Second)
		t.Fatal("serve started")
	}
	if !strings.Contains(err.Error(), "key listen.sendmail") || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("error %q names neither the key nor the reason", err)
	}
}
