package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// peerPostfix is a private Postfix instance a test starts on loopback: its
// own config_directory, queue and data directories under the test's temp
// dir, one smtpd on smtpAddr, virtual(8) delivery into Maildirs, and no
// DNS at all (every next hop is a bracketed loopback address).
type peerPostfix struct {
	dir      string // everything of the instance lives below
	conf     string // config_directory
	smtpAddr string
	mailBase string // virtual_mailbox_base: one Maildir per user
	logPath  string
}

// requirePostfix skips a test that starts a private Postfix unless
// MINIMAIL_REQUIRE_CLIENTS says it must run: it needs the postfix binaries
// and root (master starts as root and hands its daemons to user postfix).
func requirePostfix(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"postfix", "postqueue"} {
		if postfixTool(bin) == "" {
			if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
				t.Fatalf("%s not installed (Debian package postfix)", bin)
			}
			t.Skipf("%s not installed", bin)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
			t.Fatal("this test needs root (Postfix's master starts as root), and MINIMAIL_REQUIRE_CLIENTS is set")
		}
		t.Skip("needs root: Postfix's master starts as root")
	}
}

// postfixTool finds a Postfix command in PATH or in /usr/sbin, where
// Debian puts them and which a user's PATH often lacks; "" if neither.
func postfixTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := filepath.Join("/usr/sbin", name)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return p
	}
	return ""
}

// startPostfix starts an instance for domain peer.test whose smtpd listens
// on smtpAddr and whose smtp client sends mail for each route's domain to
// the bracketed loopback address (no MX lookup). users get Maildirs.
func startPostfix(t *testing.T, smtpAddr string, routes map[string]string, users []string) *peerPostfix {
	t.Helper()
	dir := openDir(t) // daemons running as postfix must reach their directories
	p := &peerPostfix{dir: dir, conf: filepath.Join(dir, "etc"), smtpAddr: smtpAddr,
		mailBase: filepath.Join(dir, "mail"), logPath: filepath.Join(dir, "postfix.log")}
	nobody, err := serviceAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{p.conf, filepath.Join(dir, "queue"), filepath.Join(dir, "data"), p.mailBase} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pfUser, err := serviceAccount("postfix")
	if err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(dir, "data"), pfUser.uid, pfUser.gid)
	os.Chown(p.mailBase, nobody.uid, nobody.gid)
	certPEM, keyPEM, err := selfSigned("mx.peer.test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p.conf, "cert.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(p.conf, "key.pem"), keyPEM, 0o600)

	var mailboxes, transports []string
	for _, u := range users {
		mailboxes = append(mailboxes, fmt.Sprintf("%s@peer.test=%s/", u, u))
	}
	for domain, addr := range routes {
		transports = append(transports, fmt.Sprintf("%s=smtp:[%s]:%s", domain, strings.Split(addr, ":")[0], strings.Split(addr, ":")[1]))
	}
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
myhostname = mx.peer.test
mydomain = peer.test
myorigin = peer.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# No DNS, no system resolver: every next hop is a bracketed loopback address.
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
alias_maps =
alias_database =
virtual_mailbox_domains = peer.test
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = inline:{ %[2]s }
virtual_uid_maps = static:%[3]d
virtual_gid_maps = static:%[4]d
transport_maps = inline:{ %[5]s }
default_transport = error:this test's Postfix sends nowhere else
relay_transport = error:this test's Postfix sends nowhere else
smtpd_tls_security_level = may
smtpd_tls_cert_file = %[1]s/etc/cert.pem
smtpd_tls_key_file = %[1]s/etc/key.pem
smtp_tls_security_level = may
smtp_tls_loglevel = 1
smtpd_tls_received_header = yes
maillog_file_prefixes = %[1]s
maillog_file = %[1]s/postfix.log
`, dir, strings.Join(mailboxes, ", "), nobody.uid, nobody.gid, strings.Join(transports, ", "))
	// master.cf: Debian's services without chroot (nothing is copied into
	// the queue directory) and a single smtpd on the test's port.
	masterCF := smtpAddr + ` inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
	os.WriteFile(filepath.Join(p.conf, "main.cf"), []byte(mainCF), 0o644)
	os.WriteFile(filepath.Join(p.conf, "master.cf"), []byte(masterCF), 0o644)
	if out, err := execCommand(postfixTool("postfix"), "-c", p.conf, "start"); err != nil {
		p.kill()
		t.Fatalf("postfix start: %v\n%s\n%s", err, out, p.log())
	}
	t.Cleanup(func() {
		execCommand(postfixTool("postfix"), "-c", p.conf, "stop")
		p.kill() // whatever stop left running
	})
	return p
}

// kill ends the instance's master, if it still runs, by the pid it wrote.
func (p *peerPostfix) kill() {
	b, err := os.ReadFile(filepath.Join(p.dir, "queue", "pid", "master.pid"))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (p *peerPostfix) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// flush asks Postfix to retry its deferred mail now (postqueue -f).
func (p *peerPostfix) flush(t *testing.T) {
	t.Helper()
	if out, err := execCommand(postfixTool("postqueue"), "-c", p.conf, "-f"); err != nil {
		t.Fatalf("postqueue -f: %v\n%s", err, out)
	}
}

// waitMaildir waits until user's Maildir holds n messages and returns
// them, flushing Postfix's queue while it waits.
func (p *peerPostfix) waitMaildir(t *testing.T, user string, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(p.mailBase, user, "new", "*"))
		if len(files) >= n {
			var out [][]byte
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, b)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s@peer.test's Maildir holds %d message(s), want %d; Postfix's log:\n%s", user, len(files), n, p.log())
		}
		p.flush(t)
		time.Sleep(200 * time.Millisecond)
	}
}
