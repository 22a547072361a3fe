package dnstest

import (
	"net"

	"minimail/mta/resolve"
)

// Resolver returns a resolver that sends every query to s, never to the
// system's configured servers.
func (s *Server) Resolver() *net.Resolver { return resolve.New(s.Addr) }
