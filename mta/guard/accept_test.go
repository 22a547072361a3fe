package guard_test

import (
	"errors"
	"log/slog"
	"net"
	"testing"

	"minimail/mta/guard"
)

type tempErr struct{}

func (tempErr) Error() string   { return "accept: too many open files" }
func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }

// scriptedListener returns the given errors in turn, then conn.
type scriptedListener struct {
	net.Listener
	errs []error
	conn net.Conn
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.conn, nil
}

func (l *scriptedListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func TestAcceptRetriesTemporaryFailures(t *testing.T) {
	for name, log := range map[string]*slog.Logger{"logged": slog.New(slog.DiscardHandler), "no logger": nil} {
		t.Run(name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			l := &scriptedListener{errs: []error{tempErr{}, tempErr{}}, conn: server}
			c, err := (&guard.Listener{Listener: l, Log: log}).Accept()
			if err != nil || c != server {
				t.Fatalf("Accept = %v, %v; want the connection after two temporary failures", c, err)
			}
		})
	}
}

func TestAcceptReturnsOtherErrors(t *testing.T) {
	l := &scriptedListener{errs: []error{net.ErrClosed}}
	if _, err := (&guard.Listener{Listener: l}).Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("err = %v, want net.ErrClosed", err)
	}
}
