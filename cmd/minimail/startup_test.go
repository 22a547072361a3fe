package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The errors of a first start, over the built binary: each names the file
// and key at fault, the process or account involved, and what to do.

// wantAll fails the test unless s holds every one of wants.
func wantAll(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}

// privilegedPort returns a loopback address with a port below the first
// unprivileged one that nobody listens on, binding it as root to find one.
func privilegedPort(t *testing.T) string {
	t.Helper()
	first := unprivilegedPortStart()
	for port := min(first, 1024) - 1; port > 0 && port > first-200; port-- {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return l.Addr().String()
		}
	}
	t.Skipf("no free port below net.ipv4.ip_unprivileged_port_start (%d): every port is unprivileged here", first)
	return ""
}

// serviceSite runs init as root in a directory others may enter, with
// --service-user svc, and returns the config path.
func serviceSite(t *testing.T, svc account) string {
	t.Helper()
	root := openDir(t)
	etc, data := filepath.Join(root, "etc"), filepath.Join(root, "data")
	if r := minimail(t, "", "init", "--domain", "example.test", "--hostname", "mx.example.test", "--dir", etc, "--data-dir", data, "--service-user", svc.name); r.code != 0 {
		t.Fatal(r.stderr)
	}
	return filepath.Join(etc, "minimail.toml")
}

func TestServeOnAPortBelow1024WithoutTheCapabilitySaysHowToGetIt(t *testing.T) {
	requireRoot(t)
	svc := newServiceUser(t)
	cfg := serviceSite(t, svc)
	addr := privilegedPort(t)
	setListen(t, cfg, map[string]string{"smtp": addr})
	r := runMinimail(t, runOptions{cred: svc.credential(), timeout: 20 * time.Second}, "--config", cfg, "serve")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
	}
	wantAll(t, "serve's error", r.stderr,
		cfg+": key listen.smtp: "+strconv.Quote(addr), "bind: permission denied",
		"need CAP_NET_BIND_SERVICE, which serve running as "+svc.name, "deploy/minimail.service", "run it as root")

	// As root, the same config binds.
	cmd, logs := startServe(t, cfg, 1)
	stopServing(t, cmd, logs)
}

func TestServeTwiceOnOneDataDirNamesTheServerThatRuns(t *testing.T) {
	cfg := initSite(t)
	setListen(t, cfg, map[string]string{"smtp": freePort(t)})
	first, _ := startServe(t, cfg, 1)
	holder := fmt.Sprintf("pid %d (minimail --config %s serve, user root) holds %s", first.Process.Pid, cfg,
		filepath.Join(filepath.Dir(cfg), "data", "minimail.db"))
	if os.Geteuid() != 0 {
		holder = fmt.Sprintf("pid %d (minimail --config %s serve, user ", first.Process.Pid, cfg)
	}

	// The same config: its first port is taken, by the server that holds
	// the data_dir.
	r := runMinimail(t, runOptions{timeout: 20 * time.Second}, "--config", cfg, "serve")
	if r.code != 1 {
		t.Fatalf("same config: exit %d, want 1: %s", r.code, r.stderr)
	}
	wantAll(t, "same config", r.stderr, cfg+": key listen.smtp", "address already in use", holder, "a server already runs on this data_dir")

	// Another config, other ports, the same data_dir.
	other := filepath.Join(filepath.Dir(cfg), "other.toml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, b, 0o600); err != nil {
		t.Fatal(err)
	}
	setListen(t, other, map[string]string{"smtp": freePort(t)})
	r = runMinimail(t, runOptions{timeout: 20 * time.Second}, "--config", other, "serve")
	if r.code != 1 {
		t.Fatalf("other ports: exit %d, want 1: %s", r.code, r.stderr)
	}
	wantAll(t, "other ports", r.stderr, "database is in use by another process", holder, "a server already runs on this data_dir")
}

func TestListenerInUseNamesTheConfigFileAndKey(t *testing.T) {
	cfg := initSite(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, port, _ := net.SplitHostPort(busy.Addr().String())
	setListen(t, cfg, map[string]string{"smtp": freePort(t), "pop3": busy.Addr().String()})
	r := runMinimail(t, runOptions{timeout: 20 * time.Second}, "--config", cfg, "serve")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
	}
	wantAll(t, "serve's error", r.stderr, fmt.Sprintf("%s: key listen.pop3: %q", cfg, busy.Addr().String()),
		"address already in use", "another program listens there (ss -ltnp 'sport = :"+port+"' names it)")
}

