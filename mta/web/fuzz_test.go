package web

import (
	"strings"
	"testing"
)

// FuzzAutodiscoverRequest: whatever is posted, the parser returns an
// address that validAddress accepts, or an error; it never panics.
func FuzzAutodiscoverRequest(f *testing.F) {
	f.Add([]byte(outlookRequest))
	f.Add([]byte(strings.Replace(outlookRequest, "alice@example.org", "", 1)))
	f.Add([]byte("<Autodiscover><Request><EMailAddress>a@b.c</EMailAddress></Request></Autodiscover>"))
	f.Fuzz(func(t *testing.T, body []byte) {
		addr, err := ParseAutodiscoverRequest(body)
		if err == nil && !validAddress(addr) {
			t.Fatalf("accepted %q", addr)
		}
	})
}
