package mta

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMX_NullSenderDelivered(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO mx.other.test", "250 ")
	if got := cl.send("", []string{"alice@example.org"}, "Subject: bounce\r\n\r\nsorry\r\n"); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("DATA: %s", got)
	}
	m := e.mailbox("alice@example.org")
	if len(m) != 1 || !bytes.HasPrefix(m[0], []byte("Return-Path: <>\r\nDelivered-To: alice@example.org\r\nReceived: ")) {
		t.Fatalf("stored %q", m)
	}
}

func TestMX_ReceivedHeaderIsRFC5321Form(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO mx.other.test", "250 ")
	id := replyID(t, cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: hi\r\n\r\nhi\r\n"))
	want := "Received: from mx.other.test ([127.0.0.1])\r\n" +
		"\tby mx.example.org with ESMTP id " + id + "\r\n" +
		"\tfor <alice@example.org>; Wed, 04 Mar 2026 05:06:07 +0000\r\n" +
		"Subject: hi\r\n"
	if m := e.mailbox("alice@example.org"); len(m) != 1 || !bytes.Contains(m[0], []byte(want)) {
		t.Fatalf("want\n%s\ngot\n%s", want, m)
	}

	// Over STARTTLS the protocol is ESMTPS; with two recipients there is
	// no "for" clause (it would disclose Bcc recipients).
	cl.starttls(e.clientTLS)
	cl.cmd("EHLO mx.other.test", "250 ")
	id = replyID(t, cl.send("bob@other.test", []string{"alice@example.org", "bob@example.org"}, "Subject: hi\r\n\r\nhi\r\n"))
	m := e.mailbox("bob@example.org")
	rcv := string(m[0][strings.Index(string(m[0]), "Received:"):strings.Index(string(m[0]), "Subject:")])
	if !strings.Contains(rcv, "with ESMTPS (TLS 1.3 TLS_") || !strings.Contains(rcv, "id "+id+"; Wed, 04 Mar 2026") || strings.Contains(rcv, " for ") {
		t.Fatalf("Received over TLS: %q", rcv)
	}
}

func TestMX_HeloCannotForgeTrace(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO a(b);c<d>", "250 ")
	cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: hi\r\n\r\nhi\r\n")
	if m := e.mailbox("alice@example.org"); !bytes.Contains(m[0], []byte("Received: from a_b__c_d_ ([127.0.0.1])")) {
		t.Fatalf("got %s", m[0])
	}
	cl.cmd("EHLO "+strings.Repeat("h", 256), "250 ") // a second EHLO only resets
	cl2 := dial(t, e.mxAddr)
	cl2.cmd("EHLO "+strings.Repeat("h", 256), "501 5.5.2")
}

func TestMX_SizeLimits(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.MaxMessageBytes = 1000 })
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")
	cl.cmd("MAIL FROM:<bob@other.test> SIZE=1001", "552 5.3.4")
	cl.cmd("MAIL FROM:<bob@other.test> SIZE=900", "250 ")
	cl.cmd("RCPT TO:<alice@example.org>", "250 ")
	cl.cmd("DATA", "354 ")
	cl.write("Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 100) + ".\r\n")
	cl.expect("552 5.3.4")
	if m := e.mailbox("alice@example.org"); len(m) != 0 {
		t.Fatalf("oversized message stored: %d", len(m))
	}
	// The session goes on.
	if got := cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: small\r\n\r\nok\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("after 552: %s", got)
	}
}

func TestMX_LongLines(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.MaxLineLength = 8000 })
	t.Run("line over the limit closes", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.write("NOOP " + strings.Repeat("x", 9000) + "\r\n")
		cl.expect("500 5.4.0")
		cl.expectClosed()
	})
	t.Run("text line over the limit", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
		cl.cmd("RCPT TO:<bob@example.org>", "250 ")
		cl.cmd("DATA", "354 ")
		cl.write("Subject: long\r\n\r\n" + strings.Repeat("y", 9000) + "\r\n.\r\n")
		cl.expect("500 5.5.2")
		cl.expectClosed()
		if m := e.mailbox("bob@example.org"); len(m) != 0 {
			t.Fatalf("stored %d", len(m))
		}
	})
	t.Run("long text line under the limit is kept", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.cmd("EHLO client.test", "250 ")
		long := strings.Repeat("z", 5000)
		cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: long\r\n\r\n"+long+"\r\n")
		if m := e.mailbox("alice@example.org"); len(m) != 1 || string(body(m[0])) != long+"\r\n" {
			t.Fatalf("stored %q", m)
		}
	})
}

