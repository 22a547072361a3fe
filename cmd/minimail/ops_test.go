package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The operator's first day, over the built binary: README's recipe for
// systemd and for the container, backups, and restore.

// requireRoot skips a test that needs root (to create a service user or a
// mount namespace), unless MINIMAIL_REQUIRE_CLIENTS says it must run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
		t.Fatal("this test needs root (it creates a system user), and MINIMAIL_REQUIRE_CLIENTS is set")
	}
	t.Skip("needs root: it creates a system user")
}

type account struct {
	name     string
	uid, gid int
}

func (a account) credential() *syscall.Credential {
	return &syscall.Credential{Uid: uint32(a.uid), Gid: uint32(a.gid)}
}

// newServiceUser creates a throwaway system user, as README's
// `useradd --system --user-group ... minimail` does, and removes it after
// the test.
func newServiceUser(t *testing.T) account {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "mmtest" + hex.EncodeToString(b)
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return account{name, uid, gid}
}

// openDir returns a fresh directory others may enter, as /etc and /var/lib
// are (t.TempDir's are mode 0700).
func openDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// minimailAs runs the binary as another account.
func minimailAs(t *testing.T, cred *syscall.Credential, stdin string, args ...string) result {
	t.Helper()
	return runMinimail(t, runOptions{stdin: stdin, cred: cred}, args...)
}

// stopServing sends SIGTERM, as systemctl stop and docker stop do, and
// wants exit 0.
func stopServing(t *testing.T, cmd *exec.Cmd, logs *syncBuffer) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM, want 0: %s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
}

func serveAs(cfg string, cred *syscall.Credential) *exec.Cmd {
	cmd := exec.Command(binary, "--config", cfg, "serve")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return cmd
}

// wantMode checks path's permission bits and, when uid or gid is not -1,
// its owner.
func wantMode(t *testing.T, path string, mode fs.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != mode || uid != -1 && int(st.Uid) != uid || gid != -1 && int(st.Gid) != gid {
		t.Errorf("%s: mode %o owner %d:%d, want mode %o owner %d:%d", path, fi.Mode().Perm(), st.Uid, st.Gid, mode, uid, gid)
	}
}

// TestRecipeSystemdInOrder follows README's "Run it for your domain" for
// systemd as written: init as root with the service user, users added as
// root before the server ever ran, then serve as the unit runs it (User=
// the service user), admin commands as root and as the service user while
// it runs, a backup, a restart.
func TestRecipeSystemdInOrder(t *testing.T) {
	requireRoot(t)
	svc := newServiceUser(t)
	root := openDir(t)
	etc, data := filepath.Join(root, "etc/minimail"), filepath.Join(root, "var/lib/minimail")
	for _, d := range []string{"etc", "var/lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	r := minimail(t, "", "init", "--domain", "example.test", "--hostname", "mx.example.test",
		"--dir", etc, "--data-dir", data, "--service-user", svc.name)
	if r.code != 0 {
		t.Fatalf("init: exit %d: %s", r.code, r.stderr)
	}
	for _, f := range []struct {
		path string
		mode fs.FileMode
	}{
		{"", 0o750}, {"tls", 0o750}, {"dkim", 0o750},
		{"minimail.toml", 0o640}, {"tls/key.pem", 0o640}, {"dkim/mail.key", 0o640}, {"tls/cert.pem", 0o644},
	} {
		wantMode(t, filepath.Join(etc, f.path), f.mode, 0, svc.gid)
	}
	wantMode(t, data, 0o700, svc.uid, svc.gid)
	if _, err := os.Stat(filepath.Join(etc, "data")); err == nil {
		t.Error("init made an unused data/ beside the config although --data-dir points elsewhere")
	}
	cfg := filepath.Join(etc, "minimail.toml")
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), fmt.Sprintf("data_dir = %q", data)) {
		t.Errorf("config does not set data_dir = %q:\n%s", data, b)
	}
	setListen(t, cfg, map[string]string{"smtp": freePort(t), "pop3": freePort(t)})

	// Users first, as root, before the server ever started: the database
	// this creates must be one the service can open.
	if r := minimail(t, "postmaster passphrase\n", "--config", cfg, "user", "add", "postmaster@example.test"); r.code != 0 {
		t.Fatalf("user add as root, server never started: exit %d: %s", r.code, r.stderr)
	}
	wantMode(t, filepath.Join(data, "minimail.db"), 0o600, svc.uid, svc.gid)

	serve := serveAs(cfg, svc.credential())
	logs := startServing(t, serve, 2)
	if r := minimail(t, "you passphrase\n", "--config", cfg, "user", "add", "you@example.test"); r.code != 0 {
		t.Fatalf("user add as root while serving: exit %d: %s", r.code, r.stderr)
	}
	if r := minimailAs(t, svc.credential(), "", "--config", cfg, "user", "list"); r.code != 0 ||
		!strings.Contains(r.stdout, "postmaster@example.test") || !strings.Contains(r.stdout, "you@example.test") {
		t.Fatalf("user list as %s while serving: exit %d: %s%s", svc.name, r.code, r.stdout, r.stderr)
	}
	backups := t.TempDir() // root's alone: the server could not write here
	copyPath := filepath.Join(backups, "minimail-backup.db")
	if r := minimail(t, "", "--config", cfg, "backup", copyPath); r.code != 0 {
		t.Fatalf("backup as root while serving: exit %d: %s", r.code, r.stderr)
	}
	wantMode(t, copyPath, 0o600, 0, -1)
	stopServing(t, serve, logs)

	// Stopped: root's admin commands open the store themselves and leave
	// it the service's.
	if r := minimail(t, "", "--config", cfg, "user", "del", "you@example.test"); r.code != 0 {
		t.Fatalf("user del as root, server stopped: exit %d: %s", r.code, r.stderr)
	}
	wantMode(t, filepath.Join(data, "minimail.db"), 0o600, svc.uid, svc.gid)
	serve = serveAs(cfg, svc.credential())
	logs = startServing(t, serve, 2)
	stopServing(t, serve, logs)
}

