package main

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCredentials are who is at the other end of a unix socket connection, as the
// kernel recorded it when the peer connected (SO_PEERCRED): nothing the
// peer says about itself.
type peerCredentials struct {
	pid      int
	uid, gid int
}

func peerCred(c syscall.Conn) (peerCredentials, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peerCredentials{}, fmt.Errorf("peer credentials: %w", err)
	}
	var uc *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peerCredentials{}, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return peerCredentials{}, fmt.Errorf("peer credentials (SO_PEERCRED): %w", serr)
	}
	return peerCredentials{pid: int(uc.Pid), uid: int(uc.Uid), gid: int(uc.Gid)}, nil
}
