package guard

import (
	"log/slog"
	"net"
	"time"
)

// Listener is a net.Listener whose Accept rides out temporary failures (out
// of file descriptors, say): each is logged and retried after a pause that
// doubles from 5 ms to 1 s, as net/http does, instead of spinning or giving
// up. Any other error, such as the listener being closed, is returned. The
// SMTP and POP3 servers get their listeners wrapped in one and simply call
// Accept.
type Listener struct {
	net.Listener
	Log *slog.Logger // nil discards
}

// Accept returns the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		if te, ok := err.(interface{ Temporary() bool }); !ok || !te.Temporary() {
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		if l.Log != nil {
			l.Log.Warn("accept failed", "addr", l.Addr().String(), "err", err, "retry_in", delay)
		}
		time.Sleep(delay)
	}
}
