package store

import "golang.org/x/sys/unix"

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