// TestMX_Timeouts: CommandTimeout bounds the wait for a command and
// DataTimeout each wait inside DATA. The data timeout is far longer than
// the pauses between writes, so a busy machine cannot make them collide;
// the writes together outlast CommandTimeout many times over.
func TestMX_Timeouts(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) {
		o.CommandTimeout = 150 * time.Millisecond
		o.DataTimeout = 3 * time.Second
		o.MinDataRate = -1
	})
	t.Run("command", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.expect("421 4.4.2")
		cl.expectClosed()
	})
	t.Run("data", func(t *testing.T) {
		cl := dial(t, e.mxAddr)
		cl.write("EHLO client.test\r\nMAIL FROM:<bob@other.test>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
		cl.expect("250 ")
		cl.expect("250 ")
		cl.expect("250 ")
		cl.expect("354 ")
		// Data keeps the connection alive past CommandTimeout while it flows.
		for range 6 {
			cl.write("Subject: slow\r\n")
			time.Sleep(100 * time.Millisecond)
		}
		cl.expect("421 4.4.2")
		cl.expectClosed()
		if m := e.mailbox("alice@example.org"); len(m) != 0 {
			t.Fatalf("stored %d", len(m))
		}
	})
}

func TestMX_ConnectionLimits(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) {
		o.MaxConnections = 3
		o.MaxConnectionsPerIP = 2
	})
	from := func(ip string) *client {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", e.mxAddr)
		if err != nil {
			t.Fatal(err)
		}
		return newClient(t, c)
	}
	a1, a2 := from("127.0.0.1"), from("127.0.0.1")
	a1.expect("220 ")
	a2.expect("220 ")
	over := from("127.0.0.1")
	over.expect("421 4.7.0")
	over.expectClosed()
	b1 := from("127.0.0.2")
	b1.expect("220 ")
	total := from("127.0.0.3")
	total.expect("421 4.7.0")

	// A slot is freed when its connection ends.
	a1.cmd("QUIT", "221 ")
	a1.expectClosed()
	for deadline := time.Now().Add(5 * time.Second); ; {
		c := from("127.0.0.3")
		lines, _ := c.reply()
		if len(lines) > 0 && strings.HasPrefix(lines[0], "220 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not released: %q", lines)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMX_LocalVerdictTravelsInTheError: the MX knows an unknown recipient
// by the verdict its error carries, not by a sentinel of the package that
// produced it: any permanent error is 550 5.1.1, at RCPT and at DATA.
func TestMX_LocalVerdictTravelsInTheError(t *testing.T) {
	e, fail := newFailingEnv(t)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")
	fail.resolveErr = fmt.Errorf("lookup: %w", permError{"mailbox gone"})
	cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
	cl.cmd("RCPT TO:<alice@example.org>", "550 5.1.1 no such user here")
	cl.cmd("RSET", "250 ")
	fail.resolveErr = nil
	fail.deliverErr = permError{"mailbox gone"}
	if got := cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: x\r\n\r\nx\r\n"); !strings.HasPrefix(got, "550 5.1.1") {
		t.Fatalf("permanent store failure: %s", got)
	}
}

