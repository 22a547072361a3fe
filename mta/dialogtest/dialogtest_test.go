package dialogtest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer is a line server over a pipe: it greets, answers each line
// with "ok <line>" (several at once when they came in one read), answers
// "QUIT" by closing and "RAW" with a line lacking CRLF. It returns the
// client end and the reads it saw, one string per Read.
func echoServer(t *testing.T) (net.Conn, func() []string) {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close() })
	var mu sync.Mutex
	var reads []string
	go func() {
		defer server.Close()
		if _, err := io.WriteString(server, "hello\r\n"); err != nil {
			return
		}
		buf := make([]byte, 4096)
		for {
			n, err := server.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			reads = append(reads, string(buf[:n]))
			mu.Unlock()
			var out strings.Builder
			sc := bufio.NewScanner(strings.NewReader(string(buf[:n])))
			for sc.Scan() {
				switch line := strings.TrimSuffix(sc.Text(), "\r"); line {
				case "QUIT":
					io.WriteString(server, out.String()+"bye\r\n")
					return
				case "RAW":
					out.WriteString("no crlf\n")
				case "SILENT":
				default:
					out.WriteString("ok " + line + "\r\n")
				}
			}
			if out.Len() == 0 {
				continue
			}
			if _, err := io.WriteString(server, out.String()); err != nil {
				return
			}
		}
	}()
	return client, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), reads...) }
}

func run(t *testing.T, dialogue string, opts Options) error {
	t.Helper()
	s, err := Parse("d.txt", dialogue)
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := echoServer(t)
	return s.Run(conn, opts)
}

func TestRun_PassesWhenEveryLineIsAsWritten(t *testing.T) {
	d := "# a comment\n\nS: hello\nC: NOOP\nS: ok NOOP\nC:\nS: ok \nC: x1\nS~ ok x[0-9]\nC: QUIT\nS: bye\nS: <EOF>\n"
	if err := run(t, d, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestRun_ConsecutiveClientLinesGoInOneWrite(t *testing.T) {
	s, err := Parse("d.txt", "S: hello\nC: A\nR: \"B\\r\\n\"\nC: C\nS: ok A\nS: ok B\nS: ok C\n")
	if err != nil {
		t.Fatal(err)
	}
	conn, reads := echoServer(t)
	if err := s.Run(conn, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := reads(); len(got) != 1 || got[0] != "A\r\nB\r\nC\r\n" {
		t.Fatalf("server read %q, want one read of all three lines", got)
	}
}

func TestRun_ReportsTheFirstDifferenceWithItsLine(t *testing.T) {
	for _, c := range []struct{ name, dialogue, want string }{
		{"exact line", "S: hello\nC: NOOP\nS: ok NOOP \n", `d.txt:3: want "ok NOOP ", got "ok NOOP"`},
		{"prefix is not enough", "S: hell\n", `d.txt:1: want "hell", got "hello"`},
		{"regexp must match the whole line", "S~ hell\n", `d.txt:1: want a line matching "hell", got "hello"`},
		{"line without CRLF", "S: hello\nC: RAW\nS: no crlf\n", "d.txt:3: want \"no crlf\", got \"no crlf\\n\" and line does not end in CRLF"},
		{"closed too early", "S: hello\nC: QUIT\nS: bye\nS: more\n", `d.txt:4: want "more", got "" and EOF`},
		{"not closed", "S: hello\nC: NOOP\nS: <EOF>\n", `d.txt:3: want the connection closed, got "ok NOOP" and <nil>`},
		{"directive without handler", "S: hello\n! starttls\nC: QUIT\nS: bye\n", `d.txt:2: directive "starttls": none are known here`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := run(t, c.dialogue, Options{})
			if err == nil || err.Error() != c.want {
				t.Fatalf("got %v, want %s", err, c.want)
			}
		})
	}
}

func TestRun_ReadTimeoutBoundsEachWait(t *testing.T) {
	start := time.Now()
	err := run(t, "S: hello\nC: SILENT\nS: never\n", Options{ReadTimeout: 50 * time.Millisecond})
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.HasPrefix(err.Error(), "d.txt:3:") {
		t.Fatalf("got %v, want a deadline error at line 3", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

// TestRun_DirectiveSeesEverythingSentAndMaySwapTheConnection: a
// directive runs after the lines before it are written, and the dialogue
// goes on over the connection it returns (as after a TLS handshake).
func TestRun_DirectiveSeesEverythingSentAndMaySwapTheConnection(t *testing.T) {
	s, err := Parse("d.txt", "! setup one\nS: hello\nC: SILENT\n! swap\nS: hello\nC: NOOP\nS: ok NOOP\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Setup) != 1 || s.Setup[0] != "setup one" {
		t.Fatalf("setup %q", s.Setup)
	}
	first, reads := echoServer(t)
	second, _ := echoServer(t)
	var seen []string
	err = s.Run(first, Options{Directive: func(d string, conn io.ReadWriter) (io.ReadWriter, error) {
		seen = append(seen, d)
		if conn != first {
			t.Errorf("directive got another connection")
		}
		for deadline := time.Now().Add(5 * time.Second); len(reads()) == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("SILENT not sent before the directive")
			}
		}
		return second, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != "swap" {
		t.Fatalf("directives %q", seen)
	}
}

func TestParse_RefusesWhatItCannotRead(t *testing.T) {
	for _, c := range []struct{ name, dialogue, want string }{
		{"unknown prefix", "X: what\n", `d.txt:1: cannot parse "X: what"`},
		{"prefix without space", "S:hello\n", `d.txt:1: cannot parse "S:hello"`},
		{"unquoted raw", "R: abc\nS: x\n", "d.txt:1: R: needs a Go-quoted string: invalid syntax"},
		{"bad regexp", "S~ (\n", "d.txt:1: error parsing regexp: missing closing ): `^(?:()$`"},
		{"unanswered lines at the end", "S: hello\nC: NOOP\n", "d.txt:2: the dialogue ends with lines nobody checks the answer to"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("d.txt", c.dialogue)
			if err == nil || err.Error() != c.want {
				t.Fatalf("got %v, want %s", err, c.want)
			}
		})
	}
}

// FuzzParse: any text parses or is refused with an error, never a panic,
// and every step it keeps is one of the kinds Run knows. The seeds are in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Parse("f.txt", text)
		if err != nil {
			return
		}
		for _, st := range s.Steps {
			if st.Kind < Send || st.Kind > Directive || (st.Kind == Match) != (st.re != nil) {
				t.Fatalf("step %+v", st)
			}
		}
	})
}
