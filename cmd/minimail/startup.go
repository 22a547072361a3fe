package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"minimail/store"
)

// The errors of a first start, each with what to do about it: a port below
// 1024 without the capability, a port taken, a data_dir another server
// holds, a file that belongs to another account. The facts come from the
// kernel (/proc), so that the message names the process, the account and
// the owner rather than guessing.

// listenError is a listener that cannot bind: a runtime failure (exit 1)
// naming the config file, the key and the address, with a hint.
type listenError struct {
	path, key, addr string
	err             error
	hint            string
}

func (e *listenError) Error() string {
	msg := fmt.Sprintf("%s: key %s: %q: %v", e.path, e.key, e.addr, e.err)
	if e.hint != "" {
		msg += ": " + e.hint
	}
	return msg
}

func (e *listenError) Unwrap() error { return e.err }

// bindHint says what to do about a listener that cannot bind.
func bindHint(addr string, err error) string {
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	switch {
	case errors.Is(err, syscall.EACCES):
		first := unprivilegedPortStart()
		if port >= first || hasCapability(capNetBindService) {
			return ""
		}
		return fmt.Sprintf("ports below %d (sysctl net.ipv4.ip_unprivileged_port_start) need CAP_NET_BIND_SERVICE, which serve running as %s lacks: "+
			"start it with the systemd unit (deploy/minimail.service gives the minimail user that capability alone: systemctl start minimail), "+
			"run it as root, or in a container set the sysctl to 0 as docker-compose.yml does", first, currentAccount())
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Sprintf("another program listens there (ss -ltnp 'sport = :%d' names it)", port)
	}
	return ""
}

// unprivilegedPortStart is the first port any account may bind (Linux
// 4.11+); 1024 where the kernel does not say.
func unprivilegedPortStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 1024
	}
	return n
}

// capNetBindService is CAP_NET_BIND_SERVICE's bit (linux/capability.h).
const capNetBindService = 10

// hasCapability reports whether this process holds capability bit in its
// effective set (the CapEff line of /proc/self/status, proc(5)).
func hasCapability(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return os.Geteuid() == 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && set&(1<<bit) != 0
		}
	}
	return false
}

