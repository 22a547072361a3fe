package mta

import (
	"context"
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
			d := openDialog(t, script)
			if err := script.Run(d.dial(), dialogtest.Options{Directive: d.directive}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// dialog is the servers a dialogue talks to and the listener it uses.
type dialog struct {
	t        *testing.T
	e        *env
	listener string
}

// openDialog starts the servers as the dialogue's setup directives say.
func openDialog(t *testing.T, script *dialogtest.Script) *dialog {
	t.Helper()
	d := &dialog{t: t, listener: "mx"}
	var mods []func(*Options)
	for _, dir := range script.Setup {
		name, arg, _ := strings.Cut(dir, " ")
		n, nerr := strconv.Atoi(arg)
		if name != "listener" && name != "insecure" && name != "sender_spf" && nerr != nil {
			t.Fatalf("%s: directive %q: want a number", script.Name, dir)
		}
		switch name {
		case "listener":
			d.listener = arg
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
		case "greet_delay":
			mods = append(mods, func(o *Options) { o.GreetDelay = time.Duration(n) * time.Millisecond })
		case "sender_spf":
			mods = append(mods, func(o *Options) {
				o.SenderSPF = func(context.Context, net.IP, string, string) string { return arg }
			})
		default:
			t.Fatalf("%s: unknown setup directive %q", script.Name, dir)
		}
	}
	if d.listener != "mx" && d.listener != "submission" && d.listener != "submissions" {
		t.Fatalf("%s: unknown listener %q", script.Name, d.listener)
	}
	d.e = newEnv(t, func(o *Options, _ *Local) {
		for _, mod := range mods {
			mod(o)
		}
	})
	return d
}

// dial connects to the dialogue's listener.
func (d *dialog) dial() net.Conn {
	d.t.Helper()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	var conn net.Conn
	var err error
	switch d.listener {
	case "mx":
		conn, err = dialer.Dial("tcp", d.e.mxAddr)
	case "submission":
		conn, err = dialer.Dial("tcp", d.e.subAddr)
	case "submissions":
		conn, err = tls.DialWithDialer(dialer, "tcp", d.e.subsAddr, d.e.clientTLS)
	}
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { conn.Close() })
	return conn
}

// directive runs the directives within a dialogue: "starttls" does the
// client's TLS handshake, after the server's 220 to STARTTLS; "reconnect"
// closes the connection and dials the listener again.
func (d *dialog) directive(dir string, conn io.ReadWriter) (io.ReadWriter, error) {
	switch dir {
	case "starttls":
		tc := tls.Client(conn.(net.Conn), d.e.clientTLS)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return tc, nil
	case "reconnect":
		conn.(net.Conn).Close()
		return d.dial(), nil
	}
	return nil, fmt.Errorf("unknown directive")
}
