package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"minimail/store"
)

// backupIdle bounds each read and write of a backup stream on the control
// socket: a large database may take long to copy, a stalled peer may not.
const backupIdle = time.Minute

// backupFile writes a consistent copy of the database to path, from this
// process: the file lands where the admin asked, whatever the server's view
// of the file system (under systemd, PrivateTmp= gives the server another
// /tmp and ProtectSystem=strict a read-only /). A running server streams
// its copy over the control socket; with none, the store is opened here.
// The copy goes to a temporary file beside path, is fsync'd and renamed, so
// path never holds a partial copy and success means the file is complete.
// An existing path is never overwritten (it might be the database itself).
func backupFile(cfg *Config, path string) (int64, error) {
	if _, err := os.Lstat(path); err == nil {
		return 0, fmt.Errorf("backup file %s already exists: backup never overwrites; remove it or pick another name", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	n, err := copyDatabase(cfg, tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if _, lerr := os.Lstat(path); lerr == nil {
			err = fmt.Errorf("%s appeared while the copy was written; not overwritten", path)
		}
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return 0, fmt.Errorf("backup %s: %w", path, err)
	}
	return n, nil
}

// copyDatabase writes the database copy to w: streamed by the running
// server, or read from the store opened here when none runs.
func copyDatabase(cfg *Config, w io.Writer) (int64, error) {
	n, err := backupFromServer(cfg.DataDir, w)
	if !errors.Is(err, errNoServer) {
		return n, err
	}
	st, err := openStoreDirect(cfg.DataDir)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	return st.WriteBackup(w, nil)
}

// backupFromServer asks the running server for its copy: a response line
// with the size, then exactly that many bytes.
func backupFromServer(dataDir string, w io.Writer) (int64, error) {
	c, err := dialControl(dataDir)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	path := filepath.Join(dataDir, controlSocket)
	conn := &idleConn{Conn: c, idle: backupIdle}
	if err := json.NewEncoder(conn).Encode(request{Op: "backup"}); err != nil {
		return 0, fmt.Errorf("control socket %s: %w", path, err)
	}
	dec := json.NewDecoder(conn)
	var resp response
	if err := dec.Decode(&resp); err != nil {
		return 0, fmt.Errorf("control socket %s: no answer: %w", path, err)
	}
	if resp.Error != "" {
		return 0, errors.New(resp.Error)
	}
	if resp.Size <= 0 {
		return 0, fmt.Errorf("control socket %s: the server announced no backup", path)
	}
	// json.Encoder ends the response with a newline; the copy follows it.
	rest := bufio.NewReader(io.MultiReader(dec.Buffered(), conn))
	if b, err := rest.ReadByte(); err != nil || b != '\n' {
		return 0, fmt.Errorf("control socket %s: no backup after the answer", path)
	}
	n, err := io.CopyN(w, rest, resp.Size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return n, fmt.Errorf("control socket %s: copied %d of %d bytes: %w", path, n, resp.Size, err)
	}
	return n, nil
}

// serveBackup answers a backup request on c: the size, then the copy.
func serveBackup(c net.Conn, st *store.Store) (int64, error) {
	conn := &idleConn{Conn: c, idle: backupIdle}
	enc := json.NewEncoder(conn)
	began := false
	n, err := st.WriteBackup(conn, func(size int64) error {
		began = true
		return enc.Encode(response{Size: size})
	})
	if err != nil && !began {
		enc.Encode(response{Error: err.Error()})
	}
	return n, err
}

// idleConn moves the deadline forward before every read and write.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	c.Conn.SetDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.Conn.SetDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(p)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
