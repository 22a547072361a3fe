//go:build !linux

package main

import (
	"errors"
	"syscall"
)

type peerCredentials struct {
	pid      int
	uid, gid int
}

// peerCred needs SO_PEERCRED, which only Linux has in this form: without
// it listen.sendmail could not tell one local user from another.
func peerCred(syscall.Conn) (peerCredentials, error) {
	return peerCredentials{}, errors.New("peer credentials: listen.sendmail needs Linux (SO_PEERCRED)")
}
