// Package loopdns runs a small authoritative DNS server on 127.0.0.1, for
// `minimail demo` and (through mta/dnstest) the tests, so that neither
// ever asks the system resolver.
package loopdns

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Server answers from a fixed set of records, over UDP and TCP on the same
// loopback port. Names not in its records get NXDOMAIN; names added with
// Fail get SERVFAIL; names added with Hang get no answer at all (a timeout).
type Server struct {
	Addr string // host:port to use as the resolver address

	mu      sync.Mutex
	records map[string][]dns.RR // by lower-cased FQDN
	fail    map[string]bool
	hang    map[string]bool
	queries int
	servers []*dns.Server
}

// Queries reports how many queries the server has answered or dropped.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// New starts a server on a free loopback port; Close stops it.
func New(records ...string) (*Server, error) {
	s := &Server{records: map[string][]dns.RR{}, fail: map[string]bool{}, hang: map[string]bool{}}
	for _, r := range records {
		if err := s.AddRecord(r); err != nil {
			return nil, err
		}
	}
	pc, l, err := listenUDPAndTCP()
	if err != nil {
		return nil, err
	}
	s.Addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: s}, {Listener: l, Handler: s}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.servers = append(s.servers, srv)
		go srv.ActivateAndServe()
		<-started
	}
	return s, nil
}

// Close stops the server.
func (s *Server) Close() {
	for _, srv := range s.servers {
		srv.Shutdown()
	}
}

// AddRecord adds one record in zone-file syntax.
func (s *Server) AddRecord(record string) error {
	rr, err := dns.NewRR(record)
	if err != nil {
		return fmt.Errorf("record %q: %w", record, err)
	}
	name := strings.ToLower(rr.Header().Name)
	s.mu.Lock()
	s.records[name] = append(s.records[name], rr)
	s.mu.Unlock()
	return nil
}

// Fail makes every query for name answer SERVFAIL.
func (s *Server) Fail(name string) {
	s.mu.Lock()
	s.fail[strings.ToLower(dns.Fqdn(name))] = true
	s.mu.Unlock()
}

// Hang makes every query for name go unanswered.
func (s *Server) Hang(name string) {
	s.mu.Lock()
	s.hang[strings.ToLower(dns.Fqdn(name))] = true
	s.mu.Unlock()
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	s.queries++
	rrs, hang, fail := s.records[name], s.hang[name], s.fail[name]
	exists := len(rrs) > 0
	var answer []dns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype || (rr.Header().Rrtype == dns.TypeCNAME && q.Qtype != dns.TypeCNAME) {
			answer = append(answer, dns.Copy(rr))
		}
	}
	s.mu.Unlock()
	if hang {
		time.Sleep(10 * time.Millisecond)
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	switch {
	case fail:
		m.Rcode = dns.RcodeServerFailure
	case !exists:
		m.Rcode = dns.RcodeNameError
		m.Ns = s.soaFor(name)
	default:
		m.Answer = answer
		if len(answer) == 0 {
			m.Ns = s.soaFor(name)
		}
	}
	w.WriteMsg(m)
}

// soaFor returns the SOA record of the closest enclosing zone among the
// records, for negative answers (RFC 2308 3), or nothing.
func (s *Server) soaFor(name string) []dns.RR {
	s.mu.Lock()
	defer s.mu.Unlock()
	for zone := name; zone != ""; {
		for _, rr := range s.records[zone] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return []dns.RR{dns.Copy(rr)}
			}
		}
		_, rest, ok := strings.Cut(zone, ".")
		if !ok {
			break
		}
		zone = rest
	}
	return nil
}

// listenUDPAndTCP binds one free loopback port for both UDP and TCP. The
// UDP port the kernel picks may be taken for TCP, so it tries a few.
func listenUDPAndTCP() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		lastErr = fmt.Errorf("tcp on %s: %w", pc.LocalAddr(), err)
	}
	return nil, nil, lastErr
}
