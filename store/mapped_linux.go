package store

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// releaseMapped drops the resident pages of the map at addr. The address
// comes from bbolt as a number, so the raw call is used rather than
// unix.Madvise, which would need a slice made from it.
func releaseMapped(addr uintptr, length int64) error {
	if length <= 0 {
		return nil
	}
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, addr, uintptr(length), unix.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}

// fileResident returns the octets of files the process has mapped that are
// resident: the store's map and the program's own text, which stays put
// once it runs. One read of /proc/self/statm (its third field, in pages);
// 0 when that fails, so that releases wait for releaseMaxDelay.
func fileResident() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return 0
	}
	pages, err := strconv.ParseInt(string(f[2]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
