package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"minimail/store"
)

// The server runs as the owner of data_dir (the minimail user under
// systemd, uid 65532 in the container), and the admin commands may run as
// root. A database file root creates or leaves root's would make the next
// `serve` fail with "permission denied", so the commands hand it back.

// openStoreDirect opens the store for an admin command when no server
// answers on the control socket. Run as root, it leaves minimail.db owned
// by the owner of data_dir.
func openStoreDirect(dataDir string) (*store.Store, error) {
	st, err := store.Open(dataDir, store.Options{})
	switch {
	case errors.Is(err, store.ErrLocked):
		if holder := lockHolder(filepath.Join(dataDir, store.FileName)); holder != "" {
			err = fmt.Errorf("%w: %s", err, holder)
		}
		return nil, fmt.Errorf("%w, and %s does not answer: is the server starting or stopping? try again", err, filepath.Join(dataDir, controlSocket))
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("%w: %s", err, runAsHint(dataDir))
	case err != nil:
		return nil, err
	}
	if err := chownToDirOwner(dataDir, filepath.Join(dataDir, store.FileName)); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// chownToDirOwner gives file the owner and group of dir when run as root
// and they differ.
func chownToDirOwner(dir, file string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	d, err := ownerOf(dir)
	if err != nil {
		return err
	}
	f, err := ownerOf(file)
	if err != nil {
		return err
	}
	if d == f {
		return nil
	}
	if err := os.Chown(file, d.uid, d.gid); err != nil {
		return fmt.Errorf("give %s to the owner of %s: %w", file, dir, err)
	}
	return nil
}

type owner struct{ uid, gid int }

func ownerOf(path string) (owner, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return owner{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, fmt.Errorf("%s: no owner information", path)
	}
	return owner{int(st.Uid), int(st.Gid)}, nil
}

// runAsHint says whom to run an admin command as when data_dir or its
// control socket is not ours to use.
func runAsHint(dataDir string) string {
	name := "OWNER"
	if o, err := ownerOf(dataDir); err == nil {
		if o.uid == 0 {
			return fmt.Sprintf("run admin commands as root, the owner of %s (sudo minimail ...)", dataDir)
		}
		name = userName(o.uid)
	}
	return fmt.Sprintf("run admin commands as root or as %s, the owner of %s (sudo -u %s minimail ...)", name, dataDir, name)
}
