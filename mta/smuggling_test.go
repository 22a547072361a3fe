package mta

import (
	"bufio"
	"bytes"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"
)

// smugglingVariants are the bare CR / bare LF forms of an end-of-data line
// that some receivers honour (SMTP smuggling, CVE-2023-51764 and kin).
// Only CRLF.CRLF may end DATA (RFC 5321 4.1.1.4).
var smugglingVariants = []string{
	"\n.\n",
	"\n.\r\n",
	"\r.\r\n",
	"\r.\n",
	"\r.\r",
	"\n.\r",
	"\r\n.\n",
	"\r\n.\r",
	"\r\n.\r\r\n",
	"\n..\n",
	"\r\n\n.\n",
	"\r\r\n.\r\r\n",
}

const smuggled = "MAIL FROM:<ceo@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n" +
	"From: ceo@example.org\r\nSubject: smuggled\r\n\r\nwire money\r\n"

func TestSmuggling_BareCRLFDotNeverEndsData(t *testing.T) {
	for _, v := range smugglingVariants {
		t.Run(strconv.Quote(v), func(t *testing.T) {
			e := newEnv(t, nil)
			cl := dial(t, e.mxAddr)
			cl.cmd("EHLO evil.test", "250 ")
			cl.cmd("MAIL FROM:<evil@other.test>", "250 ")
			cl.cmd("RCPT TO:<alice@example.org>", "250 ")
			cl.cmd("DATA", "354 ")
			cl.write("Subject: hello\r\n\r\nfirst" + v + smuggled + "last\r\n.\r\n")
			cl.expect("250 2.0.0")
			cl.cmd("QUIT", "221 ") // any reply to a smuggled command would come first

			if m := e.mailbox("bob@example.org"); len(m) != 0 {
				t.Fatalf("smuggled message delivered: %q", m)
			}
			m := e.mailbox("alice@example.org")
			if len(m) != 1 {
				t.Fatalf("stored %d messages", len(m))
			}
			if !onlyCRLF(m[0]) {
				t.Errorf("stored message has bare CR or LF: %q", m[0])
			}
			if !bytes.Contains(m[0], []byte("wire money\r\nlast\r\n")) {
				t.Errorf("smuggled text not kept as body: %q", m[0])
			}
		})
	}
}

// Mail relayed onward must not carry the attack to the next hop: the
// queued copy has only CRLF line ends, so once dot-stuffed for sending no
// receiver, strict or lenient, can find an end of data before the real one.
func TestSmuggling_RelayedCopyIsSafeToSend(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.AllowInsecureAuth = true })
	for _, v := range smugglingVariants {
		cl := dial(t, e.subAddr)
		cl.login("alice@example.org")
		cl.send("alice@example.org", []string{"carol@remote.test"},
			"From: alice@example.org\r\nSubject: hi\r\n\r\nfirst"+v+smuggled+"last\r\n")
	}
	q := e.queue.entries()
	if len(q) != len(smugglingVariants) {
		t.Fatalf("queued %d", len(q))
	}
	for i, entry := range q {
		if !onlyCRLF(entry.Msg) {
			t.Errorf("variant %q: queued message has bare CR or LF", smugglingVariants[i])
		}
		var wire bytes.Buffer
		w := textproto.NewWriter(bufio.NewWriter(&wire)).DotWriter()
		w.Write(entry.Msg)
		w.Close()
		if end := strings.Index(wire.String(), "\r\n.\r\n"); end != wire.Len()-5 {
			t.Errorf("variant %q: end of data at %d of %d", smugglingVariants[i], end, wire.Len())
		}
	}
}

// TestSmuggling_BareCRJustBeforeTheEndIsRefusedAtOnce: RFC 5321's end of
// data (CRLF.CRLF) right after a bare CR is one go-smtp's decoder does not
// see. The client waits for its reply; without one whatever it sent next
// (QUIT here, or a second transaction) would end up inside the message.
// The server refuses the message at once with 550 5.6.0 and closes.
func TestSmuggling_BareCRJustBeforeTheEndIsRefusedAtOnce(t *testing.T) {
	e := newEnv(t, func(o *Options, _ *Local) { o.DataTimeout = time.Minute })
	for _, c := range []struct{ name, data string }{
		{"CR CR LF . CR LF", "Subject: x\r\n\r\nfirst\r\r\n.\r\n"},
		{"a line . CR CR LF, then the end", "Subject: x\r\n\r\nfirst\r\n.\r\r\n.\r\n"},
		{"the end, with QUIT pipelined", "Subject: x\r\n\r\nfirst\r\r\n.\r\nQUIT\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := openTransaction(t, e, nil)
			cl.cmd("DATA", "354 ")
			start := time.Now()
			cl.write(c.data)
			cl.expect("550 5.6.0 " + testHost + " bare CR before the end of data")
			cl.expectClosed()
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("refused after %v", took)
			}
		})
	}
	if m := e.mailbox("alice@example.org"); len(m) != 0 {
		t.Fatalf("stored %q", m)
	}
}
