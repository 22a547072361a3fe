package main

import (
	"strings"
	"testing"
)

// TestControlSocketChecksAddressesAsTheCommandLineDoes: user.add and
// user.passwd sent straight to the running server's control socket are
// held to userAddress, the check `minimail user add` makes: no control
// bytes, no foreign domain, nothing created.
func TestControlSocketChecksAddressesAsTheCommandLineDoes(t *testing.T) {
	s := newSite(t, "a.test", "")
	for _, tc := range []struct{ name, op, addr, wantErr string }{
		{"NUL byte", "user.add", "bob\x00@a.test", "control"},
		{"NUL after the domain", "user.add", "bob@a.test\x00", "control"},
		{"control byte", "user.add", "b\x1bob@a.test", "control"},
		{"foreign domain", "user.add", "eve@other.test", "not in domains"},
		{"foreign domain for passwd", "user.passwd", "eve@other.test", "not in domains"},
		{"no @", "user.add", "bob", "local@domain"},
		{"spaces", "user.add", " bob@a.test", "spaces"},
		{"a local address", "user.add", "Bob@A.test", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := callServer(s.cfg.DataDir, request{Op: tc.op, Addr: tc.addr, Password: "a long passphrase"})
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErr == "" {
				if resp.Error != "" {
					t.Fatalf("%s %q: %s", tc.op, tc.addr, resp.Error)
				}
				return
			}
			if !strings.Contains(resp.Error, tc.wantErr) {
				t.Fatalf("%s %q: error %q, want one with %q", tc.op, tc.addr, resp.Error, tc.wantErr)
			}
		})
	}
	users, err := s.srv.st.Users()
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 1 || users[0].Address != "Bob@a.test" {
		t.Fatalf("users %+v, want only Bob@a.test", users)
	}
}