// TestCommandsAsAnAccountThatCannotReadNameTheOwner: an account that may
// not read the config, the DKIM key, the TLS key or the database is told
// who owns it and whom to run as.
func TestCommandsAsAnAccountThatCannotReadNameTheOwner(t *testing.T) {
	requireRoot(t)
	other := newServiceUser(t)
	dir := openDir(t)
	if r := minimail(t, "", "init", "--domain", "example.test", "--hostname", "mx.example.test", "--dir", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	cfg := filepath.Join(dir, "minimail.toml")
	setListen(t, cfg, map[string]string{"smtp": freePort(t)})
	os.Chmod(cfg, 0o600)
	as := func(args ...string) result {
		return runMinimail(t, runOptions{cred: other.credential(), timeout: 20 * time.Second}, append([]string{"--config", cfg}, args...)...)
	}
	account := fmt.Sprintf("this runs as %s (uid %d)", other.name, other.uid)

	r := as("user", "list")
	if r.code != 2 {
		t.Fatalf("unreadable config: exit %d, want 2: %s", r.code, r.stderr)
	}
	wantAll(t, "unreadable config", r.stderr, cfg+" is root:root, mode 0600, and "+account+": run it as root (sudo minimail ...)")

	os.Chmod(cfg, 0o644)
	for _, d := range []string{"tls", "dkim"} {
		os.Chmod(filepath.Join(dir, d), 0o755)
	}
	r = as("dns")
	if r.code != 2 {
		t.Fatalf("unreadable DKIM key: exit %d, want 2: %s", r.code, r.stderr)
	}
	wantAll(t, "dns", r.stderr, "key dkim.key", filepath.Join(dir, "dkim", "mail.key")+" is root:root, mode 0600, and "+account)

	r = as("serve")
	if r.code != 2 {
		t.Fatalf("unreadable TLS key: exit %d, want 2: %s", r.code, r.stderr)
	}
	wantAll(t, "serve", r.stderr, "key tls.key", filepath.Join(dir, "tls", "key.pem")+" is root:root, mode 0600, and "+account+", which cannot read it")

	// data_dir is root's (init ran as root without --service-user): the
	// hint is root alone, not "root or root".
	r = as("user", "list")
	if r.code != 1 || strings.Contains(r.stderr, "as root or as root") {
		t.Fatalf("data_dir of root: exit %d, want 1: %s", r.code, r.stderr)
	}
	wantAll(t, "user list", r.stderr, "run admin commands as root, the owner of "+filepath.Join(dir, "data")+" (sudo minimail ...)")
	r = as("compact")
	if r.code != 1 {
		t.Fatalf("compact: exit %d, want 1: %s", r.code, r.stderr)
	}
	wantAll(t, "compact", r.stderr, "permission denied: run admin commands as root, the owner of "+filepath.Join(dir, "data"))
}

// TestServeAsAnAccountThatCannotOpenTheDatabaseSaysWhoOwnsIt: serve run by
// hand as the wrong account (not the unit's User=) is told who owns
// data_dir.
func TestServeAsAnAccountThatCannotOpenTheDatabaseSaysWhoOwnsIt(t *testing.T) {
	requireRoot(t)
	svc, other := newServiceUser(t), newServiceUser(t)
	cfg := serviceSite(t, svc)
	etc := filepath.Dir(cfg)
	for _, p := range []string{"", "tls", "dkim"} {
		os.Chmod(filepath.Join(etc, p), 0o755)
	}
	for _, p := range []string{"minimail.toml", "tls/key.pem", "dkim/mail.key"} {
		os.Chmod(filepath.Join(etc, p), 0o644)
	}
	setListen(t, cfg, map[string]string{"smtp": freePort(t)})
	r := runMinimail(t, runOptions{cred: other.credential(), timeout: 20 * time.Second}, "--config", cfg, "serve")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
	}
	data := filepath.Join(filepath.Dir(etc), "data")
	wantAll(t, "serve", r.stderr, "permission denied", data+" is "+svc.name+":"+svc.name+", mode 0700, and this runs as "+other.name,
		"run serve as "+svc.name+", the owner of data_dir")
}

func TestLockHolderNamesTheProcessHoldingAFlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "minimail.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := lockHolder(path); got != "" {
		t.Fatalf("unlocked file: %q", got)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/locks"); err != nil {
		t.Skip("no /proc/locks")
	}
	want := fmt.Sprintf("pid %d (", os.Getpid())
	if got := lockHolder(path); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, ") holds "+path) {
		t.Errorf("lockHolder = %q, want %q... holds %s", got, want, path)
	}
}

func TestLockingPIDReadsProcLocks(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  WRITE 77 08:01:1234 0 EOF
2: FLOCK  ADVISORY  WRITE 9687 fe:00:9977893 0 EOF
2: -> FLOCK  ADVISORY  WRITE 10534 fe:00:9977893 0 EOF
3: OFDLCK ADVISORY  READ  -1 fe:00:555 0 EOF
`
	dev := uint64(0xfe00) // major 0xfe, minor 0
	tests := []struct {
		name    string
		dev     uint64
		ino     uint64
		wantPID int
		wantOK  bool
	}{
		{"the holder, not the waiter", dev, 9977893, 9687, true},
		{"another device", 0x801, 9977893, 0, false},
		{"a POSIX lock on another device", 0x801, 1234, 77, true},
		{"an open file description lock, no pid", dev, 555, -1, true},
		{"no lock", dev, 42, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pid, ok := lockingPID([]byte(locks), tc.dev, tc.ino)
			if pid != tc.wantPID || ok != tc.wantOK {
				t.Errorf("lockingPID = %d %v, want %d %v", pid, ok, tc.wantPID, tc.wantOK)
			}
		})
	}
}

// FuzzLockingPID: any /proc/locks text gives a pid or nothing, never a
// panic, and a pid only from a line that names the file.
func FuzzLockingPID(f *testing.F) {
	f.Add([]byte("2: FLOCK  ADVISORY  WRITE 9687 fe:00:9977893 0 EOF\n"), uint64(0xfe00), uint64(9977893))
	f.Add([]byte("2: -> FLOCK  ADVISORY  WRITE 10534 fe:00:9977893 0 EOF\n"), uint64(0xfe00), uint64(9977893))
	f.Fuzz(func(t *testing.T, locks []byte, dev, ino uint64) {
		if _, ok := lockingPID(locks, dev, ino); ok && !strings.Contains(string(locks), ":"+strconv.FormatUint(ino, 10)) {
			t.Fatalf("a pid for inode %d from %q", ino, locks)
		}
	})
}
