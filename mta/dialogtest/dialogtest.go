// Package dialogtest replays protocol dialogues against a server, for the
// transcript tests of the SMTP and POP3 servers (testdata/dialog/*.txt in
// mta and pop3). A dialogue is what a person would write down watching
// the wire: what the client sends, line by line, and exactly what the
// server answers. A changed reply text, code or enhanced status code fails
// the dialogue that pins it.
//
// # Format
//
// One step per line; blank lines are ignored.
//
//	C: text      send text and CRLF; consecutive C: and R: lines go out in
//	             one write, to exercise pipelining (RFC 2920, RFC 2449 6.6)
//	C:           send an empty line (CRLF)
//	R: "quoted"  send the Go-unquoted bytes as they are (bare CR or LF,
//	             BDAT chunks, no CRLF at the end)
//	S: text      the next line the server sends must be text exactly
//	             (without its CRLF; a line not ending in CRLF fails). A
//	             multi-line SMTP reply takes one S: per line
//	S~ regexp    the next line must match regexp as a whole (transaction
//	             ids, timestamps, the trailing space of "+ ")
//	S: <EOF>     the server must have closed the connection
//	# text       a comment
//	! directive  handed to the package running the dialogue
//
// Directives before the first C:, R: or S: line set up the server and are
// returned in Script.Setup; the others are handed, in order, to
// Options.Directive once every line before them has been sent, so that a
// directive can act on the connection (do a TLS handshake, reconnect) and
// return the connection the dialogue goes on over. Each package documents
// its directives in its testdata/dialog/README.
package dialogtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Kind says what a step does.
type Kind int

const (
	Send      Kind = iota // C: and R: lines: Data is sent
	Expect                // S: text
	Match                 // S~ regexp
	Closed                // S: <EOF>
	Directive             // ! text
)

// Step is one line of a dialogue.
type Step struct {
	Line int // in the file, from 1
	Kind Kind
	Text string // Expect's line, Match's regexp, the directive
	Data []byte // what Send sends
	re   *regexp.Regexp
}

// Script is a parsed dialogue.
type Script struct {
	Name  string   // the file it came from, for messages
	Setup []string // directives before the first exchange, without "! "
	Steps []Step
}

// Load reads and parses the dialogue in file.
func Load(file string) (*Script, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("dialogue: %w", err)
	}
	return Parse(file, string(b))
}

// Parse parses a dialogue; name prefixes every error about it.
func Parse(name, text string) (*Script, error) {
	s := &Script{Name: name}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		step := Step{Line: n}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "! "):
			if len(s.Steps) == 0 {
				s.Setup = append(s.Setup, line[2:])
				continue
			}
			step.Kind, step.Text = Directive, line[2:]
		case line == "C:":
			step.Kind, step.Data = Send, []byte("\r\n")
		case strings.HasPrefix(line, "C: "):
			step.Kind, step.Data = Send, []byte(line[3:]+"\r\n")
		case strings.HasPrefix(line, "R: "):
			raw, err := strconv.Unquote(line[3:])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: R: needs a Go-quoted string: %w", name, n, err)
			}
			step.Kind, step.Data = Send, []byte(raw)
		case line == "S: <EOF>":
			step.Kind = Closed
		case line == "S:" || strings.HasPrefix(line, "S: "):
			step.Kind, step.Text = Expect, strings.TrimPrefix(line[2:], " ")
		case strings.HasPrefix(line, "S~ "):
			re, err := regexp.Compile("^(?:" + line[3:] + ")$")
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n, err)
			}
			step.Kind, step.Text, step.re = Match, line[3:], re
		default:
			return nil, fmt.Errorf("%s:%d: cannot parse %q", name, n, line)
		}
		s.Steps = append(s.Steps, step)
	}
	if k := len(s.Steps); k > 0 && s.Steps[k-1].Kind == Send {
		return nil, fmt.Errorf("%s:%d: the dialogue ends with lines nobody checks the answer to", name, s.Steps[k-1].Line)
	}
	return s, nil
}

// Options say how Run talks.
type Options struct {
	// ReadTimeout bounds each wait for a server line (10 s if zero). It is
	// set as the read deadline when the connection has SetReadDeadline.
	ReadTimeout time.Duration
	// Directive runs a directive met within the dialogue and returns the
	// connection to go on over (conn itself, or one wrapping or replacing
	// it). Nil fails any such directive.
	Directive func(directive string, conn io.ReadWriter) (io.ReadWriter, error)
}

// Run replays the dialogue over conn and returns the first difference
// between what the server said and what the dialogue expects.
func (s *Script) Run(conn io.ReadWriter, opts Options) error {
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	r := &lineReader{conn: conn, r: bufio.NewReader(conn), timeout: opts.ReadTimeout}
	var pending []byte
	flush := func(st Step) error {
		if len(pending) == 0 {
			return nil
		}
		_, err := conn.Write(pending)
		pending = pending[:0]
		if err != nil {
			return s.errorf(st, "write: %w", err)
		}
		return nil
	}
	for _, st := range s.Steps {
		if st.Kind == Send {
			pending = append(pending, st.Data...)
			continue
		}
		if err := flush(st); err != nil {
			return err
		}
		switch st.Kind {
		case Expect, Match:
			got, err := r.line()
			if err != nil {
				return s.errorf(st, "want %q, got %q and %w", st.Text, got, err)
			}
			if st.Kind == Expect && got != st.Text {
				return s.errorf(st, "want %q, got %q", st.Text, got)
			}
			if st.Kind == Match && !st.re.MatchString(got) {
				return s.errorf(st, "want a line matching %q, got %q", st.Text, got)
			}
		case Closed:
			if got, err := r.line(); !closed(err) || got != "" {
				return s.errorf(st, "want the connection closed, got %q and %v", got, err)
			}
		case Directive:
			if opts.Directive == nil {
				return s.errorf(st, "directive %q: none are known here", st.Text)
			}
			next, err := opts.Directive(st.Text, conn)
			if err != nil {
				return s.errorf(st, "directive %q: %w", st.Text, err)
			}
			if next != conn {
				conn = next
				r = &lineReader{conn: conn, r: bufio.NewReader(conn), timeout: opts.ReadTimeout}
			}
		}
	}
	return nil
}

func (s *Script) errorf(st Step, format string, args ...any) error {
	return fmt.Errorf("%s:%d: "+format, append([]any{s.Name, st.Line}, args...)...)
}

// closed reports whether err says the peer closed the connection: EOF, or
// a reset when the server closed with client data unread (RFC 1122
// 4.2.2.13).
func closed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

type lineReader struct {
	conn    io.ReadWriter
	r       *bufio.Reader
	timeout time.Duration
}

// line reads one line and returns it without its CRLF; a line that ends
// otherwise is an error.
func (l *lineReader) line() (string, error) {
	if d, ok := l.conn.(interface{ SetReadDeadline(time.Time) error }); ok {
		// An error here means the connection is closed, which the read
		// says in its own words.
		_ = d.SetReadDeadline(time.Now().Add(l.timeout))
	}
	s, err := l.r.ReadString('\n')
	if err != nil {
		return s, err
	}
	if !strings.HasSuffix(s, "\r\n") {
		return s, errors.New("line does not end in CRLF")
	}
	return strings.TrimSuffix(s, "\r\n"), nil
}
