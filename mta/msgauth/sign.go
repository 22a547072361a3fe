package msgauth

import (
	"crypto"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// signedHeaders are the fields covered by our signatures: the ones RFC 6376
// section 5.4.1 recommends, minus the trace fields that change in transit.
// Fields listed but absent from a message are signed as empty, so that they
// cannot be added later without breaking the signature. From appears twice
// ("oversigned", RFC 6376 section 8.15): a second From added in transit, the
// classic way to show a reader another sender, breaks the signature too.
var signedHeaders = []string{
	"From", "From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding",
}

// Signer DKIM-signs (RFC 6376) outgoing messages for the local domains.
type Signer struct {
	Selector string        // the s= tag: the key is published at Selector._domainkey.<domain>
	Key      crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
	Domains  []string      // local domains it may sign for
}

// Sign returns msg with a DKIM-Signature field prepended, d=domain,
// relaxed/relaxed canonicalization (RFC 6376 section 3.4, which survives the
// whitespace and header-case changes relays make). A domain that is not one
// of Domains, or a nil Signer, returns msg unchanged: we only vouch for our
// own domains. The signature covers msg as sent on the wire, CRLF line
// endings; a message with bare LF endings gets a field with LF endings.
func (s *Signer) Sign(domain string, msg []byte) ([]byte, error) {
	if s == nil || !s.signs(domain) {
		return msg, nil
	}
	if s.Key == nil || s.Selector == "" {
		return nil, fmt.Errorf("dkim sign for %s: no key or selector configured", domain)
	}
	opts := &dkim.SignOptions{
		Domain:                 strings.ToLower(strings.TrimSuffix(domain, ".")),
		Selector:               s.Selector,
		Signer:                 s.Key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             signedHeaders,
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
	out := make([]byte, 0, len(sig)+len(msg))
	out = append(out, sig...)
	return append(out, msg...), nil
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
