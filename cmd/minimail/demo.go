package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/urfave/cli/v2"

	"minimail/mta/loopdns"
	"minimail/mta/msgauth"
	"minimail/mta/remote"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "send a message from Bob (gmail.test) to Alice (yahoo.test) through two real minimail servers on loopback, printing every hop",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "keep", Usage: "keep the temporary data directory and say where it is"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("demo takes no arguments")
			}
			return runDemo(c.App.Writer, c.Bool("keep"))
		},
	}
}

// demoSite is one side of the demo: a domain, its server and one user.
type demoSite struct {
	domain, hostname, user, password string
	dir                              string
	certPEM                          []byte
	srv                              *server
}

const demoPassword = "demo-password-not-secret"

// runDemo runs the whole journey with the project's real servers and
// clients: nothing is simulated but DNS, which a server of the demo's own
// answers on 127.0.0.1.
func runDemo(w io.Writer, keep bool) (err error) {
	start := time.Now()
	root, err := os.MkdirTemp("", "minimail-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if keep {
			fmt.Fprintf(w, "\nkept the demo's files in %s (configs: bob/minimail.toml, alice/minimail.toml)\n", root)
		} else {
			os.RemoveAll(root)
		}
	}()
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	defer func() {
		if err != nil {
			fmt.Fprintf(w, "\nserver logs:\n%s", logBuf.String())
		}
	}()

	bob := &demoSite{domain: "gmail.test", hostname: "mx.gmail.test", user: "bob@gmail.test", password: demoPassword, dir: filepath.Join(root, "bob")}
	alice := &demoSite{domain: "yahoo.test", hostname: "mx.yahoo.test", user: "alice@yahoo.test", password: demoPassword, dir: filepath.Join(root, "alice")}

	stage(w, "0", "Setup", "Two servers on 127.0.0.1 with ephemeral ports, each with its own data dir, self-signed certificate and DKIM key. A DNS server of the demo's own publishes the records `minimail dns` prints (MX, SPF, DKIM, DMARC) so that Alice's server can check Bob's mail.")
	dnsSrv, err := loopdns.New()
	if err != nil {
		return fmt.Errorf("demo dns: %w", err)
	}
	defer dnsSrv.Close()
	for _, site := range []*demoSite{alice, bob} {
		if err := site.setUp(dnsSrv); err != nil {
			return err
		}
	}
	if err := alice.start(log, nil, dnsSrv.Addr, "", `smtp = "127.0.0.1:0"`+"\n"+`pop3 = "127.0.0.1:0"`); err != nil {
		return err
	}
	defer alice.srv.stop(5 * time.Second)
	route := fmt.Sprintf("[relay.routes]\n%q = %q\n", alice.domain, alice.srv.addrs["listen.smtp"])
	relayTr := newTranscript(w, "  ")
	if err := bob.start(log, func(string) io.Writer { return relayTr }, dnsSrv.Addr, route, `submission = "127.0.0.1:0"`); err != nil {
		return err
	}
	defer bob.srv.stop(5 * time.Second)
	fmt.Fprintf(w, "  Bob's server:   %s, submission on %s, route %s -> %s\n", bob.hostname, bob.srv.addrs["listen.submission"], alice.domain, alice.srv.addrs["listen.smtp"])
	fmt.Fprintf(w, "  Alice's server: %s, MX on %s, POP3 on %s\n", alice.hostname, alice.srv.addrs["listen.smtp"], alice.srv.addrs["listen.pop3"])
	fmt.Fprintf(w, "  DNS:            %s\n", dnsSrv.Addr)

	msg := demoMessage(bob.user, alice.user, time.Now())

	t := time.Now()
	stage(w, "1", "Bob's mail client -> Bob's server (submission)", "Like Thunderbird: EHLO, STARTTLS, EHLO again inside TLS, AUTH PLAIN as bob@gmail.test, then the message. The 250 after DATA means the message is fsync'd in Bob's outbound queue.")
	if err := submit(w, bob, alice.user, msg); err != nil {
		return fmt.Errorf("stage 1, submission: %w", err)
	}
	done(w, t)

	t = time.Now()
	stage(w, "2", "Bob's server -> Alice's server (relay, port 25 role)", "Bob's server DKIM-signed the message when it accepted it; its queue runner follows the route for yahoo.test, says EHLO, upgrades with STARTTLS and hands the message over. Alice's server checks SPF, DKIM and DMARC and records them in Authentication-Results.")
	relayed, err := waitForMail(alice, 15*time.Second)
	if err != nil {
		return fmt.Errorf("stage 2, relay: %w (queue: %s)", err, queueSummary(bob))
	}
	fmt.Fprint(w, indent(relayTranscriptNote))
	done(w, t)

	stage(w, "3", "Alice's server -> Alice's mailbox (delivery agent)", "The delivery agent prepended Return-Path and Delivered-To to the Received line the MX added, and appended the copy to Alice's mailbox in the bbolt store in one fsync'd transaction. The trace headers Alice's copy carries:")
	for _, h := range traceHeaders(relayed) {
		fmt.Fprintf(w, "  | %s\n", h)
	}

	t = time.Now()
	stage(w, "4", "Alice's mail client <- Alice's server (POP3)", "Like a POP3 client: CAPA, STLS, USER/PASS inside TLS, STAT, UIDL, RETR, DELE, QUIT. The deletion is committed only at QUIT.")
	got, err := fetchAndDelete(w, alice)
	if err != nil {
		return fmt.Errorf("stage 4, pop3: %w", err)
	}
	done(w, t)

	stage(w, "5", "Check", "Alice's copy must end with exactly the bytes Bob's client sent, preceded only by trace headers; her mailbox must now be empty.")
	if err := sameMessage(got, msg); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	left, err := alice.srv.st.List(alice.user)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if len(left) != 0 {
		return fmt.Errorf("check: %d message(s) left in Alice's mailbox after DELE and QUIT", len(left))
	}
	fmt.Fprintf(w, "  ok: Alice received Bob's message byte-exact (%d octets sent, %d retrieved with trace headers); mailbox empty.\n", len(msg), len(got))
	fmt.Fprintf(w, "\ndemo finished in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

const relayTranscriptNote = "(the server-to-server conversation is above, C: is Bob's server, S: is Alice's)\n"

func stage(w io.Writer, n, title, explain string) {
	fmt.Fprintf(w, "\n== %s. %s\n%s\n", n, title, indent(wrap(explain, 76)))
}

func done(w io.Writer, since time.Time) {
	fmt.Fprintf(w, "  (%s)\n", time.Since(since).Round(100*time.Microsecond))
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString("  " + l)
		}
	}
	return b.String()
}

