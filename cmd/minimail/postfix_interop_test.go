package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"minimail/mta/msgauth"
)

// TestPostfixInterop exchanges mail with a real Postfix on loopback in both
// directions: minimail relays to it over STARTTLS with DKIM and DSN
// parameters, and it relays to minimail's MX (greet_delay at its default,
// which Postfix, waiting for the greeting, passes) and bounces what our MX
// refuses.
func TestPostfixInterop(t *testing.T) {
	requirePostfix(t)
	pfAddr := freePort(t)

	keyDir := t.TempDir()
	dkimKey, dkimPEM, err := msgauth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(keyDir, "mail.key")
	os.WriteFile(keyPath, dkimPEM, 0o600)
	s := newSite(t, "example.test", fmt.Sprintf("[dkim]\nselector = \"mail\"\nkey = %q\n[relay]\nretry_min = \"1h\"\nroutes = { \"peer.test\" = %q }\n", keyPath, pfAddr))
	s.addUser(t, "carol@example.test")
	s.addUser(t, "alice@example.test")
	// SPF for Postfix's mail, answered by the site's own DNS server.
	s.dns.Add(t, `peer.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`)
	pf := startPostfix(t, pfAddr, map[string]string{"example.test": s.srv.addrs["listen.smtp"]}, []string{"bob", "dave"})

	t.Run("minimail to Postfix: once, DKIM intact, over TLS, DSN passed on", func(t *testing.T) {
		msg := testMessage("carol@example.test", "bob@peer.test", "to postfix", "hello postfix\r\n")
		c, err := smtp.DialStartTLS(s.srv.addrs["listen.submission"], &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewPlainClient("", "carol@example.test", "pw-carol@example.test")); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("carol@example.test", &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: "pf-1"}); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("bob@peer.test", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}}); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		w.Write(msg)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		c.Quit()

		got := pf.waitMaildir(t, "bob", 1)
		if len(got) != 1 {
			t.Fatalf("bob has %d messages, want exactly 1", len(got))
		}
		if !bytes.Contains(got[0], []byte("hello postfix")) {
			t.Fatalf("bob's message:\n%s", got[0])
		}
		// Postfix's own Received header says the hop was ESMTPS.
		if !regexp.MustCompile(`Received: from mx\.example\.test \(unknown \[127\.0\.0\.1\]\)\r?\n(\t[^\r\n]*\r?\n)*?\tby mx\.peer\.test \(Postfix\) with ESMTPS `).Match(got[0]) {
			t.Errorf("Postfix's Received header does not record ESMTPS:\n%s", got[0])
		}
		verifyDKIM(t, got[0], dkimKey.Public())

		// Postfix offers DSN, so it got NOTIFY=SUCCESS and its success
		// notice comes back to carol through our MX; we send none.
		notices := s.waitMessages(t, "carol@example.test", 1)
		waitFor(t, "our queue to empty", func() bool {
			entries, _ := s.srv.st.QueueEntries()
			return len(entries) == 0
		})
		if list, _ := s.srv.st.List("carol@example.test"); len(list) != 1 {
			t.Fatalf("carol has %d notices, want Postfix's alone", len(list))
		}
		n := string(notices[0])
		for _, want := range []string{"Return-Path: <>", "report-type=delivery-status", "Reporting-MTA: dns; mx.peer.test",
			"Original-Envelope-Id: pf-1", "Action: delivered", "Final-Recipient: rfc822; bob@peer.test"} {
			if !strings.Contains(n, want) {
				t.Errorf("Postfix's notice lacks %q:\n%s", want, n)
			}
		}
		if strings.Contains(n, "Action: relayed") {
			t.Errorf("a relayed notice:\n%s", n)
		}
	})

	t.Run("Postfix to minimail: delivered over TLS with both Received headers", func(t *testing.T) {
		msg := testMessage("dave@peer.test", "alice@example.test", "from postfix", "hello minimail\r\n")
		c, err := smtp.Dial(pf.smtpAddr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SendMail("dave@peer.test", []string{"alice@example.test"}, bytes.NewReader(msg)); err != nil {
			t.Fatalf("Postfix's smtpd: %v", err)
		}
		c.Quit()
		pf.flush(t)
		got := s.waitMessagesFor(t, "alice@example.test", 1, pf)
		m := string(got[0])
		if !strings.Contains(m, "hello minimail") {
			t.Fatalf("alice's message:\n%s", m)
		}
		// Ours on top (Postfix's hop, TLS), Postfix's below it (the test's
		// plain submission to its smtpd).
		ours := regexp.MustCompile(`Received: from mx\.peer\.test \(\[127\.0\.0\.1\]\)\s+by mx\.example\.test with ESMTPS`)
		theirs := regexp.MustCompile(`Received: from [^\r\n]*\r\n\s+by mx\.peer\.test \(Postfix\) with ESMTP `)
		if !ours.MatchString(m) || !theirs.MatchString(m) {
			t.Errorf("want our ESMTPS Received and Postfix's:\n%s", m)
		}
		if !strings.Contains(m, "spf=pass") {
			t.Errorf("SPF of peer.test not passed:\n%s", m)
		}
	})

	t.Run("Postfix bounces our 550 5.1.1 for an unknown user", func(t *testing.T) {
		msg := testMessage("dave@peer.test", "nobody@example.test", "to nobody", "x\r\n")
		c, err := smtp.Dial(pf.smtpAddr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SendMail("dave@peer.test", []string{"nobody@example.test"}, bytes.NewReader(msg)); err != nil {
			t.Fatalf("Postfix's smtpd: %v", err)
		}
		c.Quit()
		got := pf.waitMaildir(t, "dave", 1)
		b := string(got[0])
		for _, want := range []string{"<nobody@example.test>", "said: 550 5.1.1", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1"} {
			if !strings.Contains(b, want) {
				t.Errorf("Postfix's bounce lacks %q:\n%s", want, b)
			}
		}
	})
}

// waitMessagesFor is waitMessages for mail Postfix relays: it flushes
// Postfix's queue while it waits (60 s hang guard) and shows Postfix's log
// on a timeout.
func (s *site) waitMessagesFor(t *testing.T, addr string, n int, pf *peerPostfix) [][]byte {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if list, _ := s.srv.st.List(addr); len(list) >= n {
			return s.waitMessages(t, addr, n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not get %d message(s); Postfix's log:\n%s\nours:\n%s", addr, n, pf.log(), s.logs.String())
		}
		pf.flush(t)
		time.Sleep(200 * time.Millisecond)
	}
}

// verifyDKIM checks msg's DKIM signature against pub, the key published
// as mail._domainkey.example.test.
func verifyDKIM(t *testing.T, msg []byte, pub any) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	record := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: func(domain string) ([]string, error) {
		if domain != "mail._domainkey.example.test" {
			return nil, fmt.Errorf("unexpected DKIM lookup %s", domain)
		}
		return []string{record}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range verifs {
		if v.Domain == "example.test" && v.Err == nil {
			return
		}
	}
	t.Fatalf("no valid example.test DKIM signature after Postfix (%+v):\n%s", verifs, msg)
}
