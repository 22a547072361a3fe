// Package rspamdtest starts a real rspamd (the Debian package) for tests,
// on a loopback port with a minimal config of its own (testdata/rspamd.conf),
// and stops it with the test.
package rspamdtest

import (
	"bytes"
	_ "embed"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

//go:embed testdata/rspamd.conf
var configText string

var configTemplate = template.Must(template.New("rspamd.conf").Parse(configText))

// Server is one running rspamd.
type Server struct {
	URL  string // e.g. "http://127.0.0.1:40123"
	Addr string // host:port of the normal worker

	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	once sync.Once
}

// GTUBE is the test pattern rspamd rejects.
const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// Binary returns the path of rspamd, skipping t when it is not installed
// unless MINIMAIL_REQUIRE_CLIENTS is set (CI sets it, and installs it),
// where it fails t instead.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("rspamd")
	if err != nil {
		if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
			t.Fatalf("rspamd is not installed (apt-get install rspamd) and MINIMAIL_REQUIRE_CLIENTS is set")
		}
		t.Skip("rspamd is not installed (apt-get install rspamd)")
	}
	return path
}

// Start runs rspamd until the test ends (or Stop). Run as root, its
// workers run as an unprivileged user, as rspamd insists.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	// Not t.TempDir: its parent is private to root, and the workers,
	// running as another user, write their temporary files here.
	dir, err := os.MkdirTemp("", "rspamdtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	var conf bytes.Buffer
	if err := configTemplate.Execute(&conf, struct{ Dir, Addr string }{dir, addr}); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "rspamd.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", "-c", confPath}
	if os.Geteuid() == 0 {
		u, g := workerUser(t)
		args = append(args, "-u", u, "-g", g)
	}
	s := &Server{URL: "http://" + addr, Addr: addr, out: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// Its own process group: Stop ends the workers with the main process.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("rspamd: %v", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { s.Stop(t) })
	s.waitReady(t)
	return s
}

// waitReady polls /ping; the wait is a hang guard, not a speed assumption.
func (s *Server) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	client := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			t.Fatalf("rspamd exited before it answered:\n%s", s.out.String())
		default:
		}
		resp, err := client.Get(s.URL + "/ping")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), "pong") {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("rspamd did not answer /ping on %s:\n%s", s.Addr, s.out.String())
}

// Stop ends rspamd and waits for it; afterwards nothing listens on Addr.
func (s *Server) Stop(t testing.TB) {
	s.once.Do(func() {
		pgid := s.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		}
		// The workers may outlive the main process for a moment.
		for i := 0; syscall.Kill(-pgid, 0) == nil; i++ {
			if i == 100 {
				syscall.Kill(-pgid, syscall.SIGKILL)
			}
			if i > 200 {
				t.Errorf("rspamd's workers (process group %d) did not exit", pgid)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// Output is what rspamd logged.
func (s *Server) Output() string { return s.out.String() }

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// workerUser picks the unprivileged user rspamd's workers run as: the
// package's own _rspamd, else nobody.
func workerUser(t testing.TB) (string, string) {
	t.Helper()
	for _, name := range []string{"_rspamd", "rspamd", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			continue
		}
		return u.Username, g.Name
	}
	t.Fatal("no unprivileged user for rspamd's workers (_rspamd or nobody)")
	return "", ""
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
