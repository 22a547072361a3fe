package pop3

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// seedCommands seeds the fuzzers with every keyword and the client lines of
// the dialog transcripts.
func seedCommands(f *testing.F) []string {
	lines := []string{
		"USER alice@example.org", "PASS alice-pw", "PASS with spaces ", "APOP a b",
		"AUTH", "AUTH PLAIN", "AUTH PLAIN =", "AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXB3", "*",
		"STLS", "CAPA", "STAT", "LIST", "LIST 1", "UIDL", "UIDL 2", "RETR 1", "TOP 1 0",
		"TOP 2 99999999999999999999", "DELE 1", "RSET", "NOOP", "QUIT", "", " ", "\x00",
		"LIST  1", "retr\t1", "TOP 1 -1",
	}
	files, _ := filepath.Glob("testdata/dialog/*.txt")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if after, ok := strings.CutPrefix(l, "C: "); ok {
				lines = append(lines, after)
			}
		}
	}
	return lines
}

func FuzzParseCommand(f *testing.F) {
	for _, l := range seedCommands(f) {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := parseCommand(line)
		if err != nil {
			return
		}
		if c.Verb == "" || len(c.Verb) > maxVerbLength || c.Verb != strings.ToUpper(c.Verb) {
			t.Fatalf("bad verb %q from %q", c.Verb, line)
		}
		if !strings.EqualFold(line[:len(c.Verb)], c.Verb) {
			t.Fatalf("verb %q is not the start of %q", c.Verb, line)
		}
		for i := 0; i < len(c.Verb); i++ {
			if c.Verb[i] <= ' ' || c.Verb[i] >= 0x7f {
				t.Fatalf("verb %q has a control or space", c.Verb)
			}
		}
		if rest := line[len(c.Verb):]; rest != "" && rest != " "+c.Rest {
			t.Fatalf("Rest %q does not follow the verb in %q", c.Rest, line)
		}
		for _, a := range c.Args {
			if a == "" || strings.Contains(a, " ") {
				t.Fatalf("bad argument %q from %q", a, line)
			}
		}
		if got := strings.Join(c.Args, " "); got != strings.Join(strings.FieldsFunc(c.Rest, func(r rune) bool { return r == ' ' }), " ") {
			t.Fatalf("Args %q lose text of Rest %q", c.Args, c.Rest)
		}
		if n, ok := parseNumber(c.Rest); ok && c.Rest != strings.TrimLeft(c.Rest, "+-") {
			t.Fatalf("parseNumber(%q) accepted a sign: %d", c.Rest, n)
		}
	})
}

// FuzzDotStuffing: unstuffing what writeDotStuffed sends gives back the
// message (plus the CRLF added to an unterminated last line), and no line
// of it ends the response early.
func FuzzDotStuffing(f *testing.F) {
	for _, s := range []string{"", ".", ".\r\n", msg1, msg2, "a\r\n.", "x\n.\n..\r\n"} {
		f.Add([]byte(s), uint64(1))
	}
	f.Fuzz(func(t *testing.T, msg []byte, lines uint64) {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		writeDotStuffed(w, msg)
		w.Flush()
		wire := out.Bytes()
		if !bytes.HasSuffix(wire, []byte(terminator)) {
			t.Fatalf("no terminator: %q", wire)
		}
		body := wire[:len(wire)-len(terminator)]
		var got []byte
		for len(body) > 0 {
			i := bytes.IndexByte(body, '\n')
			line := body[:i+1]
			body = body[i+1:]
			if string(line) == ".\r\n" {
				t.Fatalf("early terminator in %q", wire)
			}
			if line[0] == '.' {
				line = line[1:]
			}
			got = append(got, line...)
		}
		want := msg
		if len(msg) > 0 && msg[len(msg)-1] != '\n' {
			want = append(bytes.Clone(msg), "\r\n"...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round trip of %q gave %q", msg, got)
		}
		if cut := topCut(msg, lines); cut < 0 || cut > len(msg) {
			t.Fatalf("topCut(%q, %d) = %d", msg, lines, cut)
		}
	})
}

// FuzzSession feeds arbitrary client input into a session with insecure
// auth allowed, so the fuzzer reaches every state. The input is followed by
// a line break, a SASL cancel and QUIT so every session ends by itself.
func FuzzSession(f *testing.F) {
	var all []string
	for _, l := range seedCommands(f) {
		f.Add([]byte(l + "\r\n"))
		all = append(all, l)
	}
	f.Add([]byte(strings.Join(all, "\r\n")))
	f.Add([]byte("USER alice@example.org\r\nPASS alice-pw\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nLIST\r\nUIDL\r\nRSET\r\nDELE 2\r\n"))
	f.Add([]byte("AUTH PLAIN\r\nAGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXB3\r\nSTAT\r\n"))

	md := newFakeMaildrop()
	md.users[alice] = alicePW
	f.Fuzz(func(t *testing.T, input []byte) {
		md.mu.Lock()
		md.boxes, md.bodies, md.nextID = map[string][]MessageInfo{}, map[uint64][]byte{}, 0
		md.mu.Unlock()
		md.add(alice, msg1, msg2, msg3)
		srv := NewServer(md, Options{
			Hostname:          "pop.test",
			AllowInsecureAuth: true,
			AuthFailDelay:     -1,
			IdleTimeout:       5 * time.Second,
		})
		server, clientConn := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer server.Close()
			newSession(srv, server).run()
		}()
		go func() {
			clientConn.Write(append(input, "\r\n*\r\nQUIT\r\n"...))
		}()
		out, _ := io.ReadAll(clientConn)
		clientConn.Close()
		<-done

		if !bytes.HasPrefix(out, []byte("+OK pop.test POP3 server ready\r\n")) {
			t.Fatalf("no greeting: %q", out)
		}
		if !bytes.HasSuffix(out, []byte("\r\n")) {
			t.Fatalf("output does not end in CRLF: %q", out)
		}
	})
}
