package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/urfave/cli/v2"

	"minimail/store"
)

// compactCommand rewrites the database without the pages of deleted mail,
// which bbolt reuses but never gives back to the filesystem. It needs the
// database to itself: bbolt allows one opener, and copying a file that
// mail is being written to would not be a copy of anything.
func compactCommand() *cli.Command {
	return &cli.Command{
		Name:  "compact",
		Usage: "give the disk space of deleted mail back: rewrite the database with only its live data (serve must be stopped)",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("compact takes no arguments")
			}
			cfg, err := config(c)
			if err != nil {
				return err
			}
			sock := filepath.Join(cfg.DataDir, controlSocket)
			if serverAnswers(sock) {
				return fmt.Errorf("serve is running on %s (%s answers): stop it, then compact", cfg.DataDir, sock)
			}
			res, err := store.Compact(cfg.DataDir, store.CompactOptions{})
			if errors.Is(err, store.ErrLocked) {
				return fmt.Errorf("%w, and %s does not answer: is serve starting or stopping? stop it, then compact", err, sock)
			}
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("%w: %s", err, runAsHint(cfg.DataDir))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "compacted %s: %s -> %s in %s\n", filepath.Join(cfg.DataDir, store.FileName),
				formatSize(res.Before), formatSize(res.After), res.Duration.Round(time.Millisecond))
			return nil
		},
	}
}

// serverAnswers reports whether a server listens on the control socket.
func serverAnswers(sock string) bool {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// compactAtStart is serve's first step on the store: a file that deleted
// mail left mostly empty is compacted before it is opened
// (store.CompactIfWasteful has the rule). A failed compaction leaves the
// file as it was, so serve goes on with it.
func compactAtStart(dataDir string, log *slog.Logger) {
	res, err := store.CompactIfWasteful(dataDir, store.CompactOptions{})
	if errors.Is(err, store.ErrLocked) {
		return // another process has it: the Open that follows says so
	}
	logCompaction(log, false)(res, err)
	if res.Compacted {
		// Copying the file went through tens of megabytes of buffers that
		// a server at rest would otherwise keep for minutes.
		debug.FreeOSMemory()
	}
}

// logCompaction logs a compaction: serve's at start (online false) and the
// store's while serving. A failed one leaves the file as it was.
func logCompaction(log *slog.Logger, online bool) func(store.CompactResult, error) {
	return func(res store.CompactResult, err error) {
		switch {
		case err != nil:
			log.Warn("compaction failed; serving the database as it is", "err", err)
		case res.Compacted && online:
			log.Info("compacted", "before", res.Before, "after", res.After, "duration", res.Duration.Round(time.Millisecond),
				"writes_waited", res.WritesWaited.Round(time.Millisecond), "online", true)
		case res.Compacted:
			log.Info("compacted", "before", res.Before, "after", res.After, "duration", res.Duration.Round(time.Millisecond))
		}
	}
}

// formatSize prints a byte count the way df -h does, with the exact count
// for small ones.
func formatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, prefix := float64(n)/unit, "KMGTPE"
	i := 0
	for v >= unit && i < len(prefix)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, prefix[i])
}
