package pop3

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"minimail/mta/dialogtest"
	"minimail/mta/tlstest"
)

// TestDialogs replays every testdata/dialog/*.txt dialogue, each against a
// fresh server over the fixture maildrop. The format is dialogtest's; the
// fixture and the directives are in testdata/dialog/README.
func TestDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialog/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dialogues: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			t.Parallel()
			runDialog(t, file)
		})
	}
}

func runDialog(t *testing.T, file string) {
	script, err := dialogtest.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{}
	for _, d := range script.Setup {
		switch d {
		case "insecure":
			opts.AllowInsecureAuth = true
		case "stls":
			opts.TLSConfig, _ = tlstest.Pair(t, "pop.test")
		default:
			t.Fatalf("%s: unknown setup directive %q", file, d)
		}
	}
	h := startServer(t, fixtureMaildrop(t), opts)
	conn := dialConn(t, h.addr)
	err = script.Run(conn, dialogtest.Options{Directive: func(d string, conn io.ReadWriter) (io.ReadWriter, error) {
		if d != "reconnect" {
			return nil, fmt.Errorf("unknown directive")
		}
		conn.(net.Conn).Close()
		h.waitEnded(t, 1)
		return dialConn(t, h.addr), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func dialConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