// TestRootAdminCommandHandsBackADatabaseItLeftRoots: a minimail.db that
// an earlier admin command as root left root:root (so `serve` as the
// service user failed with permission denied) is given back to the owner
// of data_dir by the next admin command run as root.
func TestRootAdminCommandHandsBackADatabaseItLeftRoots(t *testing.T) {
	requireRoot(t)
	svc := newServiceUser(t)
	cfg := initSite(t)
	data := filepath.Join(filepath.Dir(cfg), "data")
	if r := minimail(t, "", "--config", cfg, "user", "list"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	os.Chown(data, svc.uid, svc.gid)
	os.Chown(filepath.Join(data, "minimail.db"), 0, 0)
	if r := minimail(t, "", "--config", cfg, "user", "list"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	wantMode(t, filepath.Join(data, "minimail.db"), 0o600, svc.uid, svc.gid)
}

// TestAdminCommandAsAnotherUserSaysWhomToRunAs: someone who is neither
// root nor the owner of data_dir is told to use sudo -u OWNER.
func TestAdminCommandAsAnotherUserSaysWhomToRunAs(t *testing.T) {
	requireRoot(t)
	svc, other := newServiceUser(t), newServiceUser(t)
	root := openDir(t)
	etc, data := filepath.Join(root, "etc"), filepath.Join(root, "data")
	if r := minimail(t, "", "init", "--domain", "example.test", "--hostname", "mx.example.test", "--dir", etc, "--data-dir", data, "--service-user", svc.name); r.code != 0 {
		t.Fatal(r.stderr)
	}
	cfg := filepath.Join(etc, "minimail.toml")
	os.Chmod(etc, 0o755) // let the other user read the config, not the data
	os.Chmod(cfg, 0o644)
	want := "sudo -u " + svc.name + " minimail"
	r := minimailAs(t, other.credential(), "", "--config", cfg, "user", "list")
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("server stopped: exit %d: %s; want exit 1 and %q", r.code, r.stderr, want)
	}
	setListen(t, cfg, map[string]string{"smtp": freePort(t)})
	serve := serveAs(cfg, svc.credential())
	startServing(t, serve, 1)
	r = minimailAs(t, other.credential(), "", "--config", cfg, "user", "list")
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("server running: exit %d: %s; want exit 1 and %q", r.code, r.stderr, want)
	}
}