func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		if n > 0 && n+1+len(word) > width {
			b.WriteString("\n")
			n = 0
		} else if n > 0 {
			b.WriteString(" ")
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String() + "\n"
}

// setUp writes the site's certificate, DKIM key and user, and publishes its
// DNS records.
func (s *demoSite) setUp(dnsSrv *loopdns.Server) error {
	for _, sub := range []string{"data", "tls", "dkim"} {
		if err := os.MkdirAll(filepath.Join(s.dir, sub), 0o700); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	certPEM, keyPEM, err := selfSigned(s.hostname, time.Now())
	if err != nil {
		return err
	}
	s.certPEM = certPEM
	key, dkimPEM, err := msgauth.GenerateKey()
	if err != nil {
		return fmt.Errorf("demo dkim key: %w", err)
	}
	for name, data := range map[string][]byte{"tls/cert.pem": certPEM, "tls/key.pem": keyPEM, "dkim/mail.key": dkimPEM} {
		if err := writeNew(filepath.Join(s.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	recs, err := msgauth.Records(s.domain, s.hostname, initSelector, key.Public())
	if err != nil {
		return err
	}
	zone := []string{s.hostname + ". 3600 IN A 127.0.0.1"}
	for _, r := range recs {
		zone = append(zone, r.Zone())
	}
	for _, r := range zone {
		if err := dnsSrv.AddRecord(r); err != nil {
			return fmt.Errorf("demo dns: %w", err)
		}
	}
	return nil
}

// start writes the site's config, starts its server and creates its user.
func (s *demoSite) start(log *slog.Logger, relay func(string) io.Writer, dnsAddr, extra, listen string) error {
	cfgText := fmt.Sprintf(`hostname = %q
domains = [%q]
data_dir = "data"

[listen]
%s

[tls]
cert = "tls/cert.pem"
key = "tls/key.pem"

[dkim]
selector = "mail"
key = "dkim/mail.key"

[relay]
dns = %q
retry_min = "1s"

%s`, s.hostname, s.domain, listen, dnsAddr, extra)
	path := filepath.Join(s.dir, "minimail.toml")
	if err := writeNew(path, []byte(cfgText), 0o600); err != nil {
		return err
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	s.srv, err = startServer(cfg, log.With("site", s.domain), relay)
	if err != nil {
		return fmt.Errorf("demo: start %s: %w", s.hostname, err)
	}
	return s.srv.st.AddUser(s.user, s.password)
}

func (s *demoSite) clientTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.certPEM)
	return &tls.Config{RootCAs: pool, ServerName: s.hostname}
}

func demoMessage(from, to string, now time.Time) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf(`From: Bob <%s>
To: Alice <%s>
Subject: Hello from the demo
Date: %s
Message-ID: <demo.%d@gmail.test>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hi Alice,

this line is plain, the next one starts with a dot:
.a dot-stuffed line that must arrive as written
and some 8-bit text: Grüße aus Köln, ¡hola!

Bob
`, from, to, now.Format(time.RFC1123Z), now.UnixNano()), "\n", "\r\n"))
}

