package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"minimail/store"
)

// churnedSite is a site whose database held mib MiB of mail for one user,
// all deleted since: a file mostly free pages.
func churnedSite(t *testing.T, mib int) (cfg, dbPath string) {
	t.Helper()
	cfg = initSite(t)
	dataDir := filepath.Join(filepath.Dir(cfg), "data")
	// Not compacted while open, as it would be once the deletion is done:
	// the waste is for the compaction at start and `minimail compact`.
	st, err := store.Open(dataDir, store.Options{BcryptCost: 4, NoOnlineCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const addr = "alice@example.test"
	if err := st.AddUser(addr, "pw"); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16) // 1 MiB
	var ids []uint64
	for n := 0; n < mib; n += 16 {
		batch := make([]store.Delivery, 16)
		for i := range batch {
			batch[i] = store.Delivery{Address: addr, Message: bytes.Clone(big)}
		}
		got, err := st.AppendMany(batch)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	if err := st.Delete(addr, ids); err != nil {
		t.Fatal(err)
	}
	return cfg, filepath.Join(dataDir, store.FileName)
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestCompactCommand(t *testing.T) {
	cfg, db := churnedSite(t, 16)
	before := size(t, db)

	t.Run("refused while serve runs, naming the control socket", func(t *testing.T) {
		setListen(t, cfg, map[string]string{"smtp": freePort(t)})
		cmd, _ := startServe(t, cfg, 1)
		r := minimail(t, "", "--config", cfg, "compact")
		if r.code != 1 || !strings.Contains(r.stderr, "serve is running") || !strings.Contains(r.stderr, controlSocket) {
			t.Errorf("exit %d: %s", r.code, r.stderr)
		}
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if got := size(t, db); got != before {
			t.Errorf("file changed from %d to %d bytes", before, got)
		}
	})
	t.Run("refused while another process holds the database", func(t *testing.T) {
		st, err := store.Open(filepath.Dir(db), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		r := minimail(t, "", "--config", cfg, "compact")
		if r.code != 1 || !strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, controlSocket) {
			t.Errorf("exit %d: %s", r.code, r.stderr)
		}
	})
	t.Run("stopped: prints the sizes and keeps the users", func(t *testing.T) {
		r := minimail(t, "", "--config", cfg, "compact")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		after := size(t, db)
		want := "compacted " + db + ": " + formatSize(before) + " -> " + formatSize(after) + " in "
		if !strings.HasPrefix(r.stdout, want) {
			t.Errorf("output %q, want it to start with %q", r.stdout, want)
		}
		if after > before/4 {
			t.Errorf("file %d bytes after compaction, was %d", after, before)
		}
		if u := minimail(t, "", "--config", cfg, "user", "list"); !strings.Contains(u.stdout, "alice@example.test") {
			t.Errorf("user list after compact: exit %d %s %s", u.code, u.stdout, u.stderr)
		}
	})
	t.Run("arguments are bad usage", func(t *testing.T) {
		if r := minimail(t, "", "--config", cfg, "compact", "now"); r.code != 2 {
			t.Errorf("exit %d: %s", r.code, r.stderr)
		}
	})
}

func TestServe_CompactsAMostlyFreeDatabaseBeforeServing(t *testing.T) {
	cfg, db := churnedSite(t, 80)
	before := size(t, db)
	setListen(t, cfg, map[string]string{"smtp": freePort(t)})
	cmd, logs := startServe(t, cfg, 1)
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	line := regexp.MustCompile(`msg=compacted before=(\d+) after=(\d+) duration=\S+`).FindString(logs.String())
	if line == "" {
		t.Fatalf("no compaction logged:\n%s", logs.String())
	}
	if i, j := strings.Index(logs.String(), "msg=compacted"), strings.Index(logs.String(), "msg=listening"); i > j {
		t.Errorf("compacted after listening:\n%s", logs.String())
	}
	if after := size(t, db); after > before/4 {
		t.Errorf("file %d bytes after start, was %d", after, before)
	}
	// Serving from the compacted file: the user is there.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := minimail(t, "", "--config", cfg, "user", "list")
		if strings.Contains(r.stdout, "alice@example.test") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("user list: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 32 << 10: "32.0 KiB", 2684354560: "2.5 GiB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// The compaction's log line: at start, and while serving with how long
// writes waited; a failure is a warning that names the error.
func TestLogCompaction_Lines(t *testing.T) {
	res := store.CompactResult{Compacted: true, Before: 2 << 30, After: 4 << 20,
		Duration: 420 * time.Millisecond, WritesWaited: 41 * time.Millisecond}
	for _, tt := range []struct {
		name   string
		online bool
		err    error
		want   string
	}{
		{"at start", false, nil, `level=INFO msg=compacted before=2147483648 after=4194304 duration=420ms` + "\n"},
		{"while serving", true, nil, `level=INFO msg=compacted before=2147483648 after=4194304 duration=420ms writes_waited=41ms online=true` + "\n"},
		{"failed", true, os.ErrPermission, `level=WARN msg="compaction failed; serving the database as it is" err="permission denied"` + "\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}}))
			logCompaction(log, tt.online)(res, tt.err)
			if got := buf.String(); got != tt.want {
				t.Errorf("logged %q\nwant     %q", got, tt.want)
			}
		})
	}
}
