package store_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"minimail/store"
)

// keepingClient is a POP3 client that leaves mail on the server, as
// fetchmail --keep, getmail and Thunderbird's "leave messages on server" do:
// it downloads only messages whose UIDL it has not seen.
type keepingClient struct {
	seen map[string]string // UIDL -> message it stood for
}

func newKeepingClient() *keepingClient { return &keepingClient{seen: map[string]string{}} }

// sync lists addr's mailbox and returns the messages it would download.
func (c *keepingClient) sync(t *testing.T, s *store.Store, addr string) []string {
	t.Helper()
	infos, err := s.List(addr)
	if err != nil {
		t.Fatal(err)
	}
	var fetched []string
	for _, in := range infos {
		msg, err := s.Read(addr, in.ID)
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := c.seen[in.UIDL()]; ok {
			if prev != string(msg) {
				t.Errorf("UIDL %s stood for %q, now for %q: the client skips it", in.UIDL(), prev, msg)
			}
			continue
		}
		c.seen[in.UIDL()] = string(msg)
		fetched = append(fetched, string(msg))
	}
	return fetched
}

func appendAll(t *testing.T, s *store.Store, addr string, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		if _, err := s.Append(addr, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
}

func wantFetched(t *testing.T, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("client fetched %q, want %q", got, want)
	}
}

// restoreOver writes the backup over path in place, as cp does: same file,
// same inode, older contents.
func restoreOver(t *testing.T, backup, path string) {
	t.Helper()
	if err := os.WriteFile(path, readFile(t, backup), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestUIDL_NewMailAfterRestoringAnOlderBackupIsNeverSkipped: backup, more
// mail, restore of that backup, new mail: the new mail gets UIDLs the client
// has never seen, also when the same backup is restored a second time, while
// the messages in the backup keep theirs.
func TestUIDL_NewMailAfterRestoringAnOlderBackupIsNeverSkipped(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, store.FileName)
	backup := filepath.Join(t.TempDir(), "backup.db")
	c := newKeepingClient()

	s := openStore(t, dir)
	if err := s.AddUser(alice, "pw"); err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, alice, "m1\r\n", "m2\r\n")
	wantFetched(t, c.sync(t, s, alice), "m1\r\n", "m2\r\n")
	if err := s.Backup(backup); err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, alice, "m3 after the backup\r\n", "m4 after the backup\r\n")
	wantFetched(t, c.sync(t, s, alice), "m3 after the backup\r\n", "m4 after the backup\r\n")
	s.Close()

	for _, round := range []string{"first restore", "same backup again"} {
		restoreOver(t, backup, live)
		s = openStore(t, dir)
		// m1 and m2 keep their UIDLs: nothing is fetched again.
		wantFetched(t, c.sync(t, s, alice))
		appendAll(t, s, alice, "new after "+round+"\r\n")
		wantFetched(t, c.sync(t, s, alice), "new after "+round+"\r\n")
		s.Close()
	}
}

// TestUIDL_NewMailInARecreatedDatabaseIsNeverSkipped: the file removed and
// the user created again from scratch: ids start over, UIDLs do not.
func TestUIDL_NewMailInARecreatedDatabaseIsNeverSkipped(t *testing.T) {
	dir := t.TempDir()
	c := newKeepingClient()
	for _, round := range []string{"first", "re-created"} {
		s := openStore(t, dir)
		if err := s.AddUser(alice, "pw"); err != nil {
			t.Fatal(err)
		}
		appendAll(t, s, alice, round+" 1\r\n", round+" 2\r\n")
		wantFetched(t, c.sync(t, s, alice), round+" 1\r\n", round+" 2\r\n")
		s.Close()
		if err := os.Remove(filepath.Join(dir, store.FileName)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUIDL_StableAcrossReopenAndBackup: a message's UIDL never changes, so a
// client leaving mail on the server downloads each message once.
func TestUIDL_StableAcrossReopenAndBackup(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.AddUser(alice, "pw"); err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, alice, "a\r\n", "b\r\n")
	uidls := func(s *store.Store) string {
		infos, err := s.List(alice)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, in := range infos {
			out = append(out, in.UIDL())
		}
		return strings.Join(out, " ")
	}
	want := uidls(s)
	backupDir := t.TempDir()
	if err := s.Backup(filepath.Join(backupDir, store.FileName)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for name, dir := range map[string]string{"reopened": dir, "backup": backupDir} {
		s := openStore(t, dir)
		if got := uidls(s); got != want {
			t.Errorf("%s: UIDLs %q, want %q", name, got, want)
		}
		s.Close()
	}
}

// TestUIDL_IsAValidUniqueID: RFC 1939 section 7: 1 to 70 octets in the range
// 0x21 to 0x7E.
func TestUIDL_IsAValidUniqueID(t *testing.T) {
	s := storeWithUsers(t, alice)
	appendAll(t, s, alice, "x\r\n")
	infos, err := s.List(alice)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{infos[0].UIDL(), (store.MessageInfo{ID: ^uint64(0)}).UIDL()} {
		if len(id) < 1 || len(id) > 70 {
			t.Errorf("UIDL %q: %d octets", id, len(id))
		}
		for _, c := range []byte(id) {
			if c < 0x21 || c > 0x7e {
				t.Errorf("UIDL %q: octet %#x", id, c)
			}
		}
	}
}
