package msgauth

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// FuzzVerify checks Verify on arbitrary messages and MAIL FROM addresses,
// against the DNS world of the tests: it refuses or defers with a reason,
// or returns the message with its claims of our authserv-id removed and
// exactly one field of ours on top, which names the From domain and reads
// back as ours.
func FuzzVerify(f *testing.F) {
	v := &Verifier{Resolver: world(f).Resolver(), AuthServID: ourID, RejectDMARC: true, Timeout: 5 * time.Second}
	s := &Signer{Selector: "mail", Key: key(f), Domains: []string{"a.test", "bank.test"}}
	// Signed with this run's key, so that the passing path is fuzzed too;
	// the committed corpus has messages signed by an older key.
	for _, d := range []string{"a.test", "bank.test"} {
		signed, err := s.Sign(d, plainMessage("alice@"+d))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(signed, "alice@"+d)
	}
	f.Fuzz(func(t *testing.T, msg []byte, mailFrom string) {
		verdict, err := v.Verify(context.Background(), net.ParseIP("127.0.0.1"), "mx.a.test", mailFrom, msg)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if verdict.Disposition != Deliver {
			if verdict.Reason == "" || verdict.Message != nil {
				t.Fatalf("Verify = %+v: a refusal needs a reason and no message", verdict)
			}
			return
		}
		out := verdict.delivered()
		stripped := stripAuthResults(msg, ourID)
		if !bytes.HasSuffix(out, stripped) {
			t.Fatalf("output does not end with the stripped message")
		}
		fields, _ := splitHeader(out)
		if len(fields) == 0 || len(fields[0].raw) != len(out)-len(stripped) {
			t.Fatalf("more than one field prepended:\n%q", out)
		}
		for i, fl := range fields {
			if claimsAuthServID(fl, ourID) != (i == 0) {
				t.Fatalf("field %d %q: claims our id %v", i, fl.raw, i != 0)
			}
		}
		if id, ok := authServIDOf(fields[0].value()); !ok || id != ourID {
			t.Fatalf("our field reads back as %q, %v", id, ok)
		}
		msgFields, _ := splitHeader(msg)
		from, err := fromDomain(msgFields)
		if err != nil {
			t.Fatalf("delivered a message without a From domain: %v", err)
		}
		if !strings.Contains(fields[0].value(), "header.from="+from) {
			t.Fatalf("our field %q does not name %s", fields[0].raw, from)
		}
	})
}

// FuzzSign checks Signer.Sign on arbitrary messages and domains: it leaves
// messages of other domains alone, and a message it signs gets one field on
// top that the DKIM library verifies.
func FuzzSign(f *testing.F) {
	s := &Signer{Selector: "mail", Key: key(f), Domains: []string{"a.test"}}
	rec, err := dkimKeyRecord(key(f).Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg []byte, domain string) {
		out, err := s.Sign(domain, msg)
		if !s.signs(domain) {
			if err != nil || !bytes.Equal(out, msg) {
				t.Fatalf("Sign(%q) of a foreign domain = %v, changed %v", domain, err, !bytes.Equal(out, msg))
			}
			return
		}
		if err != nil {
			return
		}
		if !bytes.HasSuffix(out, msg) {
			t.Fatalf("signed output does not end with the message")
		}
		sig, _ := splitHeader(out[:len(out)-len(msg)])
		if len(sig) != 1 || sig[0].name != "DKIM-Signature" {
			t.Fatalf("prepended %q, want one DKIM-Signature field", out[:len(out)-len(msg)])
		}
		verifs, err := dkim.VerifyWithOptions(bytes.NewReader(toCRLF(out)), &dkim.VerifyOptions{
			LookupTXT:        func(string) ([]string, error) { return []string{rec}, nil },
			MaxVerifications: 1,
		})
		if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) || len(verifs) == 0 {
			t.Fatalf("dkim.Verify: %d verifications, %v", len(verifs), err)
		}
		if verifs[0].Err != nil {
			t.Fatalf("our signature does not verify: %v\n%q", verifs[0].Err, out)
		}
	})
}

// FuzzMeasureHeader checks MeasureHeader against a slower reading of the
// header built from splitHeader.
func FuzzMeasureHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte) {
		fields, rest := splitHeader(msg)
		want := HeaderShape{Bytes: len(msg) - len(rest), Fields: len(fields)}
		for _, fl := range fields {
			lines := bytes.Count(fl.raw, []byte("\n"))
			if !bytes.HasSuffix(fl.raw, []byte("\n")) {
				lines++
			}
			want.MaxFieldLines = max(want.MaxFieldLines, lines)
		}
		header := bytes.ReplaceAll(msg[:want.Bytes], []byte("\r\n"), []byte("\n"))
		want.Control = bytes.ContainsFunc(header, func(r rune) bool {
			return r < ' ' && r != '\t' && r != '\n' || r == 0x7f
		})
		if got := MeasureHeader(msg); got != want {
			t.Fatalf("MeasureHeader(%q) = %+v, want %+v", msg, got, want)
		}
	})
}
