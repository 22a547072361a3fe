package mta

import (
	"strings"
	"testing"
	"time"
)

// TestAttack_MessageShapes sends the message shapes that break parsers:
// sizes at the edges, degenerate headers, huge line counts.
func TestAttack_MessageShapes(t *testing.T) {
	e := newEnv(t, nil)
	t.Run("a million folded header lines take linear time", func(t *testing.T) {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		// Unfolding by string appends was quadratic: hours of CPU for
		// these 4 MB. Linear, the reply comes in well under the deadline.
		cl.c.SetDeadline(time.Now().Add(15 * time.Second))
		got := cl.send("alice@example.org", []string{"bob@example.org"},
			"From: alice@example.org\r\nX-Fold: x\r\n"+strings.Repeat(" a\r\n", 1_000_000)+"\r\nbody\r\n")
		if !strings.HasPrefix(got, "250 ") {
			t.Fatalf("got %q", got)
		}
	})
}
