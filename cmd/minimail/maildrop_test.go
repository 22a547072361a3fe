package main

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"minimail/pop3"
	"minimail/store"
)

func openTestStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestMaildropSpeaksPOP3Errors: the adapter hands the POP3 server its own
// sentinels for what the store reports in its own.
func TestMaildropSpeaksPOP3Errors(t *testing.T) {
	st := openTestStore(t, t.TempDir())
	if err := st.AddUser("alice@example.test", "pw"); err != nil {
		t.Fatal(err)
	}
	id, err := st.Append("alice@example.test", []byte("Subject: x\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	md := maildrop{st}
	if addr, err := md.Authenticate("", "Alice@Example.test", "pw"); err != nil || addr != "alice@example.test" {
		t.Errorf("Authenticate with the right password = %q, %v", addr, err)
	}
	for _, c := range [][2]string{{"alice@example.test", "wrong"}, {"nobody@example.test", "pw"}, {"alice", "pw"}} {
		if _, err := md.Authenticate("", c[0], c[1]); !errors.Is(err, pop3.ErrAuthFailed) {
			t.Errorf("Authenticate(%q, %q) = %v, want pop3.ErrAuthFailed", c[0], c[1], err)
		}
	}
	if _, err := md.Authenticate("bob@example.test", "alice@example.test", "pw"); !errors.Is(err, pop3.ErrNotAuthorized) {
		t.Errorf("Authenticate as another user = %v, want pop3.ErrNotAuthorized", err)
	}
	infos, err := md.List("alice@example.test")
	stored, _ := st.List("alice@example.test")
	if len(stored) != 1 {
		t.Fatalf("store lists %v", stored)
	}
	if want := []pop3.MessageInfo{{ID: id, UIDL: stored[0].UIDL(), Size: 18}}; err != nil || !slices.Equal(infos, want) {
		t.Errorf("List = %v, %v; want %v", infos, err, want)
	}
	if _, err := md.Read("alice@example.test", id+1); !errors.Is(err, pop3.ErrNoMessage) {
		t.Errorf("Read of a missing message = %v, want pop3.ErrNoMessage", err)
	}
	if err := st.DeleteUser("alice@example.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := md.Read("alice@example.test", id); !errors.Is(err, pop3.ErrNoMessage) {
		t.Errorf("Read after the user was deleted = %v, want pop3.ErrNoMessage", err)
	}
}

// TestMaildropUIDLsSurviveBackupRestore: UIDLs are the store's, so a restored
// backup served by a new server lists the same ones, and ids of deleted
// messages are never handed out again.
func TestMaildropUIDLsSurviveBackupRestore(t *testing.T) {
	const alice, pw = "alice@example.test", "alice-pw"
	st := openTestStore(t, t.TempDir())
	if err := st.AddUser(alice, pw); err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{"one", "two", "three"} {
		if _, err := st.Append(alice, []byte("Subject: "+subject+"\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	// session lists the UIDLs at login, then runs cmds and QUIT.
	session := func(st *store.Store, cmds ...string) []string {
		t.Helper()
		srv := pop3.NewServer(maildrop{st}, pop3.Options{AllowInsecureAuth: true, AuthFailDelay: -1})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(l)
		defer srv.Shutdown(context.Background())
		conn, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		p := newPOP3Client(conn)
		for _, cmd := range []string{"", "USER " + alice, "PASS " + pw} {
			if _, err := p.ok(cmd); err != nil {
				t.Fatal(err)
			}
		}
		uidl, err := p.multi("UIDL")
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range append(cmds, "QUIT") {
			if _, err := p.ok(cmd); err != nil {
				t.Fatal(err)
			}
		}
		return strings.Split(strings.TrimSpace(string(uidl)), "\r\n")
	}
	first := session(st, "DELE 3") // the newest: a store that reused ids would hand its id out again
	if _, err := st.Append(alice, []byte("Subject: four\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	before := session(st)
	if len(first) != 3 || len(before) != 3 || !slices.Equal(before[:2], first[:2]) {
		t.Fatalf("UIDL = %q after %q, want the first two kept", before, first)
	}
	if uidlOf(before[2]) == uidlOf(first[2]) {
		t.Fatalf("new message got the UIDL of the deleted one: %q", before[2])
	}

	dir := t.TempDir()
	if err := st.Backup(filepath.Join(dir, store.FileName)); err != nil {
		t.Fatal(err)
	}
	if after := session(openTestStore(t, dir)); !slices.Equal(after, before) {
		t.Fatalf("UIDL after restore = %q, want %q", after, before)
	}
}

// uidlOf is the unique-id of a UIDL listing line "n unique-id".
func uidlOf(line string) string {
	_, uidl, _ := strings.Cut(line, " ")
	return uidl
}
