package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"minimail/store"
)

// binary is the minimail command built once for the CLI tests, so they
// exercise exactly what users run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "minimail-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Others may run it: some tests run it as a service user.
	os.Chmod(dir, 0o755)
	binary = filepath.Join(dir, "minimail")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building minimail:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// minimail runs the binary with stdin and returns its exit code and output.
func minimail(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runMinimail(t, runOptions{stdin: stdin}, args...)
}

type runOptions struct {
	stdin   string
	cred    *syscall.Credential // nil: as the test runs
	timeout time.Duration       // 0: none; else minimail still running then fails the test
	env     []string            // added to the test's environment
}

func runMinimail(t *testing.T, o runOptions, args ...string) result {
	t.Helper()
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if o.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
	}
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdin = strings.NewReader(o.stdin)
	cmd.Env = append(append(os.Environ(), "MINIMAIL_CONFIG="), o.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("minimail %v still ran after %v: %s", args, o.timeout, errb.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run minimail: %v", err)
	}
	return result{code, out.String(), errb.String()}
}

// initSite runs `minimail init` in a fresh directory and returns the config
// path.
func initSite(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	r := minimail(t, "", "init", "--domain", "example.test", "--hostname", "mx.example.test", "--dir", dir)
	if r.code != 0 {
		t.Fatalf("init: exit %d: %s", r.code, r.stderr)
	}
	return filepath.Join(dir, "minimail.toml")
}

func TestInitWritesAWorkingSetupAndPrintsDNSRecords(t *testing.T) {
	dir := t.TempDir()
	r := minimail(t, "", "init", "--domain", "example.test", "--hostname", "mx.example.test", "--dir", dir)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"IN MX", "v=spf1", "mail._domainkey.example.test.", "_dmarc.example.test."} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("init output lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, f := range []string{"minimail.toml", "tls/cert.pem", "tls/key.pem", "dkim/mail.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("init did not write %s: %v", f, err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "tls/key.pem")); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("tls key mode = %v, want 0600", st.Mode().Perm())
	}
	// The config it wrote loads, and `dns` prints the same records.
	cfg := filepath.Join(dir, "minimail.toml")
	d := minimail(t, "", "--config", cfg, "dns")
	if d.code != 0 || !strings.Contains(d.stdout, "mail._domainkey.example.test.") {
		t.Fatalf("dns: exit %d: %s%s", d.code, d.stdout, d.stderr)
	}

	// A second init never overwrites.
	before, _ := os.ReadFile(cfg)
	again := minimail(t, "", "init", "--domain", "other.test", "--hostname", "mx.other.test", "--dir", dir)
	if again.code != 1 || !strings.Contains(again.stderr, "already exists") {
		t.Fatalf("second init: exit %d, %s", again.code, again.stderr)
	}
	after, _ := os.ReadFile(cfg)
	if !bytes.Equal(before, after) {
		t.Fatal("second init changed the config")
	}
}

func TestUserCommands(t *testing.T) {
	cfg := initSite(t)
	steps := []struct {
		name, stdin string
		args        []string
		code        int
		out         string // expected in stdout (code 0) or stderr
	}{
		{"add with flag", "", []string{"user", "add", "--password", "correct horse", "Alice@Example.TEST"}, 0, "created Alice@example.test"},
		{"add from stdin", "battery staple\n", []string{"user", "add", "bob@example.test"}, 0, "created bob@example.test"},
		{"duplicate, other case", "", []string{"user", "add", "--password", "long enough pw", "alice@example.test"}, 1, "already exists"},
		{"no @", "", []string{"user", "add", "--password", "long enough pw", "alice"}, 2, "local@domain"},
		{"foreign domain", "", []string{"user", "add", "--password", "long enough pw", "eve@other.test"}, 2, "not in domains"},
		{"empty password", "\n", []string{"user", "add", "carol@example.test"}, 2, "empty password"},
		{"missing argument", "", []string{"user", "add"}, 2, "ADDR"},
		{"unknown flag", "", []string{"user", "add", "--pw", "x", "dan@example.test"}, 2, "pw"},
		{"passwd", "", []string{"user", "passwd", "--password", "new passphrase", "alice@example.test"}, 0, "password changed"},
		{"passwd unknown", "", []string{"user", "passwd", "--password", "new passphrase", "zed@example.test"}, 1, "no such user"},
		{"list", "", []string{"user", "list"}, 0, "Alice@example.test"},
		{"del", "", []string{"user", "del", "bob@example.test"}, 0, "deleted"},
		{"del again", "", []string{"user", "del", "bob@example.test"}, 1, "no such user"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := minimail(t, s.stdin, append([]string{"--config", cfg}, s.args...)...)
			if r.code != s.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, s.code, r.stdout, r.stderr)
			}
			got := r.stdout
			if s.code != 0 {
				got = r.stderr
			}
			if !strings.Contains(got, s.out) {
				t.Errorf("output %q lacks %q", got, s.out)
			}
		})
	}
	r := minimail(t, "", "--config", cfg, "user", "list")
	if strings.Contains(r.stdout, "bob@") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("after del, list = %q", r.stdout)
	}
}

