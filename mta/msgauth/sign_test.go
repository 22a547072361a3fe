package msgauth

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

func TestSignLeavesForeignDomainsAlone(t *testing.T) {
	msg := plainMessage("alice@other.test")
	for _, s := range []*Signer{nil, {Selector: "mail", Key: key(t), Domains: []string{"a.test"}}} {
		out, err := s.Sign("other.test", msg)
		if err != nil || &out[0] != &msg[0] || len(out) != len(msg) {
			t.Errorf("Sign(other.test) by %+v = changed message, %v; want msg itself", s, err)
		}
	}
}

func TestSignWithoutKeyFails(t *testing.T) {
	s := &Signer{Selector: "mail", Domains: []string{"a.test"}}
	if _, err := s.Sign("a.test", plainMessage("alice@a.test")); err == nil || !strings.Contains(err.Error(), "a.test") {
		t.Fatalf("Sign without key: %v, want an error naming the domain", err)
	}
}

func TestSignTags(t *testing.T) {
	s := &Signer{Selector: "mail", Key: key(t), Domains: []string{"a.test"}}
	out, err := s.Sign("A.TEST.", plainMessage("alice@a.test"))
	if err != nil {
		t.Fatal(err)
	}
	fields, _ := splitHeader(out)
	if fields[0].name != "DKIM-Signature" {
		t.Fatalf("first field %q, want DKIM-Signature", fields[0].name)
	}
	sig := fields[0].value()
	for tag, want := range map[string]string{
		"v": "1", "a": "rsa-sha256", "d": "a.test", "s": "mail", "c": "relaxed/relaxed",
		"h": "From:From:To:Cc:Subject:Date:Message-ID:Reply-To:In-Reply-To:References:MIME-Version:Content-Type:Content-Transfer-Encoding",
	} {
		if got := tagValue(sig, tag); got != want {
			t.Errorf("%s=%q, want %q", tag, got, want)
		}
	}
}

// verifyOffline checks msg's single signature against the test key.
func verifyOffline(t *testing.T, msg []byte) error {
	t.Helper()
	rec, err := dkimKeyRecord(key(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(string) ([]string, error) { return []string{rec}, nil },
	})
	if err != nil || len(verifs) != 1 {
		t.Fatalf("dkim.Verify: %d verifications, %v", len(verifs), err)
	}
	return verifs[0].Err
}

func TestSignSurvivesOnlyHarmlessChanges(t *testing.T) {
	s := &Signer{Selector: "mail", Key: key(t), Domains: []string{"a.test"}}
	out, err := s.Sign("a.test", plainMessage("alice@a.test"))
	if err != nil {
		t.Fatal(err)
	}
	sigEnd := bytes.Index(out, []byte("From: Alice"))
	insert := func(field string) []byte {
		return append(append(append([]byte{}, out[:sigEnd]...), field...), out[sigEnd:]...)
	}
	tests := []struct {
		name string
		msg  []byte
		ok   bool
	}{
		{"as signed", out, true},
		{"trace field added in transit", insert("Received: from mx.a.test by mx.b.test\r\n"), true},
		{"header white space and case changed (relaxed)", bytes.Replace(out, []byte("Subject: lunch"), []byte("subject:   lunch "), 1), true},
		{"second From added (From is oversigned)", insert("From: ceo@bank.test\r\n"), false},
		{"absent Reply-To added (listed, so signed as empty)", insert("Reply-To: thief@evil.test\r\n"), false},
		{"Subject changed", bytes.Replace(out, []byte("lunch"), []byte("lunch!"), 1), false},
		{"body changed", bytes.Replace(out, []byte("tomorrow"), []byte("never"), 1), false},
	}
	for _, tc := range tests {
		if err := verifyOffline(t, tc.msg); (err == nil) != tc.ok {
			t.Errorf("%s: verification error %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// A 4 KiB message, the size of a short text mail with a few trace fields.
func BenchmarkSign(b *testing.B) {
	k, err := testKey()
	if err != nil {
		b.Fatal(err)
	}
	s := &Signer{Selector: "mail", Key: k, Domains: []string{"a.test"}}
	msg := plainMessage("alice@a.test")
	line := []byte("All work and no play makes Jack a dull boy.\r\n")
	for len(msg)+len(line) <= 4096 {
		msg = append(msg, line...)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign("a.test", msg); err != nil {
			b.Fatal(err)
		}
	}
}
