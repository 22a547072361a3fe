package msgauth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// recordTTL is the TTL of the published records: an hour lets a mistake be
// fixed the same day without flooding resolvers.
const recordTTL = 3600

// Kind says what a record is for, and so how Check compares what is
// published with it.
type Kind string

const (
	KindMX    Kind = "MX"
	KindSPF   Kind = "SPF"
	KindDKIM  Kind = "DKIM"
	KindDMARC Kind = "DMARC"
)

// Record is one DNS record to publish.
type Record struct {
	Kind Kind
	Name string // absolute: "mail._domainkey.example.org."
	Type string // "MX" or "TXT"
	// Value is the record data as one piece: "10 mx.example.org." for MX,
	// the whole text, unquoted and unsplit, for TXT.
	Value string
}

// Zone is the record as a zone-file line; TXT text is written as quoted
// strings of at most 255 octets (RFC 1035 section 3.3.14), which the
// receiver joins.
func (r Record) Zone() string {
	data := r.Value
	if r.Type == "TXT" {
		data = txtStrings(r.Value)
	}
	return fmt.Sprintf("%s %d IN %s %s", r.Name, recordTTL, r.Type, data)
}

// Records returns the records to publish for domain, whose mail server is
// hostname and whose DKIM key pub is published under selector:
//
//   - MX 10 hostname.
//   - SPF "v=spf1 mx -all" (RFC 7208): only the MX hosts send for the domain.
//   - DKIM "v=DKIM1; k=rsa; p=..." at selector._domainkey (RFC 6376 section
//     3.6.1).
//   - DMARC "v=DMARC1; p=quarantine" at _dmarc (RFC 7489 section 6.3).
//     Everything we send is signed and leaves from the MX, so a failure is
//     a forgery and quarantine protects the domain from the start; reject
//     is the next step once the operator has seen that forwarding and
//     mailing lists do not trip it, none would protect nothing. No rua=: the
//     aggregate reports would arrive at a mailbox nobody reads; add one
//     pointing at a real mailbox to receive them.
//
// Without a DKIM key (pub nil: the server does not sign) there is no DKIM
// record. hostname also needs A/AAAA records (and a matching PTR), which
// depend on the machine's addresses and are not included.
func Records(domain, hostname, selector string, pub crypto.PublicKey) ([]Record, error) {
	names := []struct{ what, name string }{{"domain", domain}, {"hostname", hostname}}
	if pub != nil {
		names = append(names, struct{ what, name string }{"selector", selector})
	}
	for _, n := range names {
		if !isHostName(n.name) {
			return nil, fmt.Errorf("dns records: %s %q is not a domain name", n.what, n.name)
		}
	}
	d, h := dns.Fqdn(domain), dns.Fqdn(hostname)
	recs := []Record{
		{KindMX, d, "MX", "10 " + h},
		{KindSPF, d, "TXT", "v=spf1 mx -all"},
	}
	if pub != nil {
		key, err := dkimKeyRecord(pub)
		if err != nil {
			return nil, fmt.Errorf("dns records for %s: %w", domain, err)
		}
		recs = append(recs, Record{KindDKIM, dns.Fqdn(selector) + "_domainkey." + d, "TXT", key})
	}
	return append(recs, Record{KindDMARC, "_dmarc." + d, "TXT", "v=DMARC1; p=quarantine"}), nil
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

// Status is what Check found for one record.
type Status int

const (
	// Published: what DNS answers means what the record says.
	Published Status = iota
	// Missing: no record of the kind at the name.
	Missing
	// Different: a record of the kind is there and says something else.
	Different
	// Unknown: the lookup failed (SERVFAIL, a timeout), so nothing is known.
	Unknown
)

func (s Status) String() string {
	switch s {
	case Published:
		return "ok"
	case Missing:
		return "missing"
	case Different:
		return "different"
	}
	return "lookup failed"
}

// Finding is Check's answer for one record. Detail says what is missing,
// how what is published differs, or why the lookup failed.
type Finding struct {
	Record Record
	Status Status
	Detail string
}

// RecordResolver is what Check needs of a resolver; *net.Resolver has it.
type RecordResolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Check looks up what is published at rec's name and compares it with rec
// by what it means to a receiver, not letter by letter:
//
//   - MX: hostname is among the domain's MX hosts (other hosts and the
//     preference are the operator's choice).
//   - SPF: the domain has one v=spf1 record (RFC 7208 section 4.5: two are a
//     permerror) with the same terms.
//   - DKIM: a key record at the name has the same k= and p= (RFC 6376
//     section 3.6.1; whitespace in p= does not count).
//   - DMARC: the one v=DMARC1 record (RFC 7489 section 6.6.3) asks for the
//     same policy or a stricter one: p=reject where p=quarantine is printed
//     is the next step, not a mistake.
func Check(ctx context.Context, r RecordResolver, rec Record) Finding {
	var published []string
	var err error
	if rec.Type == "MX" {
		var mxs []*net.MX
		mxs, err = r.LookupMX(ctx, rec.Name)
		for _, mx := range mxs {
			published = append(published, fmt.Sprintf("%d %s", mx.Pref, dns.Fqdn(mx.Host)))
		}
	} else {
		published, err = r.LookupTXT(ctx, rec.Name)
	}
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return Finding{rec, Missing, fmt.Sprintf("no %s record at %s", rec.Type, rec.Name)}
	case err != nil:
		return Finding{rec, Unknown, err.Error()}
	}
	status, detail := compare(rec, published)
	return Finding{rec, status, detail}
}

