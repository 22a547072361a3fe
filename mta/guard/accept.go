package guard

import (
	"log/slog"
	"net"
	"time"
)

// Accept returns the next connection on l. A temporary failure (out of file
// descriptors, say) is logged and retried after a pause that doubles from
// 5 ms to 1 s, as net/http does, instead of spinning or giving up. Any other
// error, such as l being closed, is returned.
func Accept(l net.Listener, log *slog.Logger) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err == nil {
			return c, nil
		}
		if te, ok := err.(interface{ Temporary() bool }); !ok || !te.Temporary() {
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		log.Warn("accept failed", "addr", l.Addr().String(), "err", err, "retry_in", delay)
		time.Sleep(delay)
	}
}
