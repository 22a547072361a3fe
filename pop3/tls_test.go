package pop3

import (
	"bufio"
	"crypto/tls"
	"strings"
	"testing"

	"minimail/mta/tlstest"
)

// capaAfterTLS is the capability list once TLS is active: logins offered,
// STLS gone (RFC 2595 section 4).
var capaAfterTLS = []string{
	"+OK capability list follows",
	"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
	"USER", "SASL PLAIN", "IMPLEMENTATION minimail", ".",
}

func (c *client) expectLines(want []string) {
	c.t.Helper()
	for _, w := range want {
		c.expect(w)
	}
}

// startTLS sends STLS and upgrades the client side.
func (c *client) startTLS(cfg *tls.Config) {
	c.t.Helper()
	c.cmd("STLS", "+OK begin TLS negotiation")
	c.handshake(cfg)
}

// handshake runs the client side of a TLS handshake on the connection and
// reads everything after it through TLS.
func (c *client) handshake(cfg *tls.Config) {
	c.t.Helper()
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
}

// greetedSTLS starts a server over the fixture store that offers STLS
// (with opts otherwise) and returns a greeted plaintext client and the
// TLS config that trusts the server.
func greetedSTLS(t testing.TB, opts Options) (*client, *tls.Config, *harness) {
	t.Helper()
	var clientTLS *tls.Config
	opts.TLSConfig, clientTLS = tlstest.Pair(t, "pop.test")
	h := startServer(t, fixtureMaildrop(t), opts)
	return greeted(t, h.addr), clientTLS, h
}

func TestSTLS_ThenAuthPlain(t *testing.T) {
	c, clientTLS, _ := greetedSTLS(t, Options{})
	c.cmd("USER "+alice, "-ERR [AUTH] authentication requires TLS: use STLS first")
	c.startTLS(clientTLS)

	c.send("CAPA")
	c.expectLines(capaAfterTLS)
	c.cmd("STLS", "-ERR TLS already active")
	c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXB3", "+OK alice@example.org has 3 messages (219 octets)")
	c.cmd("RETR 1", "+OK 107 octets")
	if got := string(c.body()); got != msg1 {
		t.Fatalf("RETR 1 over TLS: got %q", got)
	}
	c.cmd("QUIT", "+OK pop.test POP3 server signing off")
}

func TestSTLS_ThenUserPass(t *testing.T) {
	c, clientTLS, _ := greetedSTLS(t, Options{})
	c.startTLS(clientTLS)
	c.login(alice, alicePW)
	c.cmd("STAT", "+OK 3 219")
}

// TestSTLS_PipelinedPlaintextIsDropped guards against command injection
// (CVE-2011-0411): a QUIT sent in plaintext right behind STLS must not be
// executed as if it had come over TLS.
func TestSTLS_PipelinedPlaintextIsDropped(t *testing.T) {
	c, clientTLS, _ := greetedSTLS(t, Options{})
	c.send("STLS", "QUIT")
	c.expect("+OK begin TLS negotiation")
	c.handshake(clientTLS)
	c.cmd("NOOP", "-ERR not logged in")
}

// TestSTLS_USERBeforeTLSIsForgotten: a name given in plaintext (here with
// insecure auth allowed) does not carry over into the TLS session.
func TestSTLS_USERBeforeTLSIsForgotten(t *testing.T) {
	c, clientTLS, _ := greetedSTLS(t, Options{AllowInsecureAuth: true})
	c.cmd("USER "+alice, "+OK")
	c.startTLS(clientTLS)
	c.cmd("PASS "+alicePW, "-ERR send USER first")
}

func TestSTLS_FailedHandshakeEndsSession(t *testing.T) {
	c, _, h := greetedSTLS(t, Options{})
	c.cmd("STLS", "+OK begin TLS negotiation")
	c.send("this is not a TLS client hello")
	c.r.Reset(c.conn) // whatever alert the server sends, then EOF
	h.waitEnded(t, 1)
}

func TestPOP3S_ImplicitTLS(t *testing.T) {
	serverTLS, clientTLS := tlstest.Pair(t, "pop.test")
	// The caller wraps the listener; the server sees *tls.Conn and counts
	// TLS as active. TLSConfig stays nil: no STLS on POP3S.
	h := startPOP3S(t, fixtureMaildrop(t), Options{}, serverTLS)
	c := dialTLS(t, h.addr, clientTLS)
	c.expect("+OK pop.test POP3 server ready")
	c.send("CAPA")
	c.expectLines(capaAfterTLS)
	c.login(alice, alicePW)
	if got := c.cmd("UIDL 3", "+OK 3 "); !strings.HasSuffix(got, "-3") {
		t.Errorf("UIDL 3 = %q, want the unique-id of store id 3", got)
	}
	c.cmd("QUIT", "+OK")
}
