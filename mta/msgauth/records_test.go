package msgauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestRecords(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []crypto.Signer{key(t), edKey} {
		lines, err := Records("example.org", "mx.example.org", "mail", k.Public())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{} // owner and type -> data
		for _, l := range lines {
			rr, err := dns.NewRR(l)
			if err != nil || rr == nil {
				t.Fatalf("line %q does not parse as a zone line: %v", l, err)
			}
			h := rr.Header()
			if h.Class != dns.ClassINET || h.Ttl == 0 {
				t.Errorf("%q: class %d ttl %d", l, h.Class, h.Ttl)
			}
			switch rr := rr.(type) {
			case *dns.MX:
				got[h.Name+" MX"] = rr.Mx
			case *dns.TXT:
				for _, s := range rr.Txt {
					if len(s) > 255 {
						t.Errorf("%q: string of %d octets", l, len(s))
					}
				}
				got[h.Name+" TXT"] = strings.Join(rr.Txt, "")
			default:
				t.Errorf("unexpected record %q", l)
			}
		}
		want := map[string]string{
			"example.org. MX":         "mx.example.org.",
			"example.org. TXT":        "v=spf1 mx -all",
			"_dmarc.example.org. TXT": "v=DMARC1; p=quarantine",
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q", k, got[k], v)
			}
		}
		dkimRec := got["mail._domainkey.example.org. TXT"]
		if !strings.HasPrefix(dkimRec, "v=DKIM1; ") {
			t.Errorf("DKIM record %q", dkimRec)
		}
		p, err := base64.StdEncoding.DecodeString(tagValue(dkimRec, "p"))
		if err != nil {
			t.Fatalf("DKIM p=: %v", err)
		}
		switch pub := k.Public().(type) {
		case *rsa.PublicKey:
			parsed, err := x509.ParsePKIXPublicKey(p)
			if err != nil || !pub.Equal(parsed) || tagValue(dkimRec, "k") != "rsa" {
				t.Errorf("DKIM record %q does not hold the RSA key (%v)", dkimRec, err)
			}
		case ed25519.PublicKey:
			if !pub.Equal(ed25519.PublicKey(p)) || tagValue(dkimRec, "k") != "ed25519" {
				t.Errorf("DKIM record %q does not hold the ed25519 key", dkimRec)
			}
		}
	}
}

func TestRecordsRefusesBadInput(t *testing.T) {
	pub := key(t).Public()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		domain, hostname, selector string
		pub                        crypto.PublicKey
	}{
		{"", "mx.example.org", "mail", pub},
		{"example.org", "", "mail", pub},
		{"example.org", "mx.example.org", "", pub},
		{"exa mple.org", "mx.example.org", "mail", pub},
		{"example.org", "mx.example.org", "mail", ec.Public()},
		{"example.org", "mx.example.org", "mail", nil},
	}
	for _, tc := range tests {
		if _, err := Records(tc.domain, tc.hostname, tc.selector, tc.pub); err == nil {
			t.Errorf("Records(%q, %q, %q, %T) succeeded", tc.domain, tc.hostname, tc.selector, tc.pub)
		}
	}
}

func TestGenerateKeyLoadsBack(t *testing.T) {
	k, pemBytes, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if n := k.Public().(*rsa.PublicKey).N.BitLen(); n != 2048 {
		t.Errorf("%d-bit key, want 2048", n)
	}
	path := filepath.Join(t.TempDir(), "mail.key")
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Public().(*rsa.PublicKey).Equal(k.Public()) {
		t.Error("loaded key differs from the generated one")
	}
}

func TestLoadKey(t *testing.T) {
	rsaKey := key(t).(*rsa.PrivateKey)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not one")})
	tests := []struct {
		name string
		data []byte // nil: no file at all
		want crypto.PublicKey
	}{
		{"PKCS#8 RSA", pkcs8(rsaKey), rsaKey.Public()},
		{"PKCS#1 RSA after another block", append(cert, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})...), rsaKey.Public()},
		{"PKCS#8 ed25519", pkcs8(edKey), edKey.Public()},
		{"ECDSA is not a DKIM key", pkcs8(ecKey), nil},
		{"no PEM", []byte("hello"), nil},
		{"corrupt DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}), nil},
		{"missing file", nil, nil},
	}
	for _, tc := range tests {
		path := filepath.Join(t.TempDir(), "dkim.pem")
		if tc.data != nil {
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		k, err := LoadKey(path)
		if tc.want == nil {
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("%s: LoadKey = %v, want an error naming %s", tc.name, err, path)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.want) {
			t.Errorf("%s: loaded a different key", tc.name)
		}
	}
}
