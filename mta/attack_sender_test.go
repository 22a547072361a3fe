package mta

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
)

// TestAttack_QuotedSenderIsReadOnce: a quoted local part may hold '@', '>'
// and spaces. The sender is parsed once (RFC 5321 4.1.2) and every later
// use gets the same address, written back with its quotes: the checks
// (Verify's mailFrom) and the stored Return-Path cannot be made to see two
// different senders, nor a second header field.
func TestAttack_QuotedSenderIsReadOnce(t *testing.T) {
	var mu sync.Mutex
	var verified []string
	e := newEnv(t, func(o *Options, _ *Local) {
		o.Verify = func(_ context.Context, _ net.IP, _, mailFrom string, msg []byte) (Verdict, error) {
			mu.Lock()
			verified = append(verified, mailFrom)
			mu.Unlock()
			return Verdict{Message: msg}, nil
		}
	})
	for i, c := range []struct{ sent, path string }{
		{`"x@evil.test>, <ceo"@paypal.test`, `"x@evil.test>, <ceo"@paypal.test`},
		{`"a> Delivered-To: <ceo"@evil.test`, `"a> Delivered-To: <ceo"@evil.test`},
		{`"quote\"and\\backslash"@other.test`, `"quote\"and\\backslash"@other.test`},
		{`"plain"@Other.TEST`, `plain@other.test`},
	} {
		t.Run(c.sent, func(t *testing.T) {
			cl := dial(t, e.mxAddr)
			cl.cmd("EHLO client.test", "250 ")
			cl.send(c.sent, []string{"alice@example.org"}, "Subject: q\r\n\r\nbody\r\n")
			m := e.mailbox("alice@example.org")
			if len(m) != i+1 {
				t.Fatalf("%d messages", len(m))
			}
			want := "Return-Path: <" + c.path + ">\r\n"
			if !bytes.HasPrefix(m[i], []byte(want)) {
				t.Errorf("stored %q, want it to start with %q", firstLine(m[i]), want)
			}
			if n := bytes.Count(m[i], []byte("\r\nDelivered-To:")); n != 1 {
				t.Errorf("%d Delivered-To fields", n)
			}
			mu.Lock()
			got := verified[len(verified)-1]
			mu.Unlock()
			if got != c.path {
				t.Errorf("Verify got mailFrom %q, want %q", got, c.path)
			}
		})
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\r\n")
	return s
}
