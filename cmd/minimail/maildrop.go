package main

import (
	"errors"
	"fmt"

	"minimail/mta"
	"minimail/pop3"
	"minimail/store"
)

// maildrop is the store as the POP3 server sees it: pop3.Maildrop, with the
// store's types and errors turned into pop3's.
type maildrop struct{ st *store.Store }

// Authenticate is the store's, the one login rule of SMTP and POP3 alike
// (store.Authenticate: authz empty or the login itself).
func (m maildrop) Authenticate(authz, user, password string) (string, error) {
	return authenticate(m.st, authz, user, password, pop3.ErrAuthFailed, pop3.ErrNotAuthorized)
}

// smtpUsers is the store as the submission server sees it: mta.Users.
type smtpUsers struct{ st *store.Store }

func (u smtpUsers) Authenticate(authz, user, password string) (string, error) {
	return authenticate(u.st, authz, user, password, mta.ErrAuthFailed, mta.ErrNotAuthorized)
}

// authenticate checks credentials with the store and says "wrong
// credentials" and "refused authorization identity" in the caller's words.
func authenticate(st *store.Store, authz, user, password string, failed, notAuthorized error) (string, error) {
	addr, err := st.Authenticate(authz, user, password)
	switch {
	case errors.Is(err, store.ErrBadPassword):
		return "", fmt.Errorf("%w: %w", failed, err)
	case errors.Is(err, store.ErrNotAuthorized):
		return "", fmt.Errorf("%w: %w", notAuthorized, err)
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

// Update commits a POP3 session's QUIT with its trace events.
func (m maildrop) Update(addr string, u pop3.Update) error {
	return m.st.UpdateMaildrop(addr, store.MaildropUpdate{
		Deleted:   u.Deleted,
		Retrieved: u.Retrieved,
		Facts:     []store.Fact{{Key: "client", Value: u.Client}},
	})
}
