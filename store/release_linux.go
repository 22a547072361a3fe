package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// releaseFile gives the blocks of f, a file that no longer has a name
// (renamed over by a compaction), back to the filesystem a step at a time,
// and closes it. The last close of a big file frees all of its blocks in
// one journal commit, and on a filesystem mounted with discard that commit
// also trims them: every fsync on the disk waits for it. The benchmark's
// 2 GB file made fsyncs of other files wait up to 73 ms that way; shrunk
// by 32 MiB a time, each step synced, the longest wait was 5 ms, and the
// release took about half a second either way. Those waits still fell on
// the commits of the mail that came meanwhile, so each step waits for its
// moment first (pace, when set): just after a commit, so that its trim
// has the time the senders take for their next messages before the next
// commit syncs. A file that still has a name is only
// closed: what is truncated here is never the open store.
func releaseFile(f *os.File, step int64, pace func(), stepped func(size int64)) {
	if f == nil {
		return
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 {
		return
	}
	for size := st.Size; size > 0; {
		if pace != nil {
			pace()
		}
		size = max(0, size-step)
		if err := f.Truncate(size); err != nil {
			return
		}
		// The sync only paces the release: each step is a journal commit
		// of its own. Its failure frees nothing less.
		_ = unix.Fdatasync(int(f.Fd()))
		if stepped != nil {
			stepped(size)
		}
	}
}
