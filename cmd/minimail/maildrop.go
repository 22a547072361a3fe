package main

import (
	"errors"
	"fmt"

	"minimail/pop3"
	"minimail/store"
)

// maildrop is the store as the POP3 server sees it: pop3.Maildrop, with the
// store's types and errors turned into pop3's.
type maildrop struct{ st *store.Store }

// Authenticate is the store's, the one login rule of SMTP and POP3 alike
// (store.Authenticate: authz empty or the login itself).
func (m maildrop) Authenticate(authz, user, password string) (string, error) {
	addr, err := m.st.Authenticate(authz, user, password)
	switch {
	case errors.Is(err, store.ErrBadPassword):
		return "", fmt.Errorf("%w: %w", pop3.ErrAuthFailed, err)
	case errors.Is(err, store.ErrNotAuthorized):
		return "", fmt.Errorf("%w: %w", pop3.ErrNotAuthorized, err)
	}
	return addr, err
}

func (m maildrop) List(addr string) ([]pop3.MessageInfo, error) {
	infos, err := m.st.List(addr)
	if err != nil {
		return nil, err
	}
	out := make([]pop3.MessageInfo, len(infos))
	for i, info := range infos {
		// The store's id is never reused (not even after a restored
		// backup), so in decimal it is a unique-id.
		out[i] = pop3.MessageInfo{ID: info.ID, UIDL: info.UIDL(), Size: info.Size}
	}
	return out, nil
}

// Read reports a message or mailbox deleted since List (by `user del`, or
// by the other POP3 listener's session) as pop3.ErrNoMessage.
func (m maildrop) Read(addr string, id uint64) ([]byte, error) {
	b, err := m.st.Read(addr, id)
	if errors.Is(err, store.ErrNoMessage) || errors.Is(err, store.ErrNoUser) {
		return nil, fmt.Errorf("%w: %w", pop3.ErrNoMessage, err)
	}
	return b, err
}

func (m maildrop) Delete(addr string, ids []uint64) error { return m.st.Delete(addr, ids) }
