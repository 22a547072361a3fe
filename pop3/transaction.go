package pop3

import (
	"errors"
	"fmt"
	"strconv"
)

// stat counts the messages not marked deleted and their octets.
func (s *session) stat() (count int, size int64) {
	for _, m := range s.msgs {
		if !m.deleted {
			count++
			size += m.Size
		}
	}
	return count, size
}

// uid is the RFC 1939 section 7 unique-id, the one the Maildrop gives.
func uid(m *message) string { return m.UIDL }

// msgArg resolves a message-number argument, answering -ERR for one that is
// malformed, out of range or marked deleted (RFC 1939 section 5).
func (s *session) msgArg(arg string) (int, *message, bool) {
	n, ok := parseNumber(arg)
	switch {
	case !ok:
		s.err("invalid message number")
		return 0, nil, false
	case n < 1 || n > uint64(len(s.msgs)):
		s.err("no such message, only %d messages in maildrop", len(s.msgs))
		return 0, nil, false
	}
	m := &s.msgs[n-1]
	if m.deleted {
		s.err("message %d already deleted", n)
		return 0, nil, false
	}
	return int(n), m, true
}

func (s *session) cmdStat(c command) {
	if s.wantArgs(c, 0) {
		count, size := s.stat()
		s.ok("%d %d", count, size)
	}
}

// cmdList and cmdUidl answer for one message, or for all not deleted as a
// multi-line response.
func (s *session) cmdList(c command) {
	s.listing(c, func(m *message) string { return strconv.FormatInt(m.Size, 10) })
}

func (s *session) cmdUidl(c command) {
	s.listing(c, uid)
}

func (s *session) listing(c command, value func(*message) string) {
	switch len(c.Args) {
	case 0:
		count, size := s.stat()
		s.ok("%d messages (%d octets)", count, size)
		for i := range s.msgs {
			if m := &s.msgs[i]; !m.deleted {
				fmt.Fprintf(s.w, "%d %s\r\n", i+1, value(m))
			}
		}
		s.w.WriteString(terminator)
	case 1:
		if n, m, ok := s.msgArg(c.Args[0]); ok {
			s.ok("%d %s", n, value(m))
		}
	default:
		s.err("%s takes at most one argument", c.Verb)
	}
}

// read fetches a message's bytes, answering -ERR if it cannot.
func (s *session) read(m *message) ([]byte, bool) {
	data, err := s.srv.md.Read(s.addr, m.ID)
	switch {
	case errors.Is(err, ErrNoMessage):
		s.err("message is no longer in the maildrop")
		return nil, false
	case err != nil:
		s.srv.log.Warn("pop3 read failed", "client", s.ip.String(), "user", s.addr, "id", m.ID, "err", err)
		s.err("[SYS/TEMP] cannot read message, try again later")
		return nil, false
	}
	return data, true
}

// cmdRetr sends a whole message. The octet count is that of the message
// itself, before dot-stuffing (RFC 1939 section 11).
func (s *session) cmdRetr(c command) {
	if !s.wantArgs(c, 1) {
		return
	}
	_, m, ok := s.msgArg(c.Args[0])
	if !ok {
		return
	}
	data, ok := s.read(m)
	if !ok {
		return
	}
	s.ok("%d octets", len(data))
	writeDotStuffed(s.w, data)
	s.retrieved++
	m.retrieved = true
}

// cmdTop sends the header and the first lines of the body (RFC 1939
// section 7).
func (s *session) cmdTop(c command) {
	if !s.wantArgs(c, 2) {
		return
	}
	_, m, ok := s.msgArg(c.Args[0])
	if !ok {
		return
	}
	lines, ok := parseNumber(c.Args[1])
	if !ok {
		s.err("invalid line count")
		return
	}
	data, ok := s.read(m)
	if !ok {
		return
	}
	s.ok("top of message follows")
	writeDotStuffed(s.w, data[:topCut(data, lines)])
}

// cmdDele marks a message; nothing is removed before QUIT.
func (s *session) cmdDele(c command) {
	if !s.wantArgs(c, 1) {
		return
	}
	if n, m, ok := s.msgArg(c.Args[0]); ok {
		m.deleted = true
		s.ok("message %d deleted", n)
	}
}

// cmdRset unmarks every message.
func (s *session) cmdRset(c command) {
	if !s.wantArgs(c, 0) {
		return
	}
	for i := range s.msgs {
		s.msgs[i].deleted = false
	}
	count, size := s.stat()
	s.ok("maildrop has %d messages (%d octets)", count, size)
}

// Updater is a Maildrop that also records, in the transaction that
// deletes, which messages the session retrieved (for `minimail trace`):
// one write per session at QUIT, none per RETR. Found by type assertion.
type Updater interface {
	Update(addr string, u Update) error
}

// Update is what one session's QUIT commits.
type Update struct {
	Deleted   []uint64
	Retrieved []uint64
	Client    string // the client's address
}

// update commits the UPDATE state: through the Updater when the Maildrop
// is one, else only the deletions. A session that only retrieved learns
// nothing from a failed write: its mail is as it was.
func (s *session) update(deleted, retrieved []uint64) error {
	u, ok := s.srv.md.(Updater)
	if !ok {
		if len(deleted) == 0 {
			return nil
		}
		return s.srv.md.Delete(s.addr, deleted)
	}
	err := u.Update(s.addr, Update{Deleted: deleted, Retrieved: retrieved, Client: s.ip.String()})
	if err != nil && len(deleted) == 0 {
		s.srv.log.Warn("pop3 trace write failed", "client", s.ip.String(), "user", s.addr, "err", err)
		return nil
	}
	return err
}

// cmdQuit ends the session. From TRANSACTION it is the UPDATE state (RFC
// 1939 section 6): the marked messages go in one Delete, and if that fails
// none are gone and the client hears -ERR.
func (s *session) cmdQuit(c command) {
	host := s.srv.opts.Hostname
	if s.state == stateAuthorization {
		s.ok("%s POP3 server signing off", host)
		s.result = resultQuit
		return
	}
	var ids, retrieved []uint64
	for _, m := range s.msgs {
		if m.deleted {
			ids = append(ids, m.ID)
		}
		if m.retrieved {
			retrieved = append(retrieved, m.ID)
		}
	}
	if len(ids) > 0 || len(retrieved) > 0 {
		if s.cut.Load() {
			// Shutdown gave up on this session: it must not delete.
			s.result = resultShutdown
			return
		}
		if err := s.update(ids, retrieved); err != nil {
			s.srv.log.Warn("pop3 delete failed", "client", s.ip.String(), "user", s.addr, "err", err)
			s.err("[SYS/TEMP] deleted messages not removed, try again later")
			s.result = resultDeleteFailed
			return
		}
	}
	s.deleted = len(ids)
	s.ok("%s POP3 server signing off (%d messages left)", host, len(s.msgs)-len(ids))
	s.result = resultQuit
}
