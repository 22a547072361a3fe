package mta

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"minimail/mta/dnstest"
	"minimail/mta/msgauth"
	"minimail/mta/resolve"
)

// headerEnv runs the MX with the real SPF/DKIM/DMARC checks and submission
// with the real DKIM signer, the two places a hostile header meets the
// DKIM library.
func headerEnv(t testing.TB, maxHeader int) *env {
	dns := dnstest.Start(t)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	verifier := &msgauth.Verifier{Resolver: resolve.New(dns.Addr), AuthServID: testHost, Timeout: 2 * time.Second}
	signer := &msgauth.Signer{Selector: "mail", Key: key, Domains: []string{"example.org"}}
	return newEnv(t, func(o *Options, _ *Local) {
		o.MaxHeaderBytes = maxHeader
		o.Verify = verifyWith(verifier)
		o.Sign = signer.Signature
	})
}

// TestAttack_HostileHeaders: header sections that would cost the DKIM
// library quadratic time (a field folded over many lines) or that make no
// sense (control characters) are refused before anything parses them, on
// the MX with a DKIM-Signature present and on submission to a remote
// recipient (which is signed); a header of the limit is still accepted.
func TestAttack_HostileHeaders(t *testing.T) {
	const limit = 64 << 10
	e := headerEnv(t, limit)
	dkimSig := "DKIM-Signature: v=1; a=rsa-sha256; d=other.test; s=x; h=from; bh=x; b=x\r\n"
	folded := func(lines int) string { return "X-Fold: x\r\n" + strings.Repeat(" a\r\n", lines) }
	padded := func(size int) string {
		// Fields of 100 octets up to size octets of header in all.
		var b strings.Builder
		for b.Len()+100 <= size {
			b.WriteString("X-Pad: " + strings.Repeat("p", 91) + "\r\n")
		}
		if n := size - b.Len(); n > 0 {
			b.WriteString("X-P: " + strings.Repeat("q", n-7) + "\r\n")
		}
		return b.String()
	}
	for _, c := range []struct {
		name   string
		header string // besides From and DKIM-Signature
		want   string
	}{
		{"a field folded over a million lines", folded(1_000_000), "552 5.3.4"},
		{"a field folded over 1000 lines", folded(1000), "552 5.3.4"},
		{"a field folded over 999 lines", folded(998), "250 "},
		{"a header over the byte limit", padded(limit), "552 5.3.4"},
		{"a header of the byte limit", padded(limit - len(dkimSig) - len("From: alice@example.org\r\n")), "250 "},
		{"NUL in Authentication-Results", "Authentication-Results: " + testHost + "\x00; spf=pass\r\n", "550 5.6.0"},
		{"ESC in Subject", "Subject: \x1b[31mred\r\n", "550 5.6.0"},
		{"DEL in a field name line", "X-Del\x7f: y\r\n", "550 5.6.0"},
	} {
		t.Run("MX: "+c.name, func(t *testing.T) {
			cl := dial(t, e.mxAddr)
			cl.cmd("EHLO client.test", "250 ")
			got := cl.send("bob@other.test", []string{"alice@example.org"},
				dkimSig+"From: bob@other.test\r\n"+c.header+"\r\nbody\r\n")
			if !strings.HasPrefix(got, c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
		t.Run("submission to a remote recipient: "+c.name, func(t *testing.T) {
			cl := dialTLS(t, e.subsAddr, e.clientTLS)
			cl.login("alice@example.org")
			got := cl.send("alice@example.org", []string{"carol@remote.test"},
				dkimSig+"From: alice@example.org\r\n"+c.header+"\r\nbody\r\n")
			if !strings.HasPrefix(got, c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

// TestAttack_MessageStartingWithAContinuationLine: such a first line
// would continue the server's own Received (or Authentication-Results)
// field with the client's text.
func TestAttack_MessageStartingWithAContinuationLine(t *testing.T) {
	e := newEnv(t, nil)
	for _, first := range []string{" ; dkim=pass header.d=bank.test\r\n", "\tby forged.test\r\n"} {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		if got := cl.send("bob@other.test", []string{"alice@example.org"}, first+"Subject: x\r\n\r\nbody\r\n"); !strings.HasPrefix(got, "550 5.6.0") {
			t.Errorf("MX: %q", got)
		}
		cl = dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		if got := cl.send("alice@example.org", []string{"bob@example.org"}, first+"From: alice@example.org\r\n\r\nbody\r\n"); !strings.HasPrefix(got, "550 5.6.0") {
			t.Errorf("submission: %q", got)
		}
	}
}

// BenchmarkHostileHeader_MX times the MX's answer to a message with a
// DKIM-Signature and one field folded over as many lines as the limit
// allows, at growing header sizes: the time must grow linearly.
func BenchmarkHostileHeader_MX(b *testing.B) {
	for _, size := range []int{100 << 10, 200 << 10, 400 << 10, 800 << 10} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			e := newEnvB(b, size+(64<<10))
			lineLen := size / (MaxFoldedLines - 1)
			header := "DKIM-Signature: v=1; a=rsa-sha256; d=other.test; s=x; h=from; bh=x; b=x\r\nFrom: bob@other.test\r\nX-Fold: x\r\n" +
				strings.Repeat(" "+strings.Repeat("a", lineLen-3)+"\r\n", MaxFoldedLines-2)
			msg := header + "\r\nbody\r\n"
			cl := dial(b, e.mxAddr)
			cl.cmd("EHLO client.test", "250 ")
			b.ResetTimer()
			for range b.N {
				if got := cl.send("bob@other.test", []string{"alice@example.org"}, msg); !strings.HasPrefix(got, "250 ") {
					b.Fatalf("got %q", got)
				}
			}
		})
	}
}

func newEnvB(b *testing.B, maxHeader int) *env {
	dns := dnstest.Start(b)
	verifier := &msgauth.Verifier{Resolver: resolve.New(dns.Addr), AuthServID: testHost, Timeout: 2 * time.Second}
	return newEnv(b, func(o *Options, _ *Local) {
		o.MaxHeaderBytes = maxHeader
		o.Verify = verifyWith(verifier)
	})
}
