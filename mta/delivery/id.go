package delivery

import (
	"crypto/rand"
	"encoding/hex"
)

// NewID returns a message id: 16 hex digits, random, so that ids from
// servers sharing logs, restored backups or re-created databases do not
// collide. It is the id of a message everywhere: the 250 reply after DATA,
// the log lines, the queue, and the bounce that reports on it.
func NewID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