// TestRecipeContainerLayout: README's Docker route writes ./config with
// init (uid 65532 is the image's user and need not exist on the host); the
// operator keeps owning ./config, and uid 65532 reads it and serves.
func TestRecipeContainerLayout(t *testing.T) {
	requireRoot(t)
	const operator, image = 4242, 65532
	root := openDir(t)
	config, data := filepath.Join(root, "config"), filepath.Join(root, "volume")
	os.Mkdir(config, 0o755)
	os.Chown(config, operator, operator)
	os.Mkdir(data, 0o700) // the named volume, as the image makes it
	os.Chown(data, image, image)
	r := minimail(t, "", "init", "--domain", "example.test", "--hostname", "mx.example.test",
		"--dir", config, "--data-dir", data, "--service-user", "65532:65532")
	if r.code != 0 {
		t.Fatalf("init: exit %d: %s", r.code, r.stderr)
	}
	for _, f := range []string{"minimail.toml", "tls/key.pem", "dkim/mail.key"} {
		wantMode(t, filepath.Join(config, f), 0o640, operator, image)
	}
	wantMode(t, data, 0o700, image, image)
	cfg := filepath.Join(config, "minimail.toml")
	setListen(t, cfg, map[string]string{"smtp": freePort(t), "submissions": freePort(t)})
	cred := &syscall.Credential{Uid: image, Gid: image}
	if r := minimailAs(t, cred, "", "--config", cfg, "dns"); r.code != 0 || !strings.Contains(r.stdout, "mail._domainkey") {
		t.Fatalf("dns as uid %d: exit %d: %s", image, r.code, r.stderr)
	}
	serve := serveAs(cfg, cred)
	logs := startServing(t, serve, 2)
	if r := minimailAs(t, cred, "a long passphrase\n", "--config", cfg, "user", "add", "you@example.test"); r.code != 0 {
		t.Fatalf("user add as uid %d (docker compose exec): exit %d: %s", image, r.code, r.stderr)
	}
	stopServing(t, serve, logs)
}

