//go:build !linux

package store

import "os"

// releaseFile closes f. The stepped release (release_linux.go) needs the
// link count, which is read the Linux way; elsewhere the last close frees
// the blocks at once.
func releaseFile(f *os.File, step int64, pace func(), stepped func(size int64)) {
	if f != nil {
		f.Close()
	}
}
