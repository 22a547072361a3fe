package mta

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDialogs replays the transcripts in testdata/dialog. Each file talks
// to the server its name starts with (mx- or submission-; the latter with
// allow_insecure_auth on) over a plain connection:
//
//	C: line      sent with CRLF appended ("C:" alone sends an empty line)
//	R: "quoted"  sent as is, after Go unquoting (for bare CR/LF and chunks)
//	S: prefix    the next reply's last line must start with prefix
//	S: <closed>  the server must have closed the connection
//	# comment
func TestDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialog/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dialogues: %v", err)
	}
	e := newEnv(t, func(o *Options, _ *Local) { o.AllowInsecureAuth = true })
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			addr := e.mxAddr
			if strings.HasPrefix(name, "submission-") {
				addr = e.subAddr
			}
			replay(t, file, dial(t, addr))
		})
	}
}

func replay(t *testing.T, file string, cl *client) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case line == "C:":
			cl.write("\r\n")
		case strings.HasPrefix(line, "C: "):
			cl.write(line[3:] + "\r\n")
		case strings.HasPrefix(line, "R: "):
			raw, err := strconv.Unquote(line[3:])
			if err != nil {
				t.Fatalf("%s:%d: %v", file, n, err)
			}
			cl.write(raw)
		case line == "S: <closed>":
			cl.expectClosed()
		case strings.HasPrefix(line, "S: "):
			lines, err := cl.reply()
			if err != nil || !strings.HasPrefix(lines[len(lines)-1], line[3:]) {
				t.Fatalf("%s:%d: want %q, got %q (%v)", file, n, line[3:], lines, err)
			}
		default:
			t.Fatalf("%s:%d: cannot parse %q", file, n, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}
