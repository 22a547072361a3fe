// Package tlstest makes throwaway TLS certificates for tests; nothing
// outside _test.go files and test-support packages should import it.
//
// Each call to Pair makes a fresh self-signed ECDSA P-256 certificate, so
// tests never share a key and never read one from disk.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// Pair makes a self-signed certificate for the DNS names and 127.0.0.1,
// valid from an hour ago to an hour from now. server presents it; client
// trusts it (RootCAs holds it alone, so callers needing just the pool take
// client.RootCAs) and, when names are given, expects names[0]. With no
// names the certificate covers 127.0.0.1 only and client.ServerName is
// empty, so crypto/tls checks the dialled IP address.
func Pair(t testing.TB, names ...string) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	cn := "tlstest"
	if len(names) > 0 {
		cn = names[0]
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// Its own issuer: a CA, so the same certificate is both the leaf
		// and the root the client trusts.
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	client = &tls.Config{RootCAs: pool}
	if len(names) > 0 {
		client.ServerName = names[0]
	}
	return server, client
}
