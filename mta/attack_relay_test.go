package mta

import (
	"strings"
	"testing"
	"time"
)

// TestAttack_PostmasterWithoutDomain: RFC 5321 4.1.1.3 and 4.5.1 make a
// bare RCPT TO:<Postmaster> (any case) reach this server's postmaster
// (go-smtp accepts the form since v0.26.0). It is not a relay: the address
// becomes postmaster@ of the first local domain.
func TestAttack_PostmasterWithoutDomain(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO mx.other.test", "250 ")
	cl.cmd("MAIL FROM:<sender@other.test>", "250 ")
	cl.cmd("RCPT TO:<postmaster>", "550 5.1.1")
	cl.cmd("RCPT TO:<Postmaster>", "550 5.1.1")
	if err := e.st.AddUser("postmaster@example.org", testPass); err != nil {
		t.Fatal(err)
	}
	cl.cmd("RCPT TO:<PostMaster>", "250 ")
}

// TestAttack_LogFlooding: a refused recipient is logged, but not at the
// length the client chose to send it.
func TestAttack_LogFlooding(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO mx.other.test", "250 ")
	cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
	long := strings.Repeat("v", 20_000)
	cl.cmd("RCPT TO:<"+long+"@other.test>", "500 5.5.2")
	cl.cmd("RCPT TO:<\"\xff\xfe"+long+"\"@example.org>", "500 5.5.2")
	cl.cmd("QUIT", "221 ")
	cl.expectClosed()
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), `"refused"`) })
	if l := e.logs.String(); strings.Contains(l, strings.Repeat("v", 200)) {
		t.Fatalf("log holds the whole address: %d bytes", len(l))
	}
}

// waitFor polls cond until it holds, for log lines written after a reply.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
	}
}
