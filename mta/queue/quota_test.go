package queue

import "testing"

// TestQueueDSN_BounceToFullMailboxIsStored: a local recipient past its
// quota bounces with 5.2.2, and the bounce reaches the sender's mailbox
// although that is full too: a notice is never lost to a quota.
func TestQueueDSN_BounceToFullMailboxIsStored(t *testing.T) {
	e := newEnv(t, nil, nil)
	if err := e.st.AddUser("carol@a.test", "pw"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob@a.test", "carol@a.test"} {
		if err := e.st.SetQuota(u, 10); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.st.Append("bob@a.test", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	e.enqueue("bob@a.test", "carol@a.test")
	e.runOnce()
	if box := e.mailbox("carol@a.test"); len(box) != 0 {
		t.Fatalf("carol has %d messages past her quota", len(box))
	}
	box := e.mailbox("bob@a.test")
	if len(box) != 2 {
		t.Fatalf("bob has %d messages, want his one and the bounce", len(box))
	}
	d := mustDSN(t, box[1])
	if r := d.rcpts[0]; r.Get("Final-Recipient") != "rfc822; carol@a.test" || r.Get("Status") != "5.2.2" {
		t.Fatalf("bounce for a full mailbox: %v", r.Map())
	}
	if all := e.entries(); len(all) != 0 {
		t.Fatalf("queue holds %+v after the bounce", all)
	}
}
