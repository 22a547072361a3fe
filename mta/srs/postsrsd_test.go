package srs

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestInteropWithPostsrsd: addresses written here reverse in postsrsd
// (libsrs2's code) with the same secret and the other way round, and on
// the same day both write the same address. It runs postsrsd on loopback;
// without the binary it skips, unless MINIMAIL_REQUIRE_CLIENTS is set
// (CI installs the Debian package postsrsd).
func TestInteropWithPostsrsd(t *testing.T) {
	bin, err := exec.LookPath("postsrsd")
	if err != nil {
		bin = "/usr/sbin/postsrsd" // Debian installs it outside a user's PATH
		if _, serr := os.Stat(bin); serr != nil {
			if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
				t.Fatal("postsrsd not installed")
			}
			t.Skip("postsrsd not installed")
		}
	}
	secret := "interop-secret-0123456789"
	file := filepath.Join(t.TempDir(), "postsrsd.secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fwd, rev := freePort(t), freePort(t)
	cmd := exec.Command(bin, "-s"+file, "-dexample.org", "-l127.0.0.1", "-4",
		fmt.Sprintf("-f%d", fwd), fmt.Sprintf("-r%d", rev))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	r := &Rewriter{Secret: []byte(secret)}
	for _, sender := range []string{"bob@remote.test", "Bob.Smith+x@Remote.Test", "a=b@sub.remote.test"} {
		theirs := tcpTable(t, fwd, sender, &stderr)
		ours, err := r.Forward(sender, "example.org")
		if err != nil {
			t.Fatal(err)
		}
		if pt, _ := Parse(strings.TrimSuffix(theirs, "@example.org")); pt.Stamp == stampFor(time.Now()) && theirs != ours {
			t.Errorf("%s: postsrsd writes %q, we write %q", sender, theirs, ours)
		}
		if got, err := r.Reverse(strings.TrimSuffix(theirs, "@example.org")); err != nil || !strings.EqualFold(got, sender) {
			t.Errorf("our Reverse(%q) = %q, %v; want %q", theirs, got, err, sender)
		}
		if got := tcpTable(t, rev, ours, &stderr); !strings.EqualFold(got, sender) {
			t.Errorf("postsrsd reverses %q to %q, want %q", ours, got, sender)
		}
	}
}

// tcpTable asks one of postsrsd's Postfix tcp_table ports for key and
// returns the value of its 200 reply, waiting for the port to open.
func tcpTable(t *testing.T, port int, key string, stderr *strings.Builder) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second) // a hang guard, not a timing
	var c net.Conn
	for {
		var err error
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("postsrsd does not listen on %s: %v\n%s", addr, err, stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "get %s\n", url.PathEscape(key))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("postsrsd on %s: %v", addr, err)
	}
	v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "200 ")
	if !ok {
		t.Fatalf("postsrsd on %s answers %q for %q", addr, line, key)
	}
	out, err := url.PathUnescape(v)
	if err != nil {
		t.Fatalf("postsrsd value %q: %v", v, err)
	}
	return out
}

// freePort returns a loopback port nobody listens on just now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