// compare judges the records published at rec's name (MX as "PREF HOST.",
// TXT as the joined text) against rec.
func compare(rec Record, published []string) (Status, string) {
	if len(published) == 0 {
		return Missing, fmt.Sprintf("no %s record at %s", rec.Type, rec.Name)
	}
	switch rec.Kind {
	case KindMX:
		return compareMX(rec, published)
	case KindSPF:
		return compareSPF(rec, published)
	case KindDKIM:
		return compareDKIM(rec, published)
	case KindDMARC:
		return compareDMARC(rec, published)
	}
	return Unknown, fmt.Sprintf("no comparison for %s records", rec.Kind)
}

func compareMX(rec Record, published []string) (Status, string) {
	_, want, _ := strings.Cut(rec.Value, " ")
	var hosts []string
	for _, p := range published {
		_, host, _ := strings.Cut(p, " ")
		if strings.EqualFold(dns.Fqdn(host), want) {
			return Published, ""
		}
		hosts = append(hosts, host)
	}
	return Different, fmt.Sprintf("the MX hosts are %s, not %s", strings.Join(hosts, ", "), want)
}

func compareSPF(rec Record, published []string) (Status, string) {
	var spf []string
	for _, p := range published {
		// RFC 7208 section 4.5: exactly "v=spf1", then a space or the end.
		if f := strings.Fields(p); len(f) > 0 && strings.EqualFold(f[0], "v=spf1") {
			spf = append(spf, p)
		}
	}
	switch len(spf) {
	case 0:
		return Missing, fmt.Sprintf("none of the %d TXT records at %s is a v=spf1 record", len(published), rec.Name)
	case 1:
	default:
		return Different, fmt.Sprintf("%d v=spf1 records, which RFC 7208 section 4.5 makes a permerror: keep one", len(spf))
	}
	if !slices.Equal(strings.Fields(strings.ToLower(spf[0])), strings.Fields(strings.ToLower(rec.Value))) {
		return Different, fmt.Sprintf("published %q, printed %q", spf[0], rec.Value)
	}
	return Published, ""
}

func compareDKIM(rec Record, published []string) (Status, string) {
	want, _ := parseTags(rec.Value)
	wantK, wantP := dkimKeyType(want), stripSpace(want["p"])
	detail := ""
	for _, p := range published {
		tags, ok := parseTags(p)
		_, hasP := tags["p"]
		switch {
		case !ok || !hasP || tags["v"] != "" && tags["v"] != "DKIM1":
			detail = fmt.Sprintf("published %q is not a DKIM key record (RFC 6376 section 3.6.1)", p)
		case dkimKeyType(tags) != wantK:
			detail = fmt.Sprintf("published k=%s, printed k=%s", dkimKeyType(tags), wantK)
		case stripSpace(tags["p"]) == "":
			detail = "the published key is revoked (empty p=)"
		case stripSpace(tags["p"]) != wantP:
			detail = "the published p= is another public key than the one printed"
		default:
			return Published, ""
		}
	}
	return Different, detail
}

// dkimKeyType is k=, which defaults to rsa (RFC 6376 section 3.6.1).
func dkimKeyType(tags map[string]string) string {
	if k := tags["k"]; k != "" {
		return strings.ToLower(k)
	}
	return "rsa"
}

// dmarcStrictness orders the policies of p= (RFC 7489 section 6.3); false
// for anything else.
func dmarcStrictness(p string) (int, bool) {
	switch strings.ToLower(p) {
	case "none":
		return 0, true
	case "quarantine":
		return 1, true
	case "reject":
		return 2, true
	}
	return 0, false
}

func compareDMARC(rec Record, published []string) (Status, string) {
	var records []map[string]string
	for _, p := range published {
		// RFC 7489 section 6.6.3: only records starting with v=DMARC1 count.
		first, _, _ := strings.Cut(p, ";")
		name, value, _ := strings.Cut(first, "=")
		if tags, ok := parseTags(p); ok && strings.TrimSpace(name) == "v" && strings.TrimSpace(value) == "DMARC1" {
			records = append(records, tags)
		}
	}
	switch len(records) {
	case 0:
		return Missing, fmt.Sprintf("none of the %d TXT records at %s starts with v=DMARC1", len(published), rec.Name)
	case 1:
	default:
		return Different, fmt.Sprintf("%d v=DMARC1 records, so receivers apply none (RFC 7489 section 6.6.3): keep one", len(records))
	}
	want, _ := parseTags(rec.Value)
	got := records[0]["p"]
	have, known := dmarcStrictness(got)
	printed, _ := dmarcStrictness(want["p"])
	switch {
	case !known:
		return Different, fmt.Sprintf("published p=%q is not none, quarantine or reject", got)
	case have < printed:
		return Different, fmt.Sprintf("published p=%s, printed p=%s", got, want["p"])
	}
	return Published, ""
}

// parseTags reads a tag list, "v=DKIM1; k=rsa; p=..." (RFC 6376 section
// 3.2, which DMARC's records share): tag=value pairs separated by ';',
// whitespace around names and values not counting. A pair without '=', an
// empty name or a name given twice makes the list invalid.
func parseTags(s string) (map[string]string, bool) {
	tags := map[string]string{}
	for _, spec := range strings.Split(s, ";") {
		if strings.TrimSpace(spec) == "" {
			continue // the optional ';' at the end
		}
		name, value, found := strings.Cut(spec, "=")
		name = strings.TrimSpace(name)
		if _, dup := tags[name]; !found || name == "" || dup {
			return nil, false
		}
		tags[name] = strings.TrimSpace(value)
	}
	return tags, true
}

// stripSpace removes the whitespace base64 in p= may carry (RFC 6376
// section 3.6.1).
func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}
