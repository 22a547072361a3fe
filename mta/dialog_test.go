package mta

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"minimail/mta/dialogtest"
)

// TestDialogs replays every testdata/dialog/*.txt dialogue, each against a
// fresh pair of servers (newEnv) in parallel. The format is dialogtest's;
// the fixture and the directives are in testdata/dialog/README.
func TestDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialog/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dialogues: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			t.Parallel()
			script, err := dialogtest.Load(file)
			if err != nil {
				t.Fatal(err)
			}
			e, conn := openDialog(t, script)
			if err := script.Run(conn, dialogtest.Options{Directive: e.dialogDirective}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// openDialog starts the servers as the dialogue's setup directives say and
// connects to the listener they name (the MX by default).
func openDialog(t *testing.T, script *dialogtest.Script) (*env, net.Conn) {
	t.Helper()
	listener := "mx"
	var mods []func(*Options)
	for _, d := range script.Setup {
		name, arg, _ := strings.Cut(d, " ")
		n, nerr := strconv.Atoi(arg)
		if name != "listener" && name != "insecure" && nerr != nil {
			t.Fatalf("%s: directive %q: want a number", script.Name, d)
		}
		switch name {
		case "listener":
			listener = arg
		case "insecure":
			mods = append(mods, func(o *Options) { o.AllowInsecureAuth = true })
		case "max_errors":
			mods = append(mods, func(o *Options) { o.MaxErrors = n })
		case "max_recipients":
			mods = append(mods, func(o *Options) { o.MaxRecipients = n })
		case "max_message_bytes":
			mods = append(mods, func(o *Options) { o.MaxMessageBytes = int64(n) })
		case "max_line_length":
			mods = append(mods, func(o *Options) { o.MaxLineLength = n })
		default:
			t.Fatalf("%s: unknown setup directive %q", script.Name, d)
		}
	}
	e := newEnv(t, func(o *Options, _ *Local) {
		for _, mod := range mods {
			mod(o)
		}
	})
	d := &net.Dialer{Timeout: 5 * time.Second}
	var conn net.Conn
	var err error
	switch listener {
	case "mx":
		conn, err = d.Dial("tcp", e.mxAddr)
	case "submission":
		conn, err = d.Dial("tcp", e.subAddr)
	case "submissions":
		conn, err = tls.DialWithDialer(d, "tcp", e.subsAddr, e.clientTLS)
	default:
		t.Fatalf("%s: unknown listener %q", script.Name, listener)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return e, conn
}

// dialogDirective runs the directives within a dialogue: "starttls" does
// the client's TLS handshake, after the server's 220 to STARTTLS.
func (e *env) dialogDirective(d string, conn io.ReadWriter) (io.ReadWriter, error) {
	if d != "starttls" {
		return nil, fmt.Errorf("unknown directive")
	}
	tc := tls.Client(conn.(net.Conn), e.clientTLS)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}
