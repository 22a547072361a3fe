// Package dnstest gives tests a loopdns server that stops with the test.
package dnstest

import (
	"testing"

	"minimail/mta/loopdns"
)

// Server is a loopdns.Server with test-failing helpers.
type Server struct{ *loopdns.Server }

// Start launches a server with records in zone-file syntax, for example
// "b.test. 60 IN MX 10 mx.b.test.". It stops when the test ends.
func Start(t testing.TB, records ...string) *Server {
	t.Helper()
	s, err := loopdns.New(records...)
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(s.Close)
	return &Server{s}
}

// Add adds one record in zone-file syntax, failing the test if it is bad.
func (s *Server) Add(t testing.TB, record string) {
	t.Helper()
	if err := s.AddRecord(record); err != nil {
		t.Fatalf("dnstest: %v", err)
	}
}
