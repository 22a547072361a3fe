package mta

import (
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestSubmissionDSN_ParametersGoToTheQueue: RET, ENVID and each
// recipient's NOTIFY and ORCPT (decoded from xtext) reach the queue with
// the message; a local recipient asking NOTIFY=SUCCESS is queued too (the
// queue records its delivery and the notice together), the others are
// stored at once.
func TestSubmissionDSN_ParametersGoToTheQueue(t *testing.T) {
	e := newEnv(t, nil)
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	cl.cmd("MAIL FROM:<alice@example.org> RET=HDRS ENVID=QQ+20314", "250 ")
	cl.cmd("RCPT TO:<carol@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Carol+2Bx@remote.test", "250 ")
	cl.cmd("RCPT TO:<dave@remote.test>", "250 ")
	cl.cmd("RCPT TO:<bob@example.org> NOTIFY=SUCCESS", "250 ")
	cl.cmd("RCPT TO:<alice@example.org> NOTIFY=NEVER", "250 ")
	cl.cmd("DATA", "354 ")
	cl.write("From: alice@example.org\r\nSubject: x\r\n\r\nx\r\n.\r\n")
	cl.expect("250 2.0.0 OK id=")

	if n := len(e.mailbox("alice@example.org")); n != 1 {
		t.Errorf("alice has %d messages, want her copy stored at once", n)
	}
	if n := len(e.mailbox("bob@example.org")); n != 0 {
		t.Errorf("bob has %d messages; his copy, with a success notice owed, goes through the queue", n)
	}
	q := e.queue.entries()
	if len(q) != 1 || strings.Join(q[0].Rcpts, ",") != "bob@example.org,carol@remote.test,dave@remote.test" {
		t.Fatalf("queued %+v", q)
	}
	p := e.queue.dsns[0]
	if p.Ret != smtp.DSNReturnHeaders || p.EnvID != "QQ 314" {
		t.Errorf("MAIL parameters %+v", p)
	}
	if o := p.Rcpt(0); o == nil || len(o.Notify) != 1 || o.Notify[0] != smtp.DSNNotifySuccess {
		t.Errorf("bob's parameters %+v", o)
	}
	if o := p.Rcpt(1); o == nil || len(o.Notify) != 2 || o.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || o.OriginalRecipient != "Carol+x@remote.test" {
		t.Errorf("carol's parameters %+v", o)
	}
	if o := p.Rcpt(2); o != nil {
		t.Errorf("dave's parameters %+v, want none", o)
	}
}

// TestSubmissionDSN_LocalSuccessIsLoggedQueued: a message whose only
// recipient is local and asks NOTIFY=SUCCESS goes to the queue, and its
// transaction line says so.
func TestSubmissionDSN_LocalSuccessIsLoggedQueued(t *testing.T) {
	e := newEnv(t, nil)
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", "250 ")
	cl.cmd("RCPT TO:<bob@example.org> NOTIFY=SUCCESS", "250 ")
	cl.cmd("DATA", "354 ")
	cl.write("From: alice@example.org\r\nSubject: x\r\n\r\nx\r\n.\r\n")
	id := replyID(t, cl.expect("250 2.0.0 OK id=")[0])
	if q := e.queue.entries(); len(q) != 1 || q[0].ID != id || len(e.mailbox("bob@example.org")) != 0 {
		t.Fatalf("queued %+v; want bob's copy queued, not stored", q)
	}
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, `"id":"`+id+`"`) && strings.Contains(line, `"listener":"submissions"`) {
			if !strings.Contains(line, `"msg":"queued"`) {
				t.Fatalf("transaction line %s; want the queued event", line)
			}
			return
		}
	}
	t.Fatalf("no transaction line for %s:\n%s", id, e.logs)
}
