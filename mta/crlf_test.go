package mta

import (
	"bytes"
	"strings"
	"testing"
)

func TestNormalizeCRLF(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"CRLF already", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"bare LF", "a\nb\n", "a\r\nb\r\n"},
		{"bare CR", "a\rb\r", "a\r\nb\r\n"},
		{"mixed", "a\r\nb\nc\rd\r\n", "a\r\nb\r\nc\r\nd\r\n"},
		{"no final newline", "a\r\nb", "a\r\nb\r\n"},
		{"no newline at all", "abc", "abc\r\n"},
		{"LF CR is two line ends", "a\n\rb", "a\r\n\r\nb\r\n"},
		{"CR CR LF", "a\r\r\nb", "a\r\n\r\nb\r\n"},
		{"blank lines kept", "h: v\n\n\nbody\n", "h: v\r\n\r\n\r\nbody\r\n"},
		{"lone LF", "\n", "\r\n"},
		{"lone CR", "\r", "\r\n"},
		{"dots untouched", ".\n..\n", ".\r\n..\r\n"},
		{"NUL and 8-bit untouched", "\x00\xff\n", "\x00\xff\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := normalizeCRLF([]byte(tt.in)); string(got) != tt.want {
				t.Errorf("normalizeCRLF(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestNormalizeCRLF_CleanInputNotCopied: a clean message (the usual case from
// SMTP DATA) is passed through without a copy.
func TestNormalizeCRLF_CleanInputNotCopied(t *testing.T) {
	in := []byte("Subject: x\r\n\r\nbody\r\n")
	if out := normalizeCRLF(in); &out[0] != &in[0] {
		t.Error("clean input was copied")
	}
}

func FuzzNormalizeCRLF(f *testing.F) {
	for _, s := range []string{"", "a\r\nb\r\n", "a\nb", "a\rb\r", "\r\n\n\r\r", "x", "\n\r", "\r\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		if got, want := cleanPrefix(in), cleanPrefixOctets(in); got != want {
			t.Fatalf("cleanPrefix(%q) = %d, the octet loop says %d", in, got, want)
		}
		out := normalizeCRLF(in)
		if !bytes.Equal(in, orig) {
			t.Fatalf("input modified: %q -> %q", orig, in)
		}
		if !onlyCRLF(out) {
			t.Fatalf("normalizeCRLF(%q) = %q has a bare CR or LF", in, out)
		}
		if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
			t.Fatalf("normalizeCRLF(%q) = %q does not end in CRLF", in, out)
		}
		if again := normalizeCRLF(out); !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
		}
		if onlyCRLF(in) && (len(in) == 0 || bytes.HasSuffix(in, []byte("\r\n"))) && !bytes.Equal(out, in) {
			t.Fatalf("clean input changed: %q -> %q", in, out)
		}
		// Only line endings change: the text between them is kept.
		strip := func(b []byte) []byte {
			return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r"), nil), []byte("\n"), nil)
		}
		if !bytes.Equal(strip(in), strip(out)) {
			t.Fatalf("text changed: %q -> %q", in, out)
		}
		// Every line end in the input is one CRLF in the output: count
		// CRLF pairs plus bare CRs and LFs.
		ends := bytes.Count(in, []byte("\r\n"))
		rest := bytes.ReplaceAll(in, []byte("\r\n"), nil)
		ends += bytes.Count(rest, []byte("\r")) + bytes.Count(rest, []byte("\n"))
		if len(in) > 0 && !bytes.HasSuffix(in, []byte("\n")) && !bytes.HasSuffix(in, []byte("\r")) {
			ends++ // the added final line end
		}
		if got := bytes.Count(out, []byte("\r\n")); got != ends {
			t.Fatalf("%q has %d line ends, output %q has %d", in, ends, out, got)
		}
	})
}

// TestCRLF_NormalisedOnceBeforeTheHooks: a message with bare CR and LF
// line ends, through the real DKIM verifier on the MX and the real signer
// on submission, is stored and queued CRLF-only: Data normalises it once,
// and the hooks keep it so.
func TestCRLF_NormalisedOnceBeforeTheHooks(t *testing.T) {
	e := headerEnv(t, 64<<10)
	const body = "Subject: mixed\nX-Old: mac\r\rfirst\nsecond\rthird\r\n"

	cl := dial(t, e.mxAddr)
	cl.cmd("EHLO client.test", "250 ")
	if got := cl.send("bob@other.test", []string{"alice@example.org"}, "From: bob@other.test\n"+body); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("MX: %s", got)
	}
	m := e.mailbox("alice@example.org")
	if len(m) != 1 || !onlyCRLF(m[0]) || !bytes.Contains(m[0], []byte("Authentication-Results: ")) {
		t.Fatalf("MX stored %q", m)
	}

	cl = dialTLS(t, e.subsAddr, e.clientTLS)
	cl.login("alice@example.org")
	if got := cl.send("alice@example.org", []string{"carol@remote.test"}, "From: alice@example.org\n"+body); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("submission: %s", got)
	}
	q := e.queue.entries()
	if len(q) != 1 || !onlyCRLF(q[0].Msg) || !bytes.Contains(q[0].Msg, []byte("DKIM-Signature: ")) {
		t.Fatalf("queued %q", q)
	}
}

// cleanPrefixOctets is cleanPrefix as first written, an octet at a time:
// the fuzz target holds the faster one to it.
func cleanPrefixOctets(msg []byte) int {
	for i := 0; i < len(msg); i++ {
		switch msg[i] {
		case '\r':
			if i+1 >= len(msg) || msg[i+1] != '\n' {
				return i
			}
			i++
		case '\n':
			return i
		}
	}
	return len(msg)
}

func TestCleanPrefix(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{"", 0},
		{"abc", 3},
		{"a\r\nb\r\n", 6},
		{"a\r\nb", 4},
		{"a\nb", 1},
		{"\n", 0},
		{"ab\r", 2},
		{"a\rb\r\n", 1},
		{"a\r\r\n", 1},
		{"a\r\nbc\rd\ne", 5},
		{"a\r\n\r\n\n", 5},
	} {
		if got := cleanPrefix([]byte(tt.in)); got != tt.want {
			t.Errorf("cleanPrefix(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// BenchmarkNormalizeCRLF_1MiB is the scan every message gets: a clean
// 1 MiB message, returned as it is.
func BenchmarkNormalizeCRLF_1MiB(b *testing.B) {
	msg := bytes.Repeat([]byte(strings.Repeat("x", 76)+"\r\n"), 1<<20/78)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if out := normalizeCRLF(msg); len(out) != len(msg) {
			b.Fatal("changed")
		}
	}
}
