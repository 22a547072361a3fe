package msgauth

import (
	"context"
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
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"minimail/mta/dnstest"
)

func TestRecords(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []crypto.Signer{key(t), edKey} {
		recs, err := Records("example.org", "mx.example.org", "mail", k.Public())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{} // owner and type -> data
		for _, r := range recs {
			l := r.Zone()
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
				if r.Value != got[h.Name+" TXT"] {
					t.Errorf("%s: Value %q, zone line holds %q", h.Name, r.Value, got[h.Name+" TXT"])
				}
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
	}
	for _, tc := range tests {
		if _, err := Records(tc.domain, tc.hostname, tc.selector, tc.pub); err == nil {
			t.Errorf("Records(%q, %q, %q, %T) succeeded", tc.domain, tc.hostname, tc.selector, tc.pub)
		}
	}
}

func TestRecordsWithoutADKIMKeyHaveNoDKIMRecord(t *testing.T) {
	recs, err := Records("example.org", "mx.example.org", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []Kind
	for _, r := range recs {
		kinds = append(kinds, r.Kind)
	}
	if want := []Kind{KindMX, KindSPF, KindDMARC}; !slices.Equal(kinds, want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
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

func TestCompareJudgesWhatIsPublishedByMeaning(t *testing.T) {
	recs, err := Records("example.org", "mx.example.org", "mail", key(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	mx, spf, dkimRec, dmarc := recs[0], recs[1], recs[2], recs[3]
	small, err := rsa.GenerateKey(rand.Reader, 1024) // another key, quick to make
	if err != nil {
		t.Fatal(err)
	}
	other, err := dkimKeyRecord(&small.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := tagValue(dkimRec.Value, "p")
	tests := []struct {
		name       string
		rec        Record
		published  []string
		want       Status
		wantDetail string
	}{
		{"MX as printed", mx, []string{"10 mx.example.org."}, Published, ""},
		{"MX among others, another preference", mx, []string{"5 backup.example.net.", "20 MX.Example.Org."}, Published, ""},
		{"MX naming another host", mx, []string{"10 mail.example.net."}, Different, "the MX hosts are mail.example.net., not mx.example.org."},
		{"SPF as printed", spf, []string{"google-site-verification=abc", "v=spf1 mx -all"}, Published, ""},
		{"SPF in other case and spacing", spf, []string{"V=SPF1  MX -ALL"}, Published, ""},
		{"SPF absent among other TXT", spf, []string{"google-site-verification=abc", "v=spf10 mx"}, Missing, "none of the 2 TXT records"},
		{"SPF twice", spf, []string{"v=spf1 mx -all", "v=spf1 a -all"}, Different, "2 v=spf1 records"},
		{"SPF with other terms", spf, []string{"v=spf1 a -all"}, Different, `published "v=spf1 a -all", printed "v=spf1 mx -all"`},
		{"DKIM as printed", dkimRec, []string{dkimRec.Value}, Published, ""},
		{"DKIM with spaces in p= and no v=", dkimRec, []string{"k=rsa; p=" + p[:100] + " " + p[100:] + ";"}, Published, ""},
		{"DKIM with another key", dkimRec, []string{other}, Different, "another public key"},
		{"DKIM revoked", dkimRec, []string{"v=DKIM1; p="}, Different, "revoked"},
		{"DKIM of another key type", dkimRec, []string{"v=DKIM1; k=ed25519; p=" + p}, Different, "published k=ed25519, printed k=rsa"},
		{"DKIM record that is no key record", dkimRec, []string{"hello"}, Different, "not a DKIM key record"},
		{"DMARC as printed", dmarc, []string{"v=DMARC1; p=quarantine"}, Published, ""},
		{"DMARC stricter, with reports", dmarc, []string{"v=DMARC1; p=reject; rua=mailto:d@example.org"}, Published, ""},
		{"DMARC weaker", dmarc, []string{"v=DMARC1; p=none"}, Different, "published p=none, printed p=quarantine"},
		{"DMARC with a bad policy", dmarc, []string{"v=DMARC1; p=strict"}, Different, `p="strict"`},
		{"DMARC twice", dmarc, []string{"v=DMARC1; p=reject", "v=DMARC1; p=quarantine"}, Different, "2 v=DMARC1 records"},
		{"DMARC whose first tag is not v", dmarc, []string{"p=quarantine; v=DMARC1"}, Missing, "starts with v=DMARC1"},
		{"nothing at all", dmarc, nil, Missing, "no TXT record at _dmarc.example.org."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, detail := compare(tc.rec, tc.published)
			if got != tc.want || !strings.Contains(detail, tc.wantDetail) || (got == Published) != (detail == "") {
				t.Errorf("compare = %v %q, want %v with %q", got, detail, tc.want, tc.wantDetail)
			}
		})
	}
}

func TestCheckLooksUpThroughTheResolverItIsGiven(t *testing.T) {
	recs, err := Records("example.org", "mx.example.org", "mail", key(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.Start(t, recs[0].Zone(), recs[2].Zone(), `_dmarc.example.org. 60 IN TXT "v=DMARC1; " "p=quarantine"`)
	srv.Fail("broken.example.org.")
	broken := Record{KindSPF, "broken.example.org.", "TXT", "v=spf1 mx -all"}
	want := []Status{Published, Missing, Published, Published, Unknown}
	for i, rec := range append(recs, broken) {
		f := Check(context.Background(), srv.Resolver(), rec)
		if f.Status != want[i] || f.Record != rec {
			t.Errorf("%s %s: %v %q, want %v", rec.Name, rec.Kind, f.Status, f.Detail, want[i])
		}
	}
}

// FuzzCompare feeds compare any published text for each kind of record: it
// never panics, and says how whatever it does not call published differs.
func FuzzCompare(f *testing.F) {
	recs, err := Records("example.org", "mx.example.org", "mail", key(f).Public())
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range recs {
		f.Add(r.Value, "")
	}
	f.Add("v=DKIM1; p=;;", "v=DMARC1;p")
	f.Add("=", "v==DMARC1; p=reject")
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, rec := range recs {
			for _, published := range [][]string{{a}, {a, b}} {
				status, detail := compare(rec, published)
				if status < Published || status > Unknown || status != Published && detail == "" {
					t.Fatalf("compare(%s, %q) = %v %q", rec.Kind, published, status, detail)
				}
			}
		}
	})
}
