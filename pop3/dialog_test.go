package pop3

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"minimail/mta/tlstest"
)

// TestDialogs replays every testdata/dialog/*.txt transcript against a
// server over the fixture maildrop. The format is described in
// testdata/dialog/README.
func TestDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialog/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dialogs: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			t.Parallel()
			runDialog(t, file)
		})
	}
}

func runDialog(t *testing.T, file string) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []string
	opts := Options{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch line {
		case "! insecure":
			opts.AllowInsecureAuth = true
			continue
		case "! stls":
			opts.TLSConfig, _ = tlstest.Pair(t, "pop.test")
			continue
		}
		if line != "" && !strings.HasPrefix(line, "#") {
			steps = append(steps, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	h := startServer(t, fixtureMaildrop(t), opts)
	c := dial(t, h.addr)
	var pending []string // C: lines not yet sent: consecutive ones go in one write
	flush := func() {
		if len(pending) > 0 {
			c.send(pending...)
			pending = nil
		}
	}
	for _, step := range steps {
		where := func() string { return file + ": step " + step }
		switch {
		case strings.HasPrefix(step, "C: "):
			pending = append(pending, step[3:])
		case step == "C:":
			pending = append(pending, "")
		case step == "S: <EOF>":
			flush()
			c.expectEOF()
		case strings.HasPrefix(step, "S: "):
			flush()
			if got := c.line(); got != step[3:] {
				t.Fatalf("%s: got %q", where(), got)
			}
		case strings.HasPrefix(step, "S~ "):
			flush()
			re := regexp.MustCompile("^(?:" + step[3:] + ")$")
			if got := c.line(); !re.MatchString(got) {
				t.Fatalf("%s: got %q", where(), got)
			}
		case step == "! reconnect":
			flush()
			c.conn.Close()
			h.waitEnded(t, 1)
			c = dial(t, h.addr)
		default:
			t.Fatalf("%s: unknown step", where())
		}
	}
	if len(pending) > 0 {
		t.Fatalf("%s: ends with unanswered C: lines", file)
	}
}
