package mta

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestSubmission_BccReachesNoRecipient: a Bcc: field is removed from every
// copy, local and relayed, as sendmail -t does; the blind recipients get
// the message through the envelope alone.
func TestSubmission_BccReachesNoRecipient(t *testing.T) {
	e := newEnv(t, nil)
	cl := dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	msg := "From: alice@example.org\r\nTo: bob@example.org\r\n" +
		"Bcc: carol@remote.test,\r\n secret@example.org\r\nbcc: another@remote.test\r\nSubject: x\r\n\r\n" +
		"Bcc: a body line is no field\r\n"
	if got := cl.send("alice@example.org", []string{"bob@example.org", "carol@remote.test"}, msg); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("DATA: %q", got)
	}
	q := e.queue.entries()
	local := e.mailbox("bob@example.org")
	if len(q) != 1 || len(local) != 1 {
		t.Fatalf("queued %d, stored %d; want 1 each", len(q), len(local))
	}
	for name, m := range map[string][]byte{"relayed copy": q[0].Msg, "local copy": local[0]} {
		hdr, b, _ := bytes.Cut(m, []byte("\r\n\r\n"))
		// A field named Bcc, or its addresses (not "bcc" anywhere: the
		// ids in Received and Message-ID are hex, and may spell it).
		lower := bytes.ToLower(append([]byte("\r\n"), hdr...))
		if bytes.Contains(lower, []byte("\r\nbcc:")) || bytes.Contains(hdr, []byte("carol@")) || bytes.Contains(hdr, []byte("secret")) || bytes.Contains(hdr, []byte("another")) {
			t.Errorf("%s shows the blind recipients:\n%s", name, hdr)
		}
		if !bytes.Contains(hdr, []byte("\r\nTo: bob@example.org\r\nSubject: x")) {
			t.Errorf("%s lost the fields around Bcc:\n%s", name, hdr)
		}
		if string(b) != "Bcc: a body line is no field\r\n" {
			t.Errorf("%s body %q", name, b)
		}
	}
}

// TestSubmission_DisplayNameHoldingAnotherAddressIsLogged: a From: whose
// display name is another address is only a name, so it is sent, but
// mail clients show it as that address: the server says so in its log,
// with the user and the field as written (bounded).
func TestSubmission_DisplayNameHoldingAnotherAddressIsLogged(t *testing.T) {
	e := newEnv(t, nil)
	warnings := func() []map[string]any {
		var out []map[string]any
		for _, line := range strings.Split(e.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "display name holds another address" {
				out = append(out, rec)
			}
		}
		return out
	}
	for _, header := range []string{
		"From: Alice <alice@example.org>\r\n",
		`From: "alice@example.org" <alice@example.org>` + "\r\n",
	} {
		if got := e.submitWithHeader(t, header); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("%q: %q", header, got)
		}
	}
	if w := warnings(); len(w) != 0 {
		t.Fatalf("warned about honest display names: %v", w)
	}
	// A long name, so that the log's bound shows too.
	spoof := `"bob@example.org ` + strings.Repeat("x", 200) + `" <alice@example.org>`
	if got := e.submitWithHeader(t, "From: "+spoof+"\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("display name holding another address: %q, want it sent", got)
	}
	w := warnings()
	if len(w) != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", len(w), e.logs)
	}
	want := map[string]any{"level": "WARN", "user": "alice@example.org", "field": "From", "value": spoof[:128]}
	for k, v := range want {
		if w[0][k] != v {
			t.Errorf("warning %s = %q, want %q (whole line %v)", k, w[0][k], v, w[0])
		}
	}
	if w[0]["id"] == "" || w[0]["client"] != "127.0.0.1" {
		t.Errorf("warning without the transaction id or client: %v", w[0])
	}
}
