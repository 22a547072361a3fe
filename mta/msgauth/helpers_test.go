package msgauth

import (
	"crypto"
	"crypto/rsa"
	"strings"
	"sync"
	"testing"
)

// testKey is one RSA key for the whole package: generating 2048-bit keys
// under -race costs about a second each.
var testKey = sync.OnceValues(func() (crypto.Signer, error) {
	key, _, err := GenerateKey()
	return key, err
})

func key(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := testKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.Public().(*rsa.PublicKey); !ok {
		t.Fatalf("GenerateKey gave %T, want RSA", k.Public())
	}
	return k
}

// message builds a CRLF message from header lines and a body.
func message(body string, header ...string) []byte {
	return []byte(strings.Join(header, "\r\n") + "\r\n\r\n" + body)
}

func plainMessage(from string) []byte {
	return message("Hello Bob.\r\nSee you tomorrow.\r\n",
		"From: Alice <"+from+">",
		"To: bob@b.test",
		"Subject: lunch",
		"Date: Mon, 2 Jun 2025 10:00:00 +0000",
		"Message-ID: <1@a.test>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
	)
}

// zoneLines gives records as the zone-file lines dnstest takes.
func zoneLines(recs []Record) []string {
	lines := make([]string, len(recs))
	for i, r := range recs {
		lines[i] = r.Zone()
	}
	return lines
}
