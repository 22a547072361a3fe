// Package resolve builds the DNS resolver every outbound and inbound check
// uses, so that [relay] dns can point all lookups at one server (tests point
// it at a server they start on 127.0.0.1).
package resolve

import (
	"context"
	"net"
	"time"
)

// New returns a resolver that sends every query to addr (host:port). An empty
// addr gives the system resolver.
func New(addr string) *net.Resolver {
	if addr == "" {
		return net.DefaultResolver
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}
}