func TestBadConfigAndDataDir(t *testing.T) {
	t.Run("unknown key names file and key, exit 2", func(t *testing.T) {
		p := writeConfig(t, minimalConfig+"[limits]\nmax_mesage_bytes = 5\n")
		r := minimail(t, "", "--config", p, "user", "list")
		if r.code != 2 || !strings.Contains(r.stderr, p) || !strings.Contains(r.stderr, "limits.max_mesage_bytes") {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
	t.Run("config from MINIMAIL_CONFIG", func(t *testing.T) {
		cfg := initSite(t)
		cmd := exec.Command(binary, "user", "list")
		cmd.Env = append(os.Environ(), "MINIMAIL_CONFIG="+cfg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	})
	t.Run("missing data_dir, exit 1", func(t *testing.T) {
		p := writeConfig(t, strings.Replace(minimalConfig, `"data"`, `"nowhere"`, 1))
		r := minimail(t, "", "--config", p, "user", "list")
		if r.code != 1 || !strings.Contains(r.stderr, "nowhere") {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
	t.Run("unwritable data_dir, exit 1", func(t *testing.T) {
		// A directory nobody, root included, can create files in.
		p := writeConfig(t, strings.Replace(minimalConfig, `"data"`, `"/proc/self/fdinfo"`, 1))
		r := minimail(t, "", "--config", p, "user", "add", "--password", "long enough pw", "a@example.org")
		if r.code != 1 || !strings.Contains(r.stderr, "/proc/self/fdinfo") {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
	t.Run("foreign database file left untouched, exit 1", func(t *testing.T) {
		p := writeConfig(t, minimalConfig)
		data := filepath.Join(filepath.Dir(p), "data")
		os.Mkdir(data, 0o700)
		junk := bytes.Repeat([]byte("not a database "), 1000)
		db := filepath.Join(data, "minimail.db")
		os.WriteFile(db, junk, 0o600)
		r := minimail(t, "", "--config", p, "user", "add", "--password", "long enough pw", "a@example.org")
		if r.code != 1 || !strings.Contains(r.stderr, "minimail.db") {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if got, _ := os.ReadFile(db); !bytes.Equal(got, junk) {
			t.Fatal("the foreign file was modified")
		}
	})
	t.Run("unknown subcommand, exit 2", func(t *testing.T) {
		if r := minimail(t, "", "user", "frobnicate"); r.code != 2 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
	t.Run("unknown command, exit 2", func(t *testing.T) {
		r := minimail(t, "", "frobnicate")
		if r.code != 2 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
}

// freePort returns a loopback address nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// setListen rewrites the [listen] section of an init config.
func setListen(t *testing.T, cfg string, listen map[string]string) {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, key := range []string{"smtp", "submission", "submissions", "pop3", "pop3s", "https", "metrics", "sendmail"} {
		re := regexp.MustCompile(`(?m)^` + key + ` +=.*$`)
		s = re.ReplaceAllString(s, fmt.Sprintf("%s = %q", key, listen[key]))
	}
	if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startServe runs `minimail serve` and waits until it logs every listener.
func startServe(t *testing.T, cfg string, listeners int) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(binary, "--config", cfg, "serve")
	return cmd, startServing(t, cmd, listeners)
}

// startServing starts cmd (a `minimail serve`) and waits until it logs
// every listener.
func startServing(t *testing.T, cmd *exec.Cmd, listeners int) *syncBuffer {
	t.Helper()
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(logs.String(), "msg=listening") < listeners {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return logs
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestServeAdminCommandsWhileRunningAndCleanStop(t *testing.T) {
	cfg := initSite(t)
	setListen(t, cfg, map[string]string{"smtp": freePort(t), "pop3": freePort(t)})
	cmd, _ := startServe(t, cfg, 2)

	// The server holds the database; admin commands go through the control
	// socket and must neither hang nor fail.
	for _, args := range [][]string{
		{"user", "add", "--password", "a long passphrase", "alice@example.test"},
		{"user", "list"},
		{"queue", "list"},
		{"backup", filepath.Join(t.TempDir(), "copy.db")},
	} {
		r := minimail(t, "", append([]string{"--config", cfg}, args...)...)
		if r.code != 0 {
			t.Fatalf("%v while serving: exit %d: %s", args, r.code, r.stderr)
		}
	}
	if r := minimail(t, "", "--config", cfg, "user", "list"); !strings.Contains(r.stdout, "alice@example.test") {
		t.Fatalf("user list while serving: %q", r.stdout)
	}

	cmd.Process.Signal(os.Interrupt)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGINT, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after SIGINT")
	}
	// Stopped: the commands open the store directly again.
	if r := minimail(t, "", "--config", cfg, "user", "list"); r.code != 0 || !strings.Contains(r.stdout, "alice@") {
		t.Fatalf("user list after stop: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
}

func TestServeListenerInUseNamesKeyAndStopsEverything(t *testing.T) {
	cfg := initSite(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	setListen(t, cfg, map[string]string{"smtp": freePort(t), "pop3": busy.Addr().String()})
	done := make(chan result, 1)
	go func() { done <- minimail(t, "", "--config", cfg, "serve") }()
	select {
	case r := <-done:
		if r.code != 1 || !strings.Contains(r.stderr, "listen.pop3") || !strings.Contains(r.stderr, busy.Addr().String()) {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve kept running with a listener that could not bind")
	}
	// Nothing stayed open: the store opens directly.
	if r := minimail(t, "", "--config", cfg, "user", "list"); r.code != 0 {
		t.Fatalf("store still locked: %s", r.stderr)
	}
}

func TestDemo(t *testing.T) {
	r := minimail(t, "", "demo")
	if r.code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"== 1.", "== 2.", "== 3.", "== 4.", "== 5.",
		"C: STARTTLS", "S: 220", "AUTH PLAIN **** (secret masked)", "C: MAIL FROM:<bob@gmail.test>",
		"S: 250", "C: STLS", "PASS **** (secret masked)", "C: RETR 1", "C: DELE 1",
		"byte-exact", "dkim=pass", "spf=pass", "dmarc=pass",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo transcript lacks %q", want)
		}
	}
	if strings.Contains(r.stdout, demoPassword) {
		t.Error("demo transcript shows the password")
	}
	if strings.Contains(r.stdout, "kept the demo's files") {
		t.Error("demo without --keep says it kept its files")
	}
	if t.Failed() {
		t.Log(r.stdout)
	}
}

func TestQueueCommands(t *testing.T) {
	cfg := initSite(t)
	dataDir := filepath.Join(filepath.Dir(cfg), "data")
	st, err := openStoreForTest(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	var ids []uint64
	for _, rcpt := range []string{"x@far.test", "y@far.test"} {
		id, err := st.EnqueueMessage(store.QueueEntry{
			From:        "bob@example.test",
			Rcpts:       []store.QueueRcpt{{Addr: rcpt, State: store.RcptPending}},
			Created:     time.Now(),
			NextAttempt: later,
			Attempts:    2,
			LastError:   "451 4.3.0 try later",
		}, []byte("Subject: x\r\n\r\nx\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	st.Close()

	r := minimail(t, "", "--config", cfg, "queue", "list")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") {
		t.Fatalf("queue list: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
	lines = lines[1:]
	for i, want := range []string{"bob@example.test", "x@far.test", "2", "451 4.3.0 try later"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line %q lacks field %d %q", lines[0], i, want)
		}
	}
	if f := strings.Fields(lines[0]); f[0] != fmt.Sprint(ids[0]) {
		t.Errorf("line %q does not start with the id %d", lines[0], ids[0])
	}

	if r := minimail(t, "", "--config", cfg, "queue", "drop", fmt.Sprint(ids[0])); r.code != 0 {
		t.Fatalf("queue drop: exit %d %s", r.code, r.stderr)
	}
	if r := minimail(t, "", "--config", cfg, "queue", "drop", "999999"); r.code != 1 {
		t.Fatalf("drop of an unknown id: exit %d, want 1", r.code)
	}
	if r := minimail(t, "", "--config", cfg, "queue", "drop", "not-an-id"); r.code == 0 {
		t.Fatalf("drop of a malformed id succeeded")
	}
	if r := minimail(t, "", "--config", cfg, "queue", "flush"); r.code != 0 {
		t.Fatalf("queue flush: exit %d %s", r.code, r.stderr)
	}

	st, err = openStoreForTest(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	entries, err := st.QueueEntries()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].ID != ids[1] {
		t.Fatalf("after drop: %+v", entries)
	}
	if !entries[0].NextAttempt.Before(later) {
		t.Fatalf("flush left the next attempt at %v", entries[0].NextAttempt)
	}
}

func TestDemoKeep(t *testing.T) {
	r := minimail(t, "", "demo", "--keep")
	if r.code != 0 {
		t.Fatalf("demo --keep: exit %d\n%s", r.code, r.stderr)
	}
	m := regexp.MustCompile(`kept the demo's files in (\S+)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("demo --keep does not say where the files are:\n%s", r.stdout)
	}
	defer os.RemoveAll(m[1])
	for _, f := range []string{"bob/minimail.toml", "alice/minimail.toml", "alice/data/minimail.db"} {
		if _, err := os.Stat(filepath.Join(m[1], f)); err != nil {
			t.Errorf("kept dir lacks %s: %v", f, err)
		}
	}
	// The kept config works with the admin commands.
	u := minimail(t, "", "--config", filepath.Join(m[1], "alice/minimail.toml"), "user", "list")
	if u.code != 0 || !strings.Contains(u.stdout, "alice@yahoo.test") {
		t.Fatalf("user list on the kept data: exit %d %s %s", u.code, u.stdout, u.stderr)
	}
}

// TestConfigLimitsReachTheListeners: the [limits] keys are not only parsed
// but enforced by the servers `serve` starts.
func TestConfigLimitsReachTheListeners(t *testing.T) {
	cfg := initSite(t)
	smtpAddr, pop3Addr := freePort(t), freePort(t)
	setListen(t, cfg, map[string]string{"smtp": smtpAddr, "pop3": pop3Addr})
	appendConfig(t, cfg, "", "max_message_bytes = 26214400\nmax_recipients    = 100\n",
		"max_message_bytes = 2000\nmax_recipients = 2\nmax_connections_per_ip = 1\nmax_header_bytes = 1200\n")
	if r := minimail(t, "", "--config", cfg, "user", "add", "--password", "a long passphrase", "alice@example.test"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	startServe(t, cfg, 2)

	first := rawDial(t, smtpAddr)
	reply := func(c *bufio.ReadWriter, cmd string) string {
		t.Helper()
		if cmd != "" {
			c.WriteString(cmd + "\r\n")
			c.Flush()
		}
		var last string
		for {
			line, err := c.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", cmd, err)
			}
			last = line
			if len(line) < 4 || line[3] != '-' {
				return strings.TrimSpace(last)
			}
		}
	}
	reply(first, "")
	reply(first, "EHLO client.test")
	if got := reply(first, "MAIL FROM:<x@other.test> SIZE=5000"); !strings.HasPrefix(got, "552 5.3.4") {
		t.Errorf("SIZE over limits.max_message_bytes: %q", got)
	}
	reply(first, "MAIL FROM:<x@other.test>")
	reply(first, "RCPT TO:<alice@example.test>")
	reply(first, "RCPT TO:<alice@example.test>")
	if got := reply(first, "RCPT TO:<alice@example.test>"); !strings.HasPrefix(got, "452 4.5.3") {
		t.Errorf("third recipient over limits.max_recipients = 2: %q", got)
	}
	reply(first, "DATA")
	header := "Subject: x\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 91)+"\r\n", 13)
	if got := reply(first, header+"\r\nbody\r\n."); !strings.HasPrefix(got, "552 5.3.4 message header exceeds 1200 bytes") {
		t.Errorf("header over limits.max_header_bytes = 1200: %q", got)
	}
	if got := reply(rawDial(t, smtpAddr), ""); !strings.HasPrefix(got, "421 4.7.0") {
		t.Errorf("second SMTP connection over limits.max_connections_per_ip = 1: %q", got)
	}

	p1 := rawDial(t, pop3Addr)
	if line, _ := p1.ReadString('\n'); !strings.HasPrefix(line, "+OK") {
		t.Fatalf("pop3 greeting %q", line)
	}
	if line, _ := rawDial(t, pop3Addr).ReadString('\n'); !strings.HasPrefix(line, "-ERR [SYS/TEMP]") {
		t.Errorf("second POP3 connection over limits.max_connections_per_ip = 1: %q", line)
	}
}

func rawDial(t *testing.T, addr string) *bufio.ReadWriter {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
}
