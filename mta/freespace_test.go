package mta

import (
	"errors"
	"strings"
	"testing"
)

// A nearly full disk refuses new mail at MAIL with 452 4.3.1, before any
// of it is sent, and opens no transaction; the threshold is MinFreeBytes,
// by default 1.5 × MaxMessageBytes; a free space the store cannot tell
// refuses nothing.
func TestFreeSpace_RefusesMailWhenDiskNearlyFull(t *testing.T) {
	const maxMsg = 1 << 20
	for _, c := range []struct {
		name    string
		minFree int64
		free    int64
		err     error
		want    string
	}{
		{"plenty", 0, 1 << 40, nil, "250 "},
		{"default threshold, just enough", 0, maxMsg / 2 * 3, nil, "250 "},
		{"default threshold, one octet short", 0, maxMsg/2*3 - 1, nil, "452 4.3.1"},
		{"configured threshold", 10 << 20, 9 << 20, nil, "452 4.3.1"},
		{"no threshold", -1, 0, nil, "250 "},
		{"unknown free space", 0, 0, errors.New("statfs: not supported"), "250 "},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options, _ *Local) {
				o.MaxMessageBytes = maxMsg
				o.MinFreeBytes = c.minFree
				o.FreeSpace = func() (int64, error) { return c.free, c.err }
			})
			cl := dial(t, e.mxAddr)
			cl.cmd("EHLO client.test", "250 ")
			cl.cmd("MAIL FROM:<bob@other.test>", c.want)
			if c.err != nil {
				cl.cmd("RSET", "250 ")
				cl.cmd("MAIL FROM:<bob@other.test>", c.want)
				if n := strings.Count(e.logs.String(), "free disk space unknown"); n != 1 {
					t.Errorf("%d warnings that the free space is unknown after two transactions, want 1", n)
				}
			}
			if c.want == "250 " {
				return
			}
			cl.cmd("RCPT TO:<alice@example.org>", "503 ") // no transaction opened
			if logs := e.logs.String(); !strings.Contains(logs, `"reason":"unavailable"`) || !strings.Contains(logs, "insufficient system storage") {
				t.Errorf("no rejected line for the refusal:\n%s", logs)
			}
		})
	}
}
