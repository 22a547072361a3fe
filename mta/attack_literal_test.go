package mta

import (
	"strings"
	"testing"
)

// TestAttack_SubmissionLiteralAmongGoodRecipients: an address literal in a
// transaction is refused on its own (550 5.7.1 at its RCPT, the forms are
// in TestAttack_SubmissionRecipients) and never reaches the queue; the
// other recipients are relayed as usual.
func TestAttack_SubmissionLiteralAmongGoodRecipients(t *testing.T) {
	e := newEnv(t, nil)
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", "250 ")
	cl.cmd("RCPT TO:<carol@remote.test>", "250 ")
	cl.cmd("RCPT TO:<x@[127.0.0.1]>", "550 5.7.1")
	cl.cmd("RCPT TO:<y@169.254.169.254>", "550 5.7.1")
	cl.cmd("DATA", "354 ")
	cl.write("Subject: x\r\n\r\nx\r\n.\r\n")
	cl.expect("250 ")
	q := e.queue.entries()
	if len(q) != 1 || strings.Join(q[0].Rcpts, ",") != "carol@remote.test" {
		t.Fatalf("queued %+v, want only carol@remote.test", q)
	}
}
