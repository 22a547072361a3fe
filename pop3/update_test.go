package pop3

import (
	"slices"
	"sync"
	"testing"
)

// updatingMaildrop is a fakeMaildrop that is also an Updater.
type updatingMaildrop struct {
	*fakeMaildrop
	mu      sync.Mutex
	updates []Update
	err     error
}

func (u *updatingMaildrop) Update(addr string, up Update) error {
	u.mu.Lock()
	u.updates = append(u.updates, up)
	err := u.err
	u.mu.Unlock()
	if err != nil {
		return err
	}
	if len(up.Deleted) == 0 {
		return nil
	}
	return u.Delete(addr, up.Deleted)
}

func (u *updatingMaildrop) calls() []Update {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.updates)
}

func TestUpdater_QuitCommitsRetrievalsAndDeletionsOnce(t *testing.T) {
	tests := []struct {
		name      string
		cmds      []string
		err       error
		quit      string
		want      *Update // nil: no Update call
		remaining int
	}{
		{"retrieved and deleted", []string{"RETR 1", "RETR 2", "DELE 1"}, nil, "+OK",
			&Update{Deleted: []uint64{1}, Retrieved: []uint64{1, 2}, Client: "127.0.0.1"}, 2},
		{"TOP is no retrieval", []string{"TOP 1 0"}, nil, "+OK", nil, 3},
		{"nothing done: no write", nil, nil, "+OK", nil, 3},
		{"a failed write of retrievals only is no failure", []string{"RETR 3"}, errInjected, "+OK",
			&Update{Retrieved: []uint64{3}, Client: "127.0.0.1"}, 3},
		{"a failed write with deletions is -ERR", []string{"RETR 1", "DELE 1"}, errInjected, "-ERR",
			&Update{Deleted: []uint64{1}, Retrieved: []uint64{1}, Client: "127.0.0.1"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := &updatingMaildrop{fakeMaildrop: fixtureMaildrop(t), err: tt.err}
			h := startServer(t, md, Options{AllowInsecureAuth: true})
			c := greeted(t, h.addr)
			c.login(alice, alicePW)
			for _, cmd := range tt.cmds {
				c.send(cmd)
				c.expectPrefix("+OK")
				if cmd[:4] == "RETR" || cmd[:3] == "TOP" {
					c.body()
				}
			}
			c.cmd("QUIT", tt.quit)
			calls := md.calls()
			switch {
			case tt.want == nil && len(calls) != 0:
				t.Fatalf("Update calls %+v, want none", calls)
			case tt.want != nil && (len(calls) != 1 || !slices.Equal(calls[0].Deleted, tt.want.Deleted) ||
				!slices.Equal(calls[0].Retrieved, tt.want.Retrieved) || calls[0].Client != tt.want.Client):
				t.Fatalf("Update calls %+v, want one: %+v", calls, *tt.want)
			}
			if n := md.count(alice); n != tt.remaining {
				t.Errorf("maildrop holds %d, want %d", n, tt.remaining)
			}
		})
	}
}
