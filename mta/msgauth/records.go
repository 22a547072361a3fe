package msgauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// recordTTL is the TTL of the published records: an hour lets a mistake be
// fixed the same day without flooding resolvers.
const recordTTL = 3600

// Records returns the zone-file lines to publish for domain, whose mail
// server is hostname and whose DKIM key pub is published under selector:
//
//   - MX 10 hostname.
//   - SPF "v=spf1 mx -all" (RFC 7208): only the MX hosts send for the domain.
//   - DKIM "v=DKIM1; k=rsa; p=..." at selector._domainkey (RFC 6376 section
//     3.6.1), in strings of at most 255 octets (RFC 1035 section 3.3.14),
//     which the receiver joins.
//   - DMARC "v=DMARC1; p=quarantine" at _dmarc (RFC 7489 section 6.3).
//     Everything we send is signed and leaves from the MX, so a failure is
//     a forgery and quarantine protects the domain from the start; reject
//     is the next step once the operator has seen that forwarding and
//     mailing lists do not trip it, none would protect nothing. No rua=: the
//     aggregate reports would arrive at a mailbox nobody reads; add one
//     pointing at a real mailbox to receive them.
//
// hostname also needs A/AAAA records (and a matching PTR), which depend on
// the machine's addresses and are not included.
func Records(domain, hostname, selector string, pub crypto.PublicKey) ([]string, error) {
	for _, n := range []struct{ what, name string }{{"domain", domain}, {"hostname", hostname}, {"selector", selector}} {
		if !isHostName(n.name) {
			return nil, fmt.Errorf("dns records: %s %q is not a domain name", n.what, n.name)
		}
	}
	key, err := dkimKeyRecord(pub)
	if err != nil {
		return nil, fmt.Errorf("dns records for %s: %w", domain, err)
	}
	d, h := dns.Fqdn(domain), dns.Fqdn(hostname)
	rr := func(name, typ, data string) string {
		return fmt.Sprintf("%s %d IN %s %s", name, recordTTL, typ, data)
	}
	return []string{
		rr(d, "MX", "10 "+h),
		rr(d, "TXT", txtStrings("v=spf1 mx -all")),
		rr(dns.Fqdn(selector)+"_domainkey."+d, "TXT", txtStrings(key)),
		rr("_dmarc."+d, "TXT", txtStrings("v=DMARC1; p=quarantine")),
	}, nil
}

// isHostName reports whether name is made of letter-digit-hyphen labels
// (RFC 1123 section 2.1; underscores too, as in DKIM selectors), so that it
// can be written into a zone file as is.
func isHostName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// dkimKeyRecord is the key record text for pub (RFC 6376 section 3.6.1;
// RFC 8463 for ed25519, whose p= is the raw 32-byte key).
func dkimKeyRecord(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", fmt.Errorf("dkim public key: %w", err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k), nil
	default:
		return "", fmt.Errorf("dkim public key: unsupported type %T", pub)
	}
}

// txtStrings quotes s as TXT character-strings of at most 255 octets. The
// text is ours (base64 and tag syntax), so it has no quotes to escape.
func txtStrings(s string) string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, `"`+s[:255]+`"`)
		s = s[255:]
	}
	return strings.Join(append(parts, `"`+s+`"`), " ")
}

// GenerateKey returns a new 2048-bit RSA DKIM key and its PKCS#8 PEM
// encoding. RSA, because ed25519 signatures (RFC 8463) are still ignored by
// many receivers; 2048 bits, the size RFC 8301 section 3.2 recommends.
func GenerateKey() (crypto.Signer, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("dkim key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("dkim key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// LoadKey reads a DKIM private key from a PEM file: PKCS#8 ("PRIVATE KEY",
// RSA or ed25519) or PKCS#1 ("RSA PRIVATE KEY"). RSA keys under 1024 bits
// are refused (RFC 8301 section 3.2: verifiers must not accept them).
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("dkim key %s: %w", path, err)
	}
	return key, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PRIVATE KEY or RSA PRIVATE KEY PEM block")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", block.Type, err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			if k.N.BitLen() < 1024 {
				return nil, fmt.Errorf("RSA key of %d bits is too short for DKIM", k.N.BitLen())
			}
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("unsupported key type %T (want RSA or ed25519)", key)
		}
	}
}
