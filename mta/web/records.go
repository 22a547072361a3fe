package web

import (
	"fmt"
	"strings"

	"minimail/mta/msgauth"
)

// Kinds of the records Records returns (msgauth.Record.Kind).
const (
	KindSRV    msgauth.Kind = "SRV"
	KindCNAME  msgauth.Kind = "CNAME"
	KindMTASTS msgauth.Kind = "MTA-STS"
	KindTLSRPT msgauth.Kind = "TLSRPT"
)

// Records are the DNS records that let mail clients and sending servers
// find what this package serves for domain:
//
//   - SRV records for the mail services (RFC 6186 section 3, RFC 8314
//     section 5.1): _submissions._tcp, _submission._tcp, _pop3s._tcp and
//     _pop3._tcp at hostname, or with target "." (RFC 2782: not offered)
//     for a listener that is off; _imap._tcp and _imaps._tcp always "."
//     since there is no IMAP. Priority 0 for implicit TLS, 10 for STARTTLS
//     (RFC 8314 section 5.1: prefer implicit TLS).
//   - CNAMEs for autoconfig., autodiscover. and mta-sts. in front of the
//     domain, pointing at hostname, whose certificate names them too.
//   - _mta-sts TXT "v=STSv1; id=..." (RFC 8461 section 3.1), the id
//     derived from the policy.
//   - _smtp._tls TXT "v=TLSRPTv1; rua=mailto:postmaster@domain" (RFC 8460
//     section 3): where senders report TLS failures.
func Records(domain, hostname string, ports Ports, policy Policy) []msgauth.Record {
	d, h := strings.TrimSuffix(domain, ".")+".", strings.TrimSuffix(hostname, ".")+"."
	srv := func(service string, prio, port int) msgauth.Record {
		value := "0 0 0 ."
		if port != 0 {
			value = fmt.Sprintf("%d 1 %d %s", prio, port, h)
		}
		return msgauth.Record{Kind: KindSRV, Name: service + "._tcp." + d, Type: "SRV", Value: value}
	}
	recs := []msgauth.Record{
		srv("_submissions", 0, ports.Submissions),
		srv("_submission", 10, ports.Submission),
		srv("_pop3s", 0, ports.POP3S),
		srv("_pop3", 10, ports.POP3),
		srv("_imaps", 0, 0),
		srv("_imap", 0, 0),
	}
	for _, p := range HostPrefixes {
		recs = append(recs, msgauth.Record{Kind: KindCNAME, Name: p + d, Type: "CNAME", Value: h})
	}
	return append(recs,
		msgauth.Record{Kind: KindMTASTS, Name: "_mta-sts." + d, Type: "TXT", Value: "v=STSv1; id=" + policy.ID(hostname)},
		msgauth.Record{Kind: KindTLSRPT, Name: "_smtp._tls." + d, Type: "TXT", Value: "v=TLSRPTv1; rua=mailto:postmaster@" + strings.TrimSuffix(domain, ".")},
	)
}