func TestMX_StoreFailureIsTemporary(t *testing.T) {
	e, fail := newFailingEnv(t)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")

	fail.deliverErr = tempError{"disk full"}
	if got := cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: x\r\n\r\nx\r\n"); !strings.HasPrefix(got, "451 4.3.0") {
		t.Fatalf("store failure: %s", got)
	}
	// An error that does not say what it is is also temporary, never 554.
	fail.deliverErr = fmt.Errorf("mystery")
	if got := cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: x\r\n\r\nx\r\n"); !strings.HasPrefix(got, "451 4.3.0") {
		t.Fatalf("unclassified failure: %s", got)
	}
	fail.deliverErr = nil
	fail.resolveErr = tempError{"read failed"}
	cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
	cl.cmd("RCPT TO:<alice@example.org>", "451 4.3.0")
	if m := e.mailbox("alice@example.org"); len(m) != 0 {
		t.Fatalf("stored %d", len(m))
	}
}

func TestMX_PipelinedTransactionInOneWrite(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.write("EHLO client.test\r\nMAIL FROM:<bob@other.test>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
	for _, want := range []string{"250 ", "250 ", "250 ", "550 5.1.1", "250 ", "354 "} {
		cl.expect(want)
	}
	cl.write("Subject: piped\r\n\r\nhello\r\n.\r\nQUIT\r\n")
	cl.expect("250 2.0.0")
	cl.expect("221 ")
	for _, u := range []string{"alice@example.org", "bob@example.org"} {
		if m := e.mailbox(u); len(m) != 1 || string(body(m[0])) != "hello\r\n" {
			t.Fatalf("%s: %q", u, m)
		}
	}
}

func TestMX_DotStuffingAnd8BitStoredByteExact(t *testing.T) {
	e := newEnv(t, nil)
	want := "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\n" +
		".leading dot\r\n" +
		"..two dots\r\n" +
		".\r\n" +
		"Grüße, naïve café \xe9\xff\x80 (latin-1 and raw 8-bit)\r\n" +
		"trailing spaces   \r\n" +
		"\r\n"
	stuffed := strings.ReplaceAll("\r\n"+want, "\r\n.", "\r\n..")[2:]
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")
	cl.cmd("MAIL FROM:<bob@other.test> BODY=8BITMIME", "250 ")
	cl.cmd("RCPT TO:<alice@example.org>", "250 ")
	cl.cmd("DATA", "354 ")
	cl.write(stuffed + ".\r\n")
	cl.expect("250 2.0.0")
	m := e.mailbox("alice@example.org")
	if len(m) != 1 {
		t.Fatalf("stored %d", len(m))
	}
	if _, got, _ := strings.Cut(string(m[0]), "\r\nSubject: "); "Subject: "+got != want {
		t.Fatalf("stored\n%q\nwant\n%q", "Subject: "+got, want)
	}
}

func TestMX_Chunking(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")
	cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
	cl.cmd("RCPT TO:<alice@example.org>", "250 ")
	part1 := "Subject: chunks\r\n\r\nline one\n"
	part2 := ".\r\nline two\r\n"
	cl.write(fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1))
	cl.expect("250 ")
	cl.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2))
	cl.expect("250 2.0.0 OK id=")
	m := e.mailbox("alice@example.org")
	if len(m) != 1 || string(body(m[0])) != "line one\r\n.\r\nline two\r\n" {
		t.Fatalf("stored %q", m)
	}
}

