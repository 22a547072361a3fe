package store

import (
	"bytes"
	"strconv"
	"testing"
)

// BenchmarkDeleteInterleaved empties eight mailboxes of 250 4 KiB
// messages each, delivered side by side as eight sessions deliver them, one
// Delete (a POP3 QUIT) per mailbox. Each 64 KiB of the file holds a body of
// every mailbox, so freeing them (which reads each body's first page)
// faults each window in once per mailbox now that deletions release the
// map as they go (freeing), not once: 30-39 ms an iteration against 14-18.
func BenchmarkDeleteInterleaved(b *testing.B) {
	s := openInternal(b, Options{})
	var users []string
	for u := range 8 {
		a := "u" + strconv.Itoa(u) + "@example.test"
		users = append(users, a)
		if err := s.AddUser(a, "password-12345"); err != nil {
			b.Fatal(err)
		}
	}
	body := bytes.Repeat([]byte("x"), 4096)
	for b.Loop() {
		b.StopTimer()
		ids := make([][]uint64, 8)
		for m := range 250 {
			var ds []Delivery
			for _, a := range users {
				ds = append(ds, Delivery{Address: a, Message: append(append([]byte(nil), body...), byte(m))})
			}
			got, err := s.AppendMany(ds)
			if err != nil {
				b.Fatal(err)
			}
			for u := range users {
				ids[u] = append(ids[u], got[u])
			}
		}
		b.StartTimer()
		for u, a := range users {
			if err := s.Delete(a, ids[u]); err != nil {
				b.Fatal(err)
			}
		}
	}
}