// TestBackupLandsWhereTheAdminAsked: the server runs with a /tmp of its
// own, as under the unit's PrivateTmp=yes (a mount namespace with a tmpfs
// over the directory); `minimail backup DIR/FILE` still writes the copy
// where the admin sees it, never overwrites, and leaves no temporary file.
func TestBackupLandsWhereTheAdminAsked(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare(1)")
	}
	cfg := initSite(t)
	setListen(t, cfg, map[string]string{"smtp": freePort(t)})
	if r := minimail(t, "a long passphrase\n", "--config", cfg, "user", "add", "alice@example.test"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	target := t.TempDir()
	serve := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs tmpfs "$1" && exec "$2" --config "$3" serve`, "sh", target, binary, cfg)
	startServing(t, serve, 1)

	path := filepath.Join(target, "b.db")
	r := minimail(t, "", "--config", cfg, "backup", path)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "backup written to "+path) {
		t.Fatalf("backup: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	restored := t.TempDir()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the backup it reported is not there: %v", err)
	}
	os.WriteFile(filepath.Join(restored, "minimail.db"), raw, 0o600)
	st, err := openStoreForTest(restored)
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	users, _ := st.Users()
	st.Close()
	if len(users) != 1 || users[0].Address != "alice@example.test" {
		t.Fatalf("users in the backup: %+v", users)
	}

	r = minimail(t, "", "--config", cfg, "backup", path)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("backup onto an existing file: exit %d: %s", r.code, r.stderr)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, raw) {
		t.Fatal("a refused backup changed the existing file")
	}
	r = minimail(t, "", "--config", cfg, "backup", filepath.Join(target, "no/such/dir/b.db"))
	if r.code != 1 || strings.Contains(r.stdout, "written") {
		t.Fatalf("backup into a missing directory: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	entries, _ := os.ReadDir(target)
	if len(entries) != 1 {
		t.Fatalf("%s holds %v, want only b.db", target, entries)
	}
}

// uidls logs in over plain POP3 and returns the UIDLs in message order.
func uidls(t *testing.T, addr, user, password string) []string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	p := newPOP3Client(conn)
	for _, cmd := range []string{"", "USER " + user, "PASS " + password} {
		if _, err := p.ok(cmd); err != nil {
			t.Fatal(err)
		}
	}
	listing, err := p.multi("UIDL")
	if err != nil {
		t.Fatal(err)
	}
	p.ok("QUIT")
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(listing)), "\r\n") {
		if _, uidl, ok := strings.Cut(line, " "); ok {
			out = append(out, uidl)
		}
	}
	return out
}

// TestRestoreStopCopyStart: README's restore, `stop; cp; start`, with what
// a POP3 client that leaves mail on the server sees: the messages in the
// backup keep their UIDLs, mail that arrived after the backup is gone, and
// new mail gets UIDLs never seen before.
func TestRestoreStopCopyStart(t *testing.T) {
	cfg := initSite(t)
	smtpAddr, pop3Addr := freePort(t), freePort(t)
	setListen(t, cfg, map[string]string{"smtp": smtpAddr, "pop3": pop3Addr})
	appendConfig(t, cfg, "", "allow_insecure_auth = false\n", "allow_insecure_auth = true\n")
	const alice, pw = "alice@example.test", "a long passphrase"
	if r := minimail(t, pw+"\n", "--config", cfg, "user", "add", alice); r.code != 0 {
		t.Fatal(r.stderr)
	}
	send := func(subjects ...string) {
		t.Helper()
		for _, s := range subjects {
			c, err := smtp.Dial(smtpAddr)
			if err != nil {
				t.Fatal(err)
			}
			err = c.SendMail("x@other.test", []string{alice}, bytes.NewReader(testMessage("x@other.test", alice, s, "x\r\n")))
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	serve := exec.Command(binary, "--config", cfg, "serve")
	logs := startServing(t, serve, 2)
	send("one", "two")
	kept := uidls(t, pop3Addr, alice, pw)
	backup := filepath.Join(t.TempDir(), "backup.db")
	if r := minimail(t, "", "--config", cfg, "backup", backup); r.code != 0 {
		t.Fatal(r.stderr)
	}
	send("three")
	beforeRestore := uidls(t, pop3Addr, alice, pw)
	if len(kept) != 2 || len(beforeRestore) != 3 {
		t.Fatalf("UIDLs %q then %q", kept, beforeRestore)
	}
	stopServing(t, serve, logs)

	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(cfg), "data", "minimail.db"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	serve = exec.Command(binary, "--config", cfg, "serve")
	logs = startServing(t, serve, 2)
	if got := uidls(t, pop3Addr, alice, pw); !slices.Equal(got, kept) {
		t.Fatalf("after the restore UIDLs are %q, want those of the backup %q", got, kept)
	}
	send("four")
	got := uidls(t, pop3Addr, alice, pw)
	if len(got) != 3 || !slices.Equal(got[:2], kept) || slices.Contains(beforeRestore, got[2]) {
		t.Fatalf("after new mail UIDLs are %q; want %q and one never seen (seen: %q)", got, kept, beforeRestore)
	}
	stopServing(t, serve, logs)
}

// TestInitWarnsAndSaysWhatItUses: init accepts localhost and an address
// as --hostname for a trial but warns that a public MX needs a real name;
// its config says the system resolver is used; --data-dir leaves no data/
// beside the config; the quick start's ./mail is ignored by git.
func TestInitWarnsAndSaysWhatItUses(t *testing.T) {
	for _, tc := range []struct {
		hostname string
		warn     bool
	}{
		{"localhost", true},
		{"127.0.0.1", true},
		{"mail", true},
		{"mx.example.test", false},
	} {
		t.Run(tc.hostname, func(t *testing.T) {
			dir := t.TempDir()
			r := minimail(t, "", "init", "--domain", "example.test", "--hostname", tc.hostname, "--dir", dir)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if warned := strings.Contains(r.stderr, "warning: --hostname "+tc.hostname+" is not a public DNS name"); warned != tc.warn {
				t.Fatalf("warned %v, want %v: %q", warned, tc.warn, r.stderr)
			}
		})
	}
	t.Run("config names the system resolver", func(t *testing.T) {
		b, err := os.ReadFile(initSite(t))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "the system resolver") || !strings.Contains(string(b), "leave this machine") {
			t.Fatalf("config does not say DNS goes to the system resolver:\n%s", b)
		}
	})
	t.Run("--data-dir elsewhere: no data/ beside the config", func(t *testing.T) {
		dir, data := t.TempDir(), filepath.Join(t.TempDir(), "state")
		if r := minimail(t, "", "init", "--domain", "example.test", "--hostname", "mx.example.test", "--dir", dir, "--data-dir", data); r.code != 0 {
			t.Fatal(r.stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
			t.Error("init made data/ beside the config")
		}
		wantMode(t, data, 0o700, -1, -1)
		if r := minimail(t, "long enough pw\n", "--config", filepath.Join(dir, "minimail.toml"), "user", "add", "a@example.test"); r.code != 0 {
			t.Fatalf("user add with data_dir %s: %s", data, r.stderr)
		}
	})
	t.Run("./mail is ignored by git", func(t *testing.T) {
		if err := exec.Command("git", "-C", "../..", "rev-parse").Run(); err != nil {
			t.Skip("not in a git checkout")
		}
		if out, err := exec.Command("git", "-C", "../..", "check-ignore", "-q", "mail/minimail.toml").CombinedOutput(); err != nil {
			t.Fatalf("git check-ignore mail/minimail.toml: %v %s", err, out)
		}
	})
}
