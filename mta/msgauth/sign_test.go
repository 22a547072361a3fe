package msgauth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// A signature prepended to a message starting with WSP would take the first
// line for its own continuation, and break.
func TestSignRefusesAContinuationLineFirst(t *testing.T) {
	s := &Signer{Selector: "mail", Key: key(t), Domains: []string{"a.test"}}
	msg := append([]byte(" x\r\n"), plainMessage("alice@a.test")...)
	if out, err := s.Sign("a.test", msg); !errors.Is(err, errContinuationFirst) {
		t.Fatalf("Sign = %v\n%s\nwant %v", err, out, errContinuationFirst)
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
		"h": "From:From:To:To:Cc:Subject:Subject:Date:Date:Message-ID:Message-ID:Reply-To:In-Reply-To:References:" +
			"MIME-Version:MIME-Version:Content-Type:Content-Type:Content-Transfer-Encoding",
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

func TestSignNamesEachFieldOnceMoreThanItOccurs(t *testing.T) {
	tests := []struct {
		name   string
		header []string
		want   string // h= after From:From:
	}{
		{"one of each", []string{"From: a@a.test", "To: b@b.test", "To: c@b.test", "Cc: d@b.test", "Subject: x"},
			"To:To:To:Cc:Cc:Subject:Subject:Date:Message-ID:Reply-To:In-Reply-To:References:MIME-Version:Content-Type:Content-Transfer-Encoding"},
		{"names in any case, with WSP before the colon", []string{"From: a@a.test", "SUBJECT : x", "subject: y"},
			"To:Cc:Subject:Subject:Subject:Date:Message-ID:Reply-To:In-Reply-To:References:MIME-Version:Content-Type:Content-Transfer-Encoding"},
		// The library reads the name up to the first colon, even on a
		// continuation line; so must the count, or the field is signed
		// without its extra name.
		{"colon on a continuation line", []string{"From: a@a.test", "Subject\r\n : x"},
			"To:Cc:Subject:Subject:Date:Message-ID:Reply-To:In-Reply-To:References:MIME-Version:Content-Type:Content-Transfer-Encoding"},
	}
	s := &Signer{Selector: "mail", Key: key(t), Domains: []string{"a.test"}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := s.Sign("a.test", message("hi\r\n", tc.header...))
			if err != nil {
				t.Fatal(err)
			}
			fields, _ := splitHeader(out)
			if got := tagValue(fields[0].value(), "h"); got != "From:From:"+tc.want {
				t.Errorf("h=%s\nwant From:From:%s", got, tc.want)
			}
		})
	}
}

// prependField returns msg with field placed first, above the signature,
// where a reader showing the first of two fields shows it.
func prependField(msg []byte, field string) []byte {
	return append([]byte(field+"\r\n"), msg...)
}

// TestSignOversignedFieldsCannotBeAdded is the prepend attack of RFC 6376
// section 8.15: a field added above ours must break the signature, whether
// the message had the field or not, for our verifier and for dkimpy.
func TestSignOversignedFieldsCannotBeAdded(t *testing.T) {
	s := &Signer{Selector: "mail", Key: key(t), Domains: []string{"a.test"}}
	signed, err := s.Sign("a.test", plainMessage("alice@a.test"))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyOffline(t, signed); err != nil {
		t.Fatalf("as signed: %v", err)
	}
	msgs := [][]byte{signed}
	for _, name := range signedHeaders {
		forged := prependField(signed, name+": forged@evil.test")
		if err := verifyOffline(t, forged); err == nil {
			t.Errorf("a %s field added above ours still verifies", name)
		}
		msgs = append(msgs, forged)
	}
	got := dkimpyVerify(t, msgs)
	if got[0] != "pass" {
		t.Errorf("dkimpy, as signed: %s", got[0])
	}
	for i, name := range signedHeaders {
		if got[i+1] != "fail" {
			t.Errorf("dkimpy: a %s field added above ours gives %s, want fail", name, got[i+1])
		}
	}
}

// dkimpyVerify runs testdata/dkimpy_verify.py on msgs, the test key
// published at mail._domainkey.a.test, and returns its verdict for each,
// "pass" or "fail". It skips the test when python3-dkim is missing, unless
// MINIMAIL_REQUIRE_CLIENTS is set (CI sets it and installs the package).
func dkimpyVerify(t *testing.T, msgs [][]byte) []string {
	t.Helper()
	// A python3 of a version manager, earlier on PATH, does not see the
	// Debian package's modules; the system one does.
	python := ""
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import dkim").Run() == nil {
			python = p
			break
		}
	}
	if python == "" {
		if os.Getenv("MINIMAIL_REQUIRE_CLIENTS") != "" {
			t.Fatal("python3-dkim not installed")
		}
		t.Skip("python3-dkim not installed")
	}
	rec, err := dkimKeyRecord(key(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	args := []string{filepath.Join("testdata", "dkimpy_verify.py"), "mail._domainkey.a.test", rec}
	dir := t.TempDir()
	for i, m := range msgs {
		path := filepath.Join(dir, fmt.Sprintf("%d.eml", i))
		if err := os.WriteFile(path, m, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, path)
	}
	cmd := exec.Command(python, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, stderr.Bytes())
	}
	verdicts := strings.Fields(string(out))
	if len(verdicts) != len(msgs) {
		t.Fatalf("dkimpy gave %d verdicts for %d messages:\n%s", len(verdicts), len(msgs), out)
	}
	return verdicts
}

func TestSignRefusesHeadersTooCostlyToSign(t *testing.T) {
	folded := func(lines int) string {
		return "X-Long: start" + strings.Repeat("\r\n x", lines-1)
	}
	many := func(name string, n int) []string {
		var h []string
		for range n {
			h = append(h, name+": x@b.test")
		}
		return h
	}
	tests := []struct {
		name   string
		header []string
		ok     bool
	}{
		{"a field folded over MaxFieldLines lines", []string{"From: a@a.test", folded(MaxFieldLines)}, true},
		{"a field folded over one line more", []string{"From: a@a.test", folded(MaxFieldLines + 1)}, false},
		{"a header section of MaxHeaderBytes", []string{"From: a@a.test", "X: " + strings.Repeat("x", MaxHeaderBytes-len("From: a@a.test\r\nX: \r\n"))}, true},
		{"a header section of one byte more", []string{"From: a@a.test", "X: " + strings.Repeat("x", MaxHeaderBytes-len("From: a@a.test\r\nX: \r\n")+1)}, false},
		// Every To is named once more in h=, and the library scans the
		// whole header for each name.
		{"2000 To fields: 4 million fields scanned", append([]string{"From: a@a.test"}, many("To", 2000)...), true},
		{"3000 To fields: 9 million", append([]string{"From: a@a.test"}, many("To", 3000)...), false},
	}
	s := &Signer{Selector: "mail", Key: key(t), Domains: []string{"a.test"}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Sign("a.test", message("hi\r\n", tc.header...))
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, errHeaderShape) {
				t.Fatalf("Sign: %v, want ok %v", err, tc.ok)
			}
		})
	}
}