// submit is Bob's mail client. go-smtp's client cannot say STARTTLS after
// an EHLO of our choosing, so the plain-text part is spoken here (EHLO,
// STARTTLS) and the TLS part by go-smtp, as a session that starts greeted.
func submit(w io.Writer, bob *demoSite, rcpt string, msg []byte) error {
	tr := newTranscript(w, "  ")
	raw, err := net.DialTimeout("tcp", bob.srv.addrs["listen.submission"], 5*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	plain := textproto.NewConn(&recordingConn{Conn: raw, t: tr})
	for _, step := range []struct {
		cmd  string
		code int
	}{{"", 220}, {"EHLO bobs-laptop.gmail.test", 250}, {"STARTTLS", 220}} {
		if step.cmd != "" {
			if err := plain.PrintfLine("%s", step.cmd); err != nil {
				return err
			}
		}
		if _, _, err := plain.ReadResponse(step.code); err != nil {
			return fmt.Errorf("%q: %w", step.cmd, err)
		}
	}
	tc := tls.Client(raw, bob.clientTLS())
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("STARTTLS handshake: %w", err)
	}
	fmt.Fprintf(w, "  (%s established, certificate for %s verified)\n", tls.VersionName(tc.ConnectionState().Version), bob.hostname)
	c := smtp.NewClient(remote.WithGreeting(&recordingConn{Conn: tc, t: tr}, "220 (TLS)\r\n"))
	defer c.Close()
	if err := c.Hello("bobs-laptop.gmail.test"); err != nil {
		return err
	}
	if err := c.Auth(sasl.NewPlainClient("", bob.user, bob.password)); err != nil {
		return err
	}
	if err := c.SendMail(bob.user, []string{rcpt}, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// waitForMail waits for the first message in the site's mailbox.
func waitForMail(s *demoSite, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		list, err := s.srv.st.List(s.user)
		if err != nil {
			return nil, err
		}
		if len(list) > 0 {
			return s.srv.st.Read(s.user, list[0].ID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("nothing arrived in %s's mailbox within %s", s.user, timeout)
}

func queueSummary(s *demoSite) string {
	entries, err := s.srv.st.QueueEntries()
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	printQueue(&b, entries)
	if b.Len() == 0 {
		return "empty"
	}
	return strings.TrimSpace(b.String())
}

// traceHeaders returns the header fields (unfolded, shortened) that were
// added in front of the original From.
func traceHeaders(msg []byte) []string {
	var out []string
	for _, line := range strings.Split(string(msg), "\r\n") {
		if strings.HasPrefix(line, "From:") || line == "" {
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 {
			out[len(out)-1] += " " + strings.TrimSpace(line)
			continue
		}
		out = append(out, line)
	}
	for i, h := range out {
		if len(h) > 150 {
			out[i] = h[:147] + "..."
		}
	}
	return out
}

// sameMessage checks that got is sent preceded by header fields only.
func sameMessage(got, sent []byte) error {
	if !bytes.HasSuffix(got, sent) {
		return errors.New("Alice's copy does not end with the bytes Bob sent")
	}
	prefix := got[:len(got)-len(sent)]
	for _, line := range strings.Split(strings.TrimSuffix(string(prefix), "\r\n"), "\r\n") {
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' && !strings.Contains(line, ":") {
			return fmt.Errorf("unexpected line before Bob's message: %q", line)
		}
	}
	return nil
}

// fetchAndDelete is Alice's POP3 client: STLS, USER/PASS, RETR, DELE, QUIT.
// It returns the message as RETR delivered it, dot-stuffing undone.
func fetchAndDelete(w io.Writer, alice *demoSite) ([]byte, error) {
	tr := newTranscript(w, "  ")
	raw, err := net.DialTimeout("tcp", alice.srv.addrs["listen.pop3"], 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	p := newPOP3Client(&recordingConn{Conn: raw, t: tr})
	if _, err := p.ok(""); err != nil {
		return nil, err
	}
	if _, err := p.multi("CAPA"); err != nil {
		return nil, err
	}
	if _, err := p.ok("STLS"); err != nil {
		return nil, err
	}
	tc := tls.Client(raw, alice.clientTLS())
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("STLS handshake: %w", err)
	}
	fmt.Fprintf(w, "  (%s established, certificate for %s verified)\n", tls.VersionName(tc.ConnectionState().Version), alice.hostname)
	p = newPOP3Client(&recordingConn{Conn: tc, t: tr})
	for _, cmd := range []string{"USER " + alice.user, "PASS " + alice.password, "STAT"} {
		if _, err := p.ok(cmd); err != nil {
			return nil, err
		}
	}
	if _, err := p.multi("UIDL"); err != nil {
		return nil, err
	}
	msg, err := p.multi("RETR 1")
	if err != nil {
		return nil, err
	}
	for _, cmd := range []string{"DELE 1", "QUIT"} {
		if _, err := p.ok(cmd); err != nil {
			return nil, err
		}
	}
	return msg, nil
}

type pop3Client struct {
	conn io.ReadWriter
	r    *bufio.Reader
}

func newPOP3Client(c io.ReadWriter) *pop3Client {
	return &pop3Client{conn: c, r: bufio.NewReader(c)}
}

// ok sends cmd (none when empty) and reads a +OK line.
func (p *pop3Client) ok(cmd string) (string, error) {
	if cmd != "" {
		if _, err := io.WriteString(p.conn, cmd+"\r\n"); err != nil {
			return "", err
		}
	}
	line, err := p.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(line, "+OK") {
		return "", fmt.Errorf("%s: %s", strings.Fields(cmd + " ?")[0], strings.TrimSpace(line))
	}
	return line, nil
}

// multi sends cmd and reads a multi-line answer, undoing dot-stuffing.
func (p *pop3Client) multi(cmd string) ([]byte, error) {
	if _, err := p.ok(cmd); err != nil {
		return nil, err
	}
	var out []byte
	for {
		line, err := p.r.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		if string(line) == ".\r\n" {
			return out, nil
		}
		if line[0] == '.' {
			line = line[1:]
		}
		out = append(out, line...)
	}
}
