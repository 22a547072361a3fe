package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// `minimail status` judges each listener from the outside, as a client
// would: it connects, and where the listener speaks TLS (implicit, or
// after STARTTLS/STLS) completes a handshake to read the certificate the
// listener really presents, which may differ from tls.cert on disk (a
// certificate renewed but not reloaded, or one obtained over ACME).

// probeTimeout bounds each probe, connection and every reply: longer than
// the longest antispam.greet_delay (maxGreetDelay), so an MX that waits
// before its greeting is not taken for one that is down.
const probeTimeout = maxGreetDelay + 5*time.Second

// probe is what status learnt of one listener.
type probe struct {
	err  error             // nil: up
	leaf *x509.Certificate // nil when it offers no TLS
}

// tlsKind is how a listener speaks TLS.
type tlsKind int

const (
	tlsNone tlsKind = iota
	tlsImplicit
	tlsSTARTTLS // SMTP
	tlsSTLS     // POP3 (RFC 2595)
)

// listenerTLS says how the listener named by its config key speaks TLS.
func listenerTLS(key string) tlsKind {
	switch key {
	case "listen.submissions", "listen.pop3s", "listen.https":
		return tlsImplicit
	case "listen.smtp", "listen.submission":
		return tlsSTARTTLS
	case "listen.pop3":
		return tlsSTLS
	}
	return tlsNone
}

// dialable turns a bound address into one to dial: an unspecified host
// (":25", "[::]:25", "0.0.0.0:25") is reached on loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// probeListener connects to the listener at addr (its config key says
// what it speaks) and reads its certificate.
func probeListener(key, addr, serverName string) probe {
	conn, err := net.DialTimeout("tcp", dialable(addr), probeTimeout)
	if err != nil {
		return probe{err: err}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(probeTimeout))
	// Any certificate is read; judging it is status's job, not the
	// handshake's.
	conf := &tls.Config{ServerName: serverName, InsecureSkipVerify: true}
	var tconn *tls.Conn
	switch listenerTLS(key) {
	case tlsNone:
		return probe{}
	case tlsImplicit:
		tconn = tls.Client(conn, conf)
	case tlsSTARTTLS:
		c := smtp.NewClient(conn)
		if err := c.Hello("status.invalid"); err != nil {
			return probe{err: fmt.Errorf("EHLO: %w", err)}
		}
		ok, _ := c.Extension("STARTTLS")
		c.Quit()
		if !ok {
			return probe{} // up, without TLS
		}
		// go-smtp starts TLS only on a client of its own making: a
		// second connection.
		conn2, err := net.DialTimeout("tcp", dialable(addr), probeTimeout)
		if err != nil {
			return probe{err: err}
		}
		defer conn2.Close()
		conn2.SetDeadline(time.Now().Add(probeTimeout))
		c2, err := smtp.NewClientStartTLS(conn2, conf)
		if err != nil {
			return probe{err: fmt.Errorf("STARTTLS: %w", err)}
		}
		// The handshake happens with the first command after STARTTLS.
		if err := c2.Noop(); err != nil {
			return probe{err: fmt.Errorf("after STARTTLS: %w", err)}
		}
		st, _ := c2.TLSConnectionState()
		c2.Quit()
		return probe{leaf: peerLeaf(st)}
	case tlsSTLS:
		r := bufio.NewReader(conn)
		if err := pop3OK(r); err != nil {
			return probe{err: fmt.Errorf("greeting: %w", err)}
		}
		fmt.Fprintf(conn, "STLS\r\n")
		if err := pop3OK(r); err != nil {
			return probe{} // STLS not offered: up, without TLS
		}
		tconn = tls.Client(conn, conf)
	}
	if err := tconn.Handshake(); err != nil {
		return probe{err: fmt.Errorf("TLS handshake: %w", err)}
	}
	return probe{leaf: peerLeaf(tconn.ConnectionState())}
}

func peerLeaf(st tls.ConnectionState) *x509.Certificate {
	if len(st.PeerCertificates) == 0 {
		return nil
	}
	return st.PeerCertificates[0]
}

// pop3OK reads one POP3 reply line and wants +OK.
func pop3OK(r *bufio.Reader) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+OK") {
		return errors.New(strings.TrimSpace(line))
	}
	return nil
}
