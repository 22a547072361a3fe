package mta

import (
	"strings"
	"testing"
)

// sendersFunc adapts a function to Senders.
type sendersFunc func(user, addr string) bool

func (f sendersFunc) MaySendAs(user, addr string) bool { return f(user, addr) }

// sendAsEnv has aliases sales@ -> alice, shop@ -> bob, a catch-all to
// alice, and the real mda.Agent deciding who may send as whom.
func sendAsEnv(t *testing.T) *env {
	var e *env
	e = newEnv(t, func(o *Options, _ *Local) {
		o.Senders = sendersFunc(func(u, a string) bool { return e.agent.MaySendAs(u, a) })
	})
	e.agent.Delimiter = "+"
	for _, a := range [][2]string{{"sales@example.org", "alice@example.org"}, {"shop@example.org", "bob@example.org"}, {"@example.org", "alice@example.org"}} {
		if _, err := e.st.AddAlias(a[0], []string{a[1]}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func TestSubmission_SendAsOwnedAlias(t *testing.T) {
	e := sendAsEnv(t)
	for _, from := range []string{"sales@example.org", "Sales+q@example.org", "alice+list@example.org"} {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		reply := cl.send(from, []string{"carol@remote.test"}, "From: Sales <"+from+">\r\nSender: "+from+"\r\nSubject: x\r\n\r\nx\r\n")
		if !strings.HasPrefix(reply, "250 ") {
			t.Fatalf("as %s: %s", from, reply)
		}
	}
	if n := len(e.queue.entries()); n != 3 {
		t.Fatalf("%d queued, want 3", n)
	}
}

func TestSubmission_SendAsOthersAliasRefused(t *testing.T) {
	e := sendAsEnv(t)
	for _, from := range []string{"shop@example.org", "bob@example.org", "nobody@example.org" /* catch-all */} {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		cl.cmd("MAIL FROM:<"+from+">", "553 5.7.1")
	}
	// From: is held to the same rule, with an owned MAIL FROM.
	for _, hdr := range []string{"From: shop@example.org\r\n", "From: sales@example.org\r\nSender: shop@example.org\r\n", "From: nobody@example.org\r\n"} {
		cl := dialTLS(t, e.subsAddr, e.clientTLS)
		cl.login("alice@example.org")
		if reply := cl.send("sales@example.org", []string{"carol@remote.test"}, hdr+"Subject: x\r\n\r\nx\r\n"); !strings.HasPrefix(reply, "550 5.7.1") {
			t.Errorf("header %q: %s", hdr, reply)
		}
	}
	if !strings.Contains(e.logs.String(), "shop@example.org") {
		t.Errorf("refusal not logged:\n%s", e.logs)
	}
}
