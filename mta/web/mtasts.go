package web

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Policy is the MTA-STS policy (RFC 8461 section 3.2) every local domain
// publishes: the one MX is Hostname.
type Policy struct {
	// Mode is "none", "testing" or "enforce" (RFC 8461 section 5).
	Mode string
	// MaxAge is how long senders may cache the policy (max_age, whole
	// seconds, at most 31557600).
	MaxAge time.Duration
}

// Modes are the policy modes of RFC 8461 section 5.
var Modes = []string{"none", "testing", "enforce"}

// DefaultMaxAge is a week: RFC 8461 section 3.2 recommends weeks or more,
// and a week lets a mistake in enforce mode pass within one.
const DefaultMaxAge = 7 * 24 * time.Hour

// MaxMaxAge is the largest max_age RFC 8461 section 3.2 allows, about a year.
const MaxMaxAge = 31557600 * time.Second

// Text is the policy file: key: value lines ending in CRLF, in the order
// of RFC 8461 section 3.2.
func (p Policy) Text(hostname string) string {
	maxAge := p.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	return fmt.Sprintf("version: STSv1\r\nmode: %s\r\nmx: %s\r\nmax_age: %d\r\n", p.Mode, hostname, int64(maxAge/time.Second))
}

// ID is the policy's id for the _mta-sts TXT record (RFC 8461 section
// 3.1): derived from the text, so it changes exactly when the policy does,
// and senders fetch it again. 20 hex digits, within the 32 alphanumerics
// allowed.
func (p Policy) ID(hostname string) string {
	sum := sha256.Sum256([]byte(p.Text(hostname)))
	return hex.EncodeToString(sum[:10])
}

func (h *Handler) mtaSTS(w http.ResponseWriter, r *http.Request) {
	body := h.opts.Policy.Text(h.opts.Hostname)
	// RFC 8461 section 3.3: text/plain.
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write([]byte(body))
}