func TestMX_Concurrent200Sessions(t *testing.T) {
	e := newEnv(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fmt.Sprintf("Subject: n%d\r\n\r\nmessage %d\r\n", i, i)
			errs <- sendMail(e.mxAddr, "bob@other.test", []string{"alice@example.org"}, msg)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if m := e.mailbox("alice@example.org"); len(m) != 200 {
		t.Fatalf("stored %d of 200", len(m))
	}
}

// sendMail is one plain net/smtp transaction (no STARTTLS, no AUTH).
func sendMail(addr, from string, rcpts []string, msg string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func TestMX_VerifyHook(t *testing.T) {
	var verdict Verdict
	var verifyErr error
	keep := false // Accept without a message of its own
	e := newEnv(t, func(o *Options, _ *Local) {
		o.Verify = func(_ context.Context, ip net.IP, helo, from string, msg []byte) (Verdict, error) {
			if verifyErr != nil || verdict.Disposition != Accept || keep {
				return verdict, verifyErr
			}
			ar := fmt.Sprintf("Authentication-Results: %s; spf=pass smtp.mailfrom=%s (ip=%s helo=%s)\r\n", testHost, from, ip, helo)
			return Verdict{Prepend: []byte(ar)}, nil
		}
	})
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO mx.other.test", "250 ")
	cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: v\r\n\r\nv\r\n")
	m := e.mailbox("alice@example.org")
	if len(m) != 1 || !bytes.Contains(m[0], []byte("\r\nAuthentication-Results: mx.example.org; spf=pass smtp.mailfrom=bob@other.test (ip=127.0.0.1 helo=mx.other.test)\r\nSubject: v")) {
		t.Fatalf("stored %q", m)
	}
	// The replies msgauth's verdicts get (serve.go maps them one to one).
	for _, c := range []struct {
		verdict Verdict
		want    string
	}{
		{Verdict{Disposition: RejectMalformed, Reason: "Message header starts with a continuation line"},
			"550 5.6.0 Message header starts with a continuation line"},
		{Verdict{Disposition: RejectUnevaluable, Reason: "Message has no From field"},
			"550 5.7.1 Message has no From field"},
		{Verdict{Disposition: RejectPolicy, Reason: "Rejected by the DMARC policy of bank.test"},
			"550 5.7.1 Rejected by the DMARC policy of bank.test"},
		{Verdict{Disposition: Defer, Reason: "DMARC check of bank.test failed temporarily, try again later"},
			"451 4.7.0 DMARC check of bank.test failed temporarily, try again later"},
		{Verdict{Disposition: RejectSpam, Reason: "Gtube pattern"}, "550 5.7.1 Gtube pattern"},
		{Verdict{Disposition: DeferSpam, Reason: "try again later"}, "451 4.7.1 try again later"},
		{Verdict{Disposition: DeferSpam + 1, Reason: "a verdict from a newer checker"},
			"451 4.3.0 temporary failure checking message, try again later"},
	} {
		verdict = c.verdict
		if got := cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: v\r\n\r\nv\r\n"); got != c.want {
			t.Errorf("verdict %+v: got %q, want %q", c.verdict, got, c.want)
		}
	}
	verdict, verifyErr = Verdict{}, fmt.Errorf("dns timeout")
	if got := cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: v\r\n\r\nv\r\n"); !strings.HasPrefix(got, "451 4.3.0") {
		t.Fatalf("plain error from Verify: %s", got)
	}
	verifyErr, keep = nil, true
	cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: kept\r\n\r\nv\r\n")
	if m := e.mailbox("alice@example.org"); len(m) != 2 || !bytes.Contains(m[1], []byte("Subject: kept")) || bytes.Contains(m[1], []byte("Authentication-Results")) {
		t.Fatalf("stored %q", m)
	}
}

func TestMX_LogsOneLinePerTransaction(t *testing.T) {
	e := newEnv(t, nil)
	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")
	id := replyID(t, cl.send("bob@other.test", []string{"alice@example.org"}, "Subject: log\r\n\r\nlog\r\n"))
	cl.cmd("MAIL FROM:<bob@other.test>", "250 ")
	cl.cmd("RCPT TO:<nobody@example.org>", "550 ")
	cl.cmd("QUIT", "221 ")
	cl.expectClosed()

	var lines []map[string]any
	for deadline := time.Now().Add(5 * time.Second); len(lines) < 2 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		lines = nil
		for _, l := range strings.Split(e.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["from"] != nil {
				lines = append(lines, rec)
			}
		}
	}
	if len(lines) != 2 {
		t.Fatalf("want 2 transaction lines, got %v", lines)
	}
	d := lines[0]
	if d["msg"] != "delivered" || d["id"] != id || d["from"] != "bob@other.test" || d["result"] != "250 2.0.0 OK id="+id ||
		d["size"] == nil || d["duration"] == nil || fmt.Sprint(d["rcpts"]) != "[alice@example.org]" {
		t.Errorf("delivered line: %v", d)
	}
	if r := lines[1]; r["msg"] != "rejected" || fmt.Sprint(r["refused"]) != "[nobody@example.org 550]" {
		t.Errorf("rejected line: %v", r)
	}
}