// currentAccount names the account this process runs as: "minimail (uid 995)".
func currentAccount() string {
	uid := os.Geteuid()
	if name := userName(uid); name != strconv.Itoa(uid) {
		return fmt.Sprintf("%s (uid %d)", name, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

// ownership describes path's owner, group and mode: "root:minimail, mode
// 0640", or "" when it cannot be read.
func ownership(path string) string {
	fi, err := os.Stat(path)
	o, ok := statOwner(fi, err)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%s:%s, mode %04o", userName(o.uid), groupName(o.gid), fi.Mode().Perm())
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}

// deniedPath is the path of a permission error (the file the kernel
// refused), or "".
func deniedPath(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(err, fs.ErrPermission) {
		return pe.Path
	}
	return ""
}

// accessHint says who owns the file err was refused, and who asked: "PATH
// is root:minimail, mode 0640, and this runs as bob (uid 1000)". "" when err
// is no permission error on a file.
func accessHint(err error) string {
	path := deniedPath(err)
	if path == "" {
		return ""
	}
	own := ownership(path)
	if own == "" {
		// The file itself cannot be looked at: its directory is closed.
		dir := filepath.Dir(path)
		if own = ownership(dir); own == "" {
			return ""
		}
		path = dir
	}
	return fmt.Sprintf("%s is %s, and this runs as %s", path, own, currentAccount())
}

// storeOpenError explains why serve could not open the database: another
// process holds it (which one, when the kernel says), or it belongs to
// another account.
func storeOpenError(dataDir string, err error) error {
	db := filepath.Join(dataDir, store.FileName)
	switch {
	case errors.Is(err, store.ErrLocked):
		if holder := lockHolder(db); holder != "" {
			return fmt.Errorf("data_dir: %w: %s: %s", err, holder, alreadyServing)
		}
	case errors.Is(err, fs.ErrPermission):
		if hint := accessHint(err); hint != "" {
			dirOwner := "the owner of data_dir"
			if o, oerr := ownerOf(dataDir); oerr == nil {
				dirOwner = userName(o.uid)
			}
			return fmt.Errorf("data_dir: %w: %s: run serve as %s, the owner of data_dir (the unit's User=), "+
				"or give data_dir and its files to the account serve runs as (chown -R)", err, hint, dirOwner)
		}
	}
	return fmt.Errorf("data_dir: %w", err)
}

// listenHint is bindHint for serve on dataDir: a port taken by a server
// that already runs on this data_dir says so, since that server also holds
// the database.
func listenHint(dataDir, addr string, err error) string {
	if errors.Is(err, syscall.EADDRINUSE) {
		if holder := lockHolder(filepath.Join(dataDir, store.FileName)); holder != "" {
			return holder + ": " + alreadyServing
		}
	}
	return bindHint(addr, err)
}

// lockHolder names the process that holds the lock on the database file:
// "pid 1234 (minimail --config ... serve, user minimail) holds
// /var/lib/minimail/minimail.db". "" when no process holds it, or
// /proc/locks does not say.
func lockHolder(db string) string {
	fi, err := os.Stat(db)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return ""
	}
	pid, ok := lockingPID(locks, st.Dev, st.Ino)
	if !ok {
		return ""
	}
	if pid <= 0 {
		return fmt.Sprintf("a process outside this PID namespace (another container?) holds %s", db)
	}
	return fmt.Sprintf("pid %d (%s) holds %s", pid, describeProcess(pid), db)
}

// alreadyServing is what serve says when another process holds the
// database: most likely a server started before.
const alreadyServing = "a server already runs on this data_dir: stop it first (systemctl stop minimail), " +
	"or leave it running: the admin commands talk to it"

// lockingPID finds, in the text of /proc/locks (proc(5)), the process that
// holds a lock on the file with device dev and inode ino. Lines with "->"
// are processes waiting for a lock, not holding it.
func lockingPID(locks []byte, dev, ino uint64) (int, bool) {
	// The kernel prints the device as MAJOR:MINOR in hex, then the inode.
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	for _, line := range bytes.Split(locks, []byte("\n")) {
		f := strings.Fields(string(line))
		// "1: FLOCK ADVISORY WRITE 1234 fe:00:9977893 0 EOF"; a waiter's
		// line has "->" after the number, so nine fields.
		if len(f) != 8 || f[5] != want {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil {
			continue
		}
		return pid, true
	}
	return 0, false
}

// describeProcess is a process's command line and account, as far as
// /proc shows them: "minimail --config /etc/minimail/minimail.toml serve,
// user minimail".
func describeProcess(pid int) string {
	dir := fmt.Sprintf("/proc/%d", pid)
	var parts []string
	if b, err := os.ReadFile(dir + "/cmdline"); err == nil && len(b) > 0 {
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		args[0] = filepath.Base(args[0])
		cmd := strings.Join(args, " ")
		if len(cmd) > 200 {
			cmd = cmd[:200] + "..."
		}
		parts = append(parts, cmd)
	}
	if o, err := ownerOf(dir); err == nil {
		parts = append(parts, "user "+userName(o.uid))
	}
	if len(parts) == 0 {
		return "no longer running, or hidden from this account"
	}
	return strings.Join(parts, ", ")
}

// readHint says who owns a file this account was refused and who may read
// it: "PATH is root:minimail, mode 0640, and this runs as bob (uid 1000):
// run it as root (sudo minimail ...) or as a member of group minimail". ""
// when err is no permission error on a file.
func readHint(err error) string {
	hint := accessHint(err)
	if hint == "" {
		return ""
	}
	fi, serr := os.Stat(deniedPath(err))
	o, ok := statOwner(fi, serr)
	switch {
	case !ok:
		return hint + ": run it as root (sudo minimail ...) or as the file's owner"
	case fi.Mode().Perm()&0o040 != 0 && o.gid != 0:
		return fmt.Sprintf("%s: run it as root (sudo minimail ...) or as a member of group %s", hint, groupName(o.gid))
	case o.uid != 0:
		return fmt.Sprintf("%s: run it as root or as %s (sudo -u %s minimail ...)", hint, userName(o.uid), userName(o.uid))
	}
	return hint + ": run it as root (sudo minimail ...)"
}

func statOwner(fi os.FileInfo, err error) (owner, bool) {
	if err != nil {
		return owner{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, false
	}
	return owner{int(st.Uid), int(st.Gid)}, true
}
