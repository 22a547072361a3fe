//go:build linux || darwin || freebsd

package store

import "golang.org/x/sys/unix"

// fsAvail is the free space of path's file system available to an
// unprivileged writer (statfs's f_bavail).
func fsAvail(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
