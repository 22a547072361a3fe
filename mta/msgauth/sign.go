package msgauth

import (
	"crypto"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// signedHeaders are the fields covered by our signatures: the ones RFC 6376
// section 5.4.1 recommends, minus the trace fields that change in transit.
// Each is oversigned (RFC 6376 section 8.15): h= names it once more than the
// message has it, and a verifier finds nothing for the extra name (section
// 5.4.2), so a field of any of these names added anywhere in transit breaks
// the signature. That is what stops a second From, To or Subject, placed
// above ours where a reader shows it, from riding on our signature; and a
// field absent when signing is named once, so that adding it breaks too.
var signedHeaders = []string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding",
}

// headerKeys returns the h= list for a message with these fields: each of
// signedHeaders as many times as it occurs, plus once. Occurrences are
// counted with the library's reading of field names, so that none is missed.
func headerKeys(fields []field) []string {
	count := make(map[string]int, len(signedHeaders))
	for _, f := range fields {
		count[strings.ToLower(f.dkimName())]++
	}
	var keys []string
	for _, name := range signedHeaders {
		for range count[strings.ToLower(name)] + 1 {
			keys = append(keys, name)
		}
	}
	return keys
}

// Signer DKIM-signs (RFC 6376) outgoing messages for the local domains.
type Signer struct {
	Selector string        // the s= tag: the key is published at Selector._domainkey.<domain>
	Key      crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
	Domains  []string      // local domains it may sign for
}

// Sign returns msg with a DKIM-Signature field prepended (see Signature).
func (s *Signer) Sign(domain string, msg []byte) ([]byte, error) {
	sig, err := s.Signature(domain, msg)
	if err != nil || len(sig) == 0 {
		return msg, err
	}
	return append(sig, msg...), nil
}

// Signature returns the DKIM-Signature field for msg, d=domain,
// relaxed/relaxed canonicalization (RFC 6376 section 3.4, which survives the
// whitespace and header-case changes relays make), to be put in front of
// it. A domain that is not one of Domains, or a nil Signer, gets no field:
// we only vouch for our own domains. The signature covers msg as sent on
// the wire, CRLF line endings; a message with bare LF endings gets a field
// with LF endings.
func (s *Signer) Signature(domain string, msg []byte) ([]byte, error) {
	if s == nil || !s.signs(domain) {
		return nil, nil
	}
	if s.Key == nil || s.Selector == "" {
		return nil, fmt.Errorf("dkim sign for %s: no key or selector configured", domain)
	}
	if startsWithContinuation(msg) {
		return nil, fmt.Errorf("dkim sign for %s: %w", domain, errContinuationFirst)
	}
	// Bound the library's work before it starts (see MaxHeaderBytes).
	shape := MeasureHeader(msg)
	if err := shape.check(); err != nil {
		return nil, fmt.Errorf("dkim sign for %s: %w", domain, err)
	}
	fields, _ := splitHeader(msg)
	keys := headerKeys(fields)
	if err := checkFieldScans(shape.Fields, len(keys)); err != nil {
		return nil, fmt.Errorf("dkim sign for %s: %w", domain, err)
	}
	opts := &dkim.SignOptions{
		Domain:                 strings.ToLower(strings.TrimSuffix(domain, ".")),
		Selector:               s.Selector,
		Signer:                 s.Key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             keys,
	}
	signer, err := dkim.NewSigner(opts)
	if err != nil {
		return nil, fmt.Errorf("dkim sign for %s: %w", domain, err)
	}
	if _, err := signer.Write(toCRLF(msg)); err != nil {
		signer.Close()
		return nil, fmt.Errorf("dkim sign for %s: %w", domain, err)
	}
	if err := signer.Close(); err != nil {
		return nil, fmt.Errorf("dkim sign for %s: %w", domain, err)
	}
	sig := signer.Signature()
	if lineEnding(msg) == "\n" {
		sig = strings.ReplaceAll(sig, "\r\n", "\n")
	}
	return []byte(sig), nil
}

func (s *Signer) signs(domain string) bool {
	domain = strings.TrimSuffix(domain, ".")
	for _, d := range s.Domains {
		if strings.EqualFold(strings.TrimSuffix(d, "."), domain) {
			return true
		}
	}
	return false
}

// toCRLF returns msg with every bare LF written as CRLF, the canonical form
// that DKIM hashes (RFC 6376 section 3.4); msg itself if nothing changes.
func toCRLF(msg []byte) []byte {
	bare := 0
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			bare++
		}
	}
	if bare == 0 {
		return msg
	}
	out := make([]byte, 0, len(msg)+bare)
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}
