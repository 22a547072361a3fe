package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"minimail/mta/dnstest"
	"minimail/mta/msgauth"
	"minimail/mta/web"
)

// siteRecords is what `minimail dns` prints for the site cfg, as records.
func siteRecords(t *testing.T, cfg string) []msgauth.Record {
	t.Helper()
	key, err := msgauth.LoadKey(filepath.Join(filepath.Dir(cfg), "dkim", "mail.key"))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := msgauth.Records("example.test", "mx.example.test", "mail", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestDNSPrintsEachRecordInZoneSyntaxAndForAWebPanel(t *testing.T) {
	cfg := initSite(t)
	r := minimail(t, "", "--config", cfg, "dns")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, rec := range siteRecords(t, cfg) {
		zone, panel := 0, 0
		for _, line := range strings.Split(r.stdout, "\n") {
			if line == rec.Zone() {
				zone++
				if _, err := dns.NewRR(line); err != nil {
					t.Errorf("zone line %q: %v", line, err)
				}
			}
			if name, rest, ok := strings.Cut(line, " / "); ok && name == strings.TrimSuffix(rec.Name, ".") && strings.HasPrefix(rest, rec.Type+" / ") {
				panel++
				value := strings.TrimPrefix(rest, rec.Type+" / ")
				if want := strings.TrimSuffix(rec.Value, "."); value != want {
					t.Errorf("panel value of %s %s: %q, want %q, whole and unquoted", rec.Name, rec.Type, value, want)
				}
			}
		}
		if zone != 1 || panel != 1 {
			t.Errorf("%s %s printed %d times in zone syntax and %d times for a panel, want once each:\n%s", rec.Name, rec.Kind, zone, panel, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, `" "`) {
		t.Errorf("the zone line of the 2048-bit DKIM key is not split into strings of 255 octets:\n%s", r.stdout)
	}
}

// TestDNSCheckSaysOfEachRecordOkMissingOrDifferent publishes the site's
// records on a loopback DNS server named as relay.dns, but for the SPF
// record, which is missing, and the DKIM key record, which holds another key.
func TestDNSCheckSaysOfEachRecordOkMissingOrDifferent(t *testing.T) {
	cfg := initSite(t)
	recs := siteRecords(t, cfg)
	mx, spf, dkimRec, dmarc := recs[0], recs[1], recs[2], recs[3]
	other, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
	srv := dnstest.Start(t, mx.Zone(), dmarc.Zone(),
		`example.test. 3600 IN TXT "google-site-verification=abc"`,
		fmt.Sprintf(`%s 3600 IN TXT "v=DKIM1; k=rsa; p=%s"`, dkimRec.Name, base64.StdEncoding.EncodeToString(der)))
	appendConfig(t, cfg, "", `dns       = ""`, fmt.Sprintf("dns = %q", srv.Addr))

	r := minimail(t, "", "--config", cfg, "dns", "--check")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"MX     example.test. MX: ok\n",
		"SPF    example.test. TXT: missing: none of the 1 TXT records at example.test. is a v=spf1 record\n",
		"DKIM   mail._domainkey.example.test. TXT: different: the published p= is another public key than the one printed\n",
		"DMARC  _dmarc.example.test. TXT: ok\n",
		"; looking up through " + srv.Addr + " (relay.dns)\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dns --check output lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "2 of 4 records are not published") {
		t.Errorf("stderr %q does not count the records at fault", r.stderr)
	}

	// All published, the DKIM key as two strings the resolver joins.
	good := dnstest.Start(t, mx.Zone(), spf.Zone(), dkimRec.Zone(), dmarc.Zone())
	appendConfig(t, cfg, "", fmt.Sprintf("dns = %q", srv.Addr), fmt.Sprintf("dns = %q", good.Addr))
	r = minimail(t, "", "--config", cfg, "dns", "--check")
	if r.code != 0 || strings.Count(r.stdout, ": ok\n") != 4 {
		t.Fatalf("all published: exit %d, want 0 and four ok: %s%s", r.code, r.stdout, r.stderr)
	}
}

func TestDNSWithoutADKIMKeyPrintsTheOtherRecords(t *testing.T) {
	cfg := initSite(t)
	appendConfig(t, cfg, "", `[dkim]
selector = "mail"
key      = "dkim/mail.key"
`, "")
	r := minimail(t, "", "--config", cfg, "dns")
	if r.code != 0 || strings.Contains(r.stdout, "_domainkey") || !strings.Contains(r.stdout, "_dmarc.example.test / TXT / v=DMARC1; p=quarantine") {
		t.Fatalf("exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}

// dnsOutput runs `minimail dns` on cfg and returns what it printed.
func dnsOutput(t *testing.T, cfg string) string {
	t.Helper()
	r := minimail(t, "", "--config", cfg, "dns")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	return r.stdout
}

// printedOnce checks that rec is printed once as a zone line that parses
// and once for a panel (name / type / value).
func printedOnce(t *testing.T, out, zone, panel string) {
	t.Helper()
	zones, panels := 0, 0
	for _, line := range strings.Split(out, "\n") {
		if line == zone {
			zones++
			if _, err := dns.NewRR(line); err != nil {
				t.Errorf("zone line %q: %v", line, err)
			}
		}
		if line == panel {
			panels++
		}
	}
	if zones != 1 || panels != 1 {
		t.Errorf("%q printed %d times, %q %d times, want once each:\n%s", zone, zones, panel, panels, out)
	}
}

func TestDNSPrintsTheRecordsMailClientsAndSendersLookFor(t *testing.T) {
	cfg := initSite(t)
	// init's trial ports, and no https.
	out := dnsOutput(t, cfg)
	for _, rec := range [][2]string{
		{"_submissions._tcp.example.test. 3600 IN SRV 0 1 2465 mx.example.test.", "_submissions._tcp.example.test / SRV / 0 1 2465 mx.example.test"},
		{"_submission._tcp.example.test. 3600 IN SRV 10 1 2587 mx.example.test.", "_submission._tcp.example.test / SRV / 10 1 2587 mx.example.test"},
		{"_pop3s._tcp.example.test. 3600 IN SRV 0 1 2995 mx.example.test.", "_pop3s._tcp.example.test / SRV / 0 1 2995 mx.example.test"},
		{"_pop3._tcp.example.test. 3600 IN SRV 10 1 2110 mx.example.test.", "_pop3._tcp.example.test / SRV / 10 1 2110 mx.example.test"},
		{"_imaps._tcp.example.test. 3600 IN SRV 0 0 0 .", "_imaps._tcp.example.test / SRV / 0 0 0 ."},
		{"_imap._tcp.example.test. 3600 IN SRV 0 0 0 .", "_imap._tcp.example.test / SRV / 0 0 0 ."},
		{`_smtp._tls.example.test. 3600 IN TXT "v=TLSRPTv1; rua=mailto:postmaster@example.test"`, "_smtp._tls.example.test / TXT / v=TLSRPTv1; rua=mailto:postmaster@example.test"},
	} {
		printedOnce(t, out, rec[0], rec[1])
	}
	if strings.Contains(out, " CNAME ") || strings.Contains(out, "_mta-sts.example.test") || !strings.Contains(out, "listen.https is off") {
		t.Errorf("with listen.https off, the names it would serve are printed, or their absence not explained:\n%s", out)
	}

	// listen.pop3 off: its SRV record says "not offered".
	appendConfig(t, cfg, "", `pop3        = "127.0.0.1:2110"`, "pop3 = \"\"\nhttps = \"127.0.0.1:2443\"")
	out = dnsOutput(t, cfg)
	printedOnce(t, out, "_pop3._tcp.example.test. 3600 IN SRV 0 0 0 .", "_pop3._tcp.example.test / SRV / 0 0 0 .")
	for _, n := range []string{"autoconfig", "autodiscover", "mta-sts"} {
		printedOnce(t, out, n+".example.test. 3600 IN CNAME mx.example.test.", n+".example.test / CNAME / mx.example.test")
	}
	id := web.Policy{Mode: "testing", MaxAge: web.DefaultMaxAge}.ID("mx.example.test")
	printedOnce(t, out, `_mta-sts.example.test. 3600 IN TXT "v=STSv1; id=`+id+`"`, "_mta-sts.example.test / TXT / v=STSv1; id="+id)

	// Another policy, another id: senders fetch the policy again.
	appendConfig(t, cfg, "[mta_sts]\nmode = \"enforce\"\n", "", "")
	if out2 := dnsOutput(t, cfg); strings.Contains(out2, id) || !strings.Contains(out2, "v=STSv1; id="+web.Policy{Mode: "enforce"}.ID("mx.example.test")) {
		t.Errorf("the _mta-sts id did not follow mta_sts.mode = enforce:\n%s", out2)
	}
}
