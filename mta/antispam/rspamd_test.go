package antispam_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"minimail/mta/antispam"
	"minimail/mta/antispam/rspamdtest"
)

func TestParseReply(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     antispam.Result
		err      bool
	}{
		{name: "clean", in: `{"is_skipped":false,"score":0.0,"required_score":15.0,"action":"no action","symbols":{},"messages":{}}`,
			want: antispam.Result{Action: "no action", Required: 15}},
		{name: "gtube", in: `{"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0}},"messages":{"smtp_message":"Gtube pattern"}}`,
			want: antispam.Result{Action: "reject", Score: 15, Required: 15, Symbols: []antispam.Symbol{{"GTUBE", 0}}, Message: "Gtube pattern"}},
		{name: "rewrite", in: `{"score":9,"required_score":15,"action":"rewrite subject","subject":"[SPAM] hi"}`,
			want: antispam.Result{Action: "rewrite subject", Score: 9, Required: 15, Subject: "[SPAM] hi"}},
		{name: "bad symbol names dropped", in: `{"score":1,"action":"add header","symbols":{"OK_1":{"score":1},"BAD\r\nX: y":{"score":2}},"messages":{"smtp_message":"a\r\nb"}}`,
			want: antispam.Result{Action: "add header", Score: 1, Symbols: []antispam.Symbol{{"OK_1", 1}}, Message: "a b"}},
		{name: "not json", in: `<html>502 Bad Gateway</html>`, err: true},
		{name: "no action", in: `{"score":1}`, err: true},
		{name: "no score", in: `{"action":"reject"}`, err: true},
		{name: "unknown action", in: `{"action":"quarantine","score":1}`, err: true},
		{name: "error reply", in: `{"error":"Message has no body"}`, err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := antispam.ParseReply([]byte(c.in))
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error %v", err, c.err)
			}
			if !c.err && !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// The request carries what rspamd's protocol asks for, and never a User:
// rspamd would take the message for an authenticated user's outbound mail.
func TestRspamd_SendsTheEnvelopeHeaders(t *testing.T) {
	var got http.Header
	var body []byte
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, path = r.Header.Clone(), r.Method+" "+r.URL.Path
		body, _ = io.ReadAll(r.Body)
		io.WriteString(w, `{"action":"no action","score":0.5,"required_score":15}`)
	}))
	defer srv.Close()
	r := &antispam.Rspamd{URL: srv.URL}
	msg := []byte("Subject: hi\r\n\r\nbody\r\n")
	res, err := r.Check(context.Background(), antispam.Envelope{
		IP: netip.MustParseAddr("192.0.2.7"), Helo: "mail.sender.test", From: "bob@sender.test",
		Rcpts: []string{"alice@example.org", "carol@example.org"}, QueueID: "abc123",
	}, msg)
	if err != nil || res.Action != antispam.ActionNoAction || res.Score != 0.5 {
		t.Fatalf("Check = %+v, %v", res, err)
	}
	if path != "POST /checkv2" || string(body) != string(msg) {
		t.Fatalf("request %s with body %q", path, body)
	}
	for k, want := range map[string][]string{
		"Ip": {"192.0.2.7"}, "Helo": {"mail.sender.test"}, "From": {"bob@sender.test"},
		"Rcpt": {"alice@example.org", "carol@example.org"}, "Queue-Id": {"abc123"},
	} {
		if !reflect.DeepEqual(got[k], want) {
			t.Errorf("header %s = %q, want %q", k, got[k], want)
		}
	}
	if _, ok := got["User"]; ok {
		t.Errorf("a User header was sent: %q", got["User"])
	}
}

// A scan is bounded by Timeout: an rspamd that accepts the request and
// never answers costs the sender that long, not the whole DATA timeout.
func TestRspamd_TimeoutBoundsAScan(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	r := &antispam.Rspamd{URL: srv.URL, Timeout: 100 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		_, err := r.Check(context.Background(), antispam.Envelope{}, []byte("Subject: x\r\n\r\nx\r\n"))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "deadline") {
			t.Fatalf("Check = %v, want a deadline error", err)
		}
	case <-time.After(30 * time.Second): // hang guard only
		t.Fatal("Check did not return: the scan is not bounded by Timeout")
	}
	if antispam.DefaultRspamdTimeout != 20*time.Second {
		t.Fatalf("DefaultRspamdTimeout = %s, README says 20s", antispam.DefaultRspamdTimeout)
	}
}

func TestRspamd_GarbageAndErrorsAreErrors(t *testing.T) {
	for name, handler := range map[string]http.HandlerFunc{
		"500":      func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) },
		"garbage":  func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "\x00\xffnot json") },
		"too long": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat(" ", 2<<20)) },
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(handler)
			defer srv.Close()
			if res, err := (&antispam.Rspamd{URL: srv.URL}).Check(context.Background(), antispam.Envelope{}, []byte("x\r\n")); err == nil {
				t.Fatalf("Check = %+v, want an error", res)
			}
		})
	}
}

// A real rspamd: GTUBE is rejected with rspamd's message, a clean message
// gets "no action" and a score, and once rspamd is stopped Check fails
// (the MX then delivers unscanned).
func TestRspamd_RealServer(t *testing.T) {
	rs := rspamdtest.Start(t)
	r := &antispam.Rspamd{URL: rs.URL, Timeout: 30 * time.Second}
	env := antispam.Envelope{IP: netip.MustParseAddr("192.0.2.7"), Helo: "mail.sender.test", From: "bob@sender.test",
		Rcpts: []string{"alice@example.org"}, QueueID: "q1"}
	ctx := context.Background()
	gtube := []byte("From: bob@sender.test\r\nTo: alice@example.org\r\nSubject: test\r\n\r\n" + rspamdtest.GTUBE + "\r\n")
	res, err := r.Check(ctx, env, gtube)
	if err != nil || res.Action != antispam.ActionReject || res.Message == "" {
		t.Fatalf("GTUBE: %+v, %v; rspamd said:\n%s", res, err, rs.Output())
	}
	clean := []byte("From: bob@sender.test\r\nTo: alice@example.org\r\nSubject: lunch\r\nDate: Mon, 02 Jan 2026 15:04:05 +0000\r\nMessage-ID: <1@sender.test>\r\n\r\nSee you at noon.\r\n")
	res, err = r.Check(ctx, env, clean)
	if err != nil || res.Action != antispam.ActionNoAction || res.Required != 15 {
		t.Fatalf("clean: %+v, %v; rspamd said:\n%s", res, err, rs.Output())
	}
	rs.Stop(t)
	if res, err := r.Check(ctx, env, clean); err == nil {
		t.Fatalf("rspamd stopped: %+v, want an error", res)
	}
}
