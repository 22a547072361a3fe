package queue

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"minimail/store"
)

func TestDSNStructure(t *testing.T) {
	created := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	original := "From: bob@a.test\r\nTo: x@b.test\r\nSubject: lunch\r\n\r\nsee you at noon\r\n--=_dsn_fake\r\n"
	tests := []struct {
		name        string
		action      string
		rcpts       []store.QueueRcpt
		wantStatus  []string
		statusType  string
		headersType string
	}{
		{
			name:   "failure with remote reply and expiry",
			action: dsnFailed,
			rcpts: []store.QueueRcpt{
				{Addr: "x@b.test", LastError: "mx.b.test: 550 5.1.1 no such user", Status: "5.1.1", Diagnostic: "smtp; 550 5.1.1 no such user", RemoteMTA: "mx.b.test"},
				{Addr: "y@c.test", LastError: "gave up after 120h0m0s: no answer", Status: "4.4.7"},
			},
			wantStatus:  []string{"5.1.1", "4.4.7"},
			statusType:  "message/delivery-status",
			headersType: "text/rfc822-headers",
		},
		{
			name:        "delay with a status that was never recorded",
			action:      dsnDelayed,
			rcpts:       []store.QueueRcpt{{Addr: "x@b.test", LastError: "busy"}},
			wantStatus:  []string{"4.0.0"},
			statusType:  "message/delivery-status",
			headersType: "text/rfc822-headers",
		},
		{
			name:        "UTF-8 recipient (RFC 6533)",
			action:      dsnFailed,
			rcpts:       []store.QueueRcpt{{Addr: "jürgen@b.test", LastError: "nope", Status: "5.6.7"}},
			wantStatus:  []string{"5.6.7"},
			statusType:  "message/global-delivery-status",
			headersType: "text/rfc822-headers",
		},
		{
			name:        "delivered (NOTIFY=SUCCESS): 2.0.0 and the header only",
			action:      dsnDelivered,
			rcpts:       []store.QueueRcpt{{Addr: "carol@a.test", ORcptType: "rfc822", ORcpt: "carol@a.test"}},
			wantStatus:  []string{"2.0.0"},
			statusType:  "message/delivery-status",
			headersType: "text/rfc822-headers",
		},
		{
			name:        "relayed with a UTF-8 ORCPT (RFC 6533)",
			action:      dsnRelayed,
			rcpts:       []store.QueueRcpt{{Addr: "x@b.test", Status: "5.1.1", ORcptType: "utf-8", ORcpt: "jürgen@b.test"}},
			wantStatus:  []string{"2.0.0"},
			statusType:  "message/global-delivery-status",
			headersType: "text/rfc822-headers",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := buildDSN(dsnParams{
				Hostname: "mx.a.test", QueueID: "7", Sender: "bob@a.test", Action: tt.action,
				Rcpts: tt.rcpts, Arrival: created, RetryUntil: created.Add(120 * time.Hour),
				Now: created.Add(time.Hour), Original: []byte(original),
			})
			d := mustDSN(t, raw)
			for field, want := range map[string]string{
				"From":           "Mail Delivery System <MAILER-DAEMON@mx.a.test>",
				"To":             "<bob@a.test>",
				"Auto-Submitted": "auto-replied",
				"Date":           "Sat, 01 Mar 2025 10:00:00 +0000",
			} {
				if got := d.header.Get(field); got != want {
					t.Errorf("%s: %q, want %q", field, got, want)
				}
			}
			if d.statusType != tt.statusType || d.headersType != tt.headersType {
				t.Errorf("part types %s, %s", d.statusType, d.headersType)
			}
			if got := d.perMessage.Get("Reporting-MTA"); got != "dns; mx.a.test" {
				t.Errorf("Reporting-MTA: %q", got)
			}
			if got := d.perMessage.Get("Arrival-Date"); got != "Sat, 01 Mar 2025 09:00:00 +0000" {
				t.Errorf("Arrival-Date: %q", got)
			}
			if len(d.rcpts) != len(tt.rcpts) {
				t.Fatalf("%d recipient blocks, want %d", len(d.rcpts), len(tt.rcpts))
			}
			for i, r := range d.rcpts {
				if got := r.Get("Action"); got != tt.action {
					t.Errorf("rcpt %d Action %q", i, got)
				}
				if got := r.Get("Status"); got != tt.wantStatus[i] {
					t.Errorf("rcpt %d Status %q, want %q", i, got, tt.wantStatus[i])
				}
				if !strings.HasSuffix(r.Get("Final-Recipient"), "; "+tt.rcpts[i].Addr) {
					t.Errorf("rcpt %d Final-Recipient %q", i, r.Get("Final-Recipient"))
				}
				if tt.rcpts[i].Diagnostic != "" && r.Get("Diagnostic-Code") != tt.rcpts[i].Diagnostic {
					t.Errorf("rcpt %d Diagnostic-Code %q", i, r.Get("Diagnostic-Code"))
				}
				if tt.rcpts[i].RemoteMTA != "" && r.Get("Remote-MTA") != "dns; "+tt.rcpts[i].RemoteMTA {
					t.Errorf("rcpt %d Remote-MTA %q", i, r.Get("Remote-MTA"))
				}
				if o := tt.rcpts[i]; o.ORcpt != "" && r.Get("Original-Recipient") != o.ORcptType+";"+o.ORcpt {
					t.Errorf("rcpt %d Original-Recipient %q", i, r.Get("Original-Recipient"))
				}
				if !strings.Contains(d.text, tt.rcpts[i].Addr) {
					t.Errorf("explanation does not name %s:\n%s", tt.rcpts[i].Addr, d.text)
				}
			}
			if tt.action == dsnDelayed && d.rcpts[0].Get("Will-Retry-Until") != "Thu, 06 Mar 2025 09:00:00 +0000" {
				t.Errorf("Will-Retry-Until %q", d.rcpts[0].Get("Will-Retry-Until"))
			}
			if !strings.Contains(d.headers, "Subject: lunch\r\n") || strings.Contains(d.headers, "noon") {
				t.Errorf("returned header %q", d.headers)
			}
		})
	}
}

func TestOriginalHeader(t *testing.T) {
	long := "X-Long: " + strings.Repeat("a", maxHeaderCopy) + "\r\n"
	tests := []struct{ name, msg, want string }{
		{"header and body", "A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n"},
		{"no body", "A: 1\r\n", "A: 1\r\n"},
		{"no header", "\r\nbody\r\n", ""},
		{"cut at a line end", "A: 1\r\n" + long + "\r\n", "A: 1\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(originalHeader([]byte(tt.msg))); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzBuildDSN feeds hostile message headers and remote replies into a
// notice: it must always parse as a three-part multipart/report with one
// status block per recipient, whatever the boundary collisions, control
// characters or invalid UTF-8.
func FuzzBuildDSN(f *testing.F) {
	f.Add([]byte("Subject: hi\r\n\r\nbody\r\n"), "x@b.test", "550 5.1.1 no such user", "smtp; 550 5.1.1 x", "5.1.1", true)
	f.Add([]byte("--=_dsn_0_1\r\n\r\n"), "a\r\nb@c", "line\r\nbreak", "\x00", "9.9.9", false)
	f.Add([]byte("\xff\xfe: \x80\r\n"), "\xffjürgen@b.test", strings.Repeat("long ", 300), "", "", true)
	f.Fuzz(func(t *testing.T, original []byte, addr, lastErr, diag, status string, failed bool) {
		action := dsnDelayed
		if failed {
			action = dsnFailed
		}
		now := time.Unix(0, 0).UTC()
		rcpts := []store.QueueRcpt{
			{Addr: addr, LastError: lastErr, Diagnostic: diag, Status: status, RemoteMTA: lastErr},
			{Addr: "other@b.test", LastError: diag},
		}
		raw := buildDSN(dsnParams{Hostname: "mx.a.test", QueueID: "1", Sender: addr, Action: action,
			Rcpts: rcpts, Arrival: now, RetryUntil: now, Now: now, Original: original})
		d, err := parseDSN(raw)
		if err != nil {
			t.Fatalf("%v in\n%q", err, raw)
		}
		if len(d.rcpts) != 2 {
			t.Fatalf("%d status blocks for 2 recipients in\n%q", len(d.rcpts), raw)
		}
		if got := d.rcpts[0].Get("Status"); !validStatus(got) {
			t.Fatalf("status %q", got)
		}
		// Everything but the returned header is ours and must keep the
		// RFC 5322 2.1.1 line limit.
		head := raw
		for _, ct := range []string{"Content-Type: text/rfc822-headers", "Content-Type: message/global-headers"} {
			if i := bytes.Index(head, []byte(ct)); i >= 0 {
				head = head[:i]
			}
		}
		for _, line := range bytes.Split(head, []byte("\r\n")) {
			if len(line) > 998 {
				t.Fatalf("line of %d octets", len(line))
			}
		}
	})
}
