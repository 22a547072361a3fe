package web

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"minimail/mta/tlstest"
)

var allPorts = Ports{POP3S: 995, POP3: 110, Submissions: 465, Submission: 587}

// startServer serves a handler for example.org and other.test on a
// loopback TLS listener and returns its address and a client that sends
// every request there, whatever the URL's host.
func startServer(t *testing.T, opts Options, limits ServerLimits) (string, *http.Client) {
	t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = "mx.example.org"
	}
	if opts.Domains == nil {
		opts.Domains = []string{"example.org", "other.test"}
	}
	if opts.Policy.Mode == "" {
		opts.Policy.Mode = "testing"
	}
	serverTLS, clientTLS := tlstest.Pair(t, "mx.example.org")
	serverTLS.MinVersion = tls.VersionTLS12
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(NewHandler(opts), limits, nil)
	go srv.Serve(tls.NewListener(l, serverTLS))
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()
	clientTLS.ServerName = "mx.example.org"
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: clientTLS,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	return addr, client
}

func get(t *testing.T, c *http.Client, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func TestAutoconfigNamesEveryServerForTheFullAddress(t *testing.T) {
	_, c := startServer(t, Options{Ports: allPorts}, ServerLimits{})
	want := []Server{
		{"pop3", "mx.example.org", 995, "SSL", "%EMAILADDRESS%", "password-cleartext"},
		{"pop3", "mx.example.org", 110, "STARTTLS", "%EMAILADDRESS%", "password-cleartext"},
		{"smtp", "mx.example.org", 465, "SSL", "%EMAILADDRESS%", "password-cleartext"},
		{"smtp", "mx.example.org", 587, "STARTTLS", "%EMAILADDRESS%", "password-cleartext"},
	}
	for _, url := range []string{
		"https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=alice%40example.org",
		"https://example.org/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.org",
		"https://AUTOCONFIG.Example.ORG:443/mail/config-v1.1.xml",
		"https://autoconfig.example.org./mail/config-v1.1.xml?emailaddress=nobody%40example.org",
	} {
		code, hdr, body := get(t, c, url)
		if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/xml") {
			t.Fatalf("%s: %d %s: %s", url, code, hdr.Get("Content-Type"), body)
		}
		var cc ClientConfig
		if err := xml.Unmarshal([]byte(body), &cc); err != nil {
			t.Fatalf("%s: %v\n%s", url, err, body)
		}
		if cc.Version != "1.1" || cc.Provider.ID != "example.org" || cc.Provider.Domain != "example.org" {
			t.Errorf("%s: version %q provider %q domain %q", url, cc.Version, cc.Provider.ID, cc.Provider.Domain)
		}
		got := append(cc.Provider.Incoming, cc.Provider.Outgoing...)
		if len(got) != len(want) {
			t.Fatalf("%s: %d servers, want %d:\n%s", url, len(got), len(want), body)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: server %d = %+v, want %+v", url, i, got[i], want[i])
			}
		}
	}
}

func TestAutoconfigIsTheSameForEveryAddress(t *testing.T) {
	_, c := startServer(t, Options{Ports: allPorts}, ServerLimits{})
	_, _, alice := get(t, c, "https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=alice%40example.org")
	_, _, nobody := get(t, c, "https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=nobody-at-all%40example.org")
	_, _, none := get(t, c, "https://autoconfig.example.org/mail/config-v1.1.xml")
	if alice != nobody || alice != none {
		t.Errorf("answers differ by address:\n%s\n%s\n%s", alice, nobody, none)
	}
}

func TestAutoconfigLeavesOutListenersThatAreOff(t *testing.T) {
	_, c := startServer(t, Options{Ports: Ports{POP3S: 10995, Submission: 10587}}, ServerLimits{})
	_, _, body := get(t, c, "https://other.test/mail/config-v1.1.xml")
	var cc ClientConfig
	if err := xml.Unmarshal([]byte(body), &cc); err != nil {
		t.Fatal(err)
	}
	in, out := cc.Provider.Incoming, cc.Provider.Outgoing
	if len(in) != 1 || in[0].Port != 10995 || in[0].SocketType != "SSL" || len(out) != 1 || out[0].Port != 10587 || out[0].SocketType != "STARTTLS" {
		t.Errorf("incoming %+v outgoing %+v, want pop3 10995 SSL and smtp 10587 STARTTLS alone", in, out)
	}
	if cc.Provider.Domain != "other.test" {
		t.Errorf("domain %q, want other.test", cc.Provider.Domain)
	}
}

// outlookRequest is the body Outlook (2016 and later, and new Outlook after
// the JSON step) posts.
const outlookRequest = `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>alice@example.org</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>`

func post(t *testing.T, c *http.Client, url, body string) (int, string) {
	t.Helper()
	resp, err := c.Post(url, "text/xml", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAutodiscoverAnswersOutlooksRequestWithPOP3AndSMTP(t *testing.T) {
	_, c := startServer(t, Options{Ports: allPorts}, ServerLimits{})
	for _, url := range []string{
		"https://autodiscover.example.org/autodiscover/autodiscover.xml",
		"https://example.org/Autodiscover/Autodiscover.xml",
	} {
		code, body := post(t, c, url, outlookRequest)
		if code != 200 {
			t.Fatalf("%s: %d %s", url, code, body)
		}
		var resp AutodiscoverResponse
		if err := xml.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatalf("%v\n%s", err, body)
		}
		for _, ns := range []string{responseSchema, outlookResponseSchema} {
			if !strings.Contains(body, `xmlns="`+ns+`"`) {
				t.Errorf("response lacks the namespace %s:\n%s", ns, body)
			}
		}
		acct := resp.Response.Account
		want := []Protocol{
			{Type: "POP3", Server: "mx.example.org", Port: 995, LoginName: "alice@example.org", DomainRequired: "off", SPA: "off", SSL: "on", AuthRequired: "on"},
			{Type: "SMTP", Server: "mx.example.org", Port: 465, LoginName: "alice@example.org", DomainRequired: "off", SPA: "off", SSL: "on", AuthRequired: "on"},
		}
		if acct.AccountType != "email" || acct.Action != "settings" || len(acct.Protocols) != 2 {
			t.Fatalf("account %+v:\n%s", acct, body)
		}
		for i := range want {
			if acct.Protocols[i] != want[i] {
				t.Errorf("protocol %d = %+v, want %+v", i, acct.Protocols[i], want[i])
			}
		}
	}
}

func TestAutodiscoverOffersSTARTTLSWhenImplicitTLSIsOff(t *testing.T) {
	_, c := startServer(t, Options{Ports: Ports{POP3: 110, Submission: 587}}, ServerLimits{})
	_, body := post(t, c, "https://example.org/autodiscover/autodiscover.xml", outlookRequest)
	var resp AutodiscoverResponse
	if err := xml.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	ps := resp.Response.Account.Protocols
	if len(ps) != 2 || ps[0].Port != 110 || ps[0].SSL != "off" || ps[0].Encryption != "TLS" || ps[1].Port != 587 || ps[1].Encryption != "TLS" {
		t.Errorf("protocols %+v, want POP3 110 and SMTP 587 with Encryption TLS", ps)
	}
}

func TestAutodiscoverRefusesWhatIsNoRequest(t *testing.T) {
	_, c := startServer(t, Options{Ports: allPorts, MaxRequestBytes: 1024}, ServerLimits{})
	url := "https://example.org/autodiscover/autodiscover.xml"
	for _, tt := range []struct {
		name, body string
		code       int
	}{
		{"not xml", "hello", 400},
		{"no address", strings.Replace(outlookRequest, "alice@example.org", "", 1), 400},
		{"not an address", strings.Replace(outlookRequest, "alice@example.org", "alice", 1), 400},
		{"other schema", strings.Replace(outlookRequest, "responseschema/2006a", "responseschema/2009", 1), 400},
		{"other namespace", strings.Replace(outlookRequest, "outlook/requestschema", "mobilesync/requestschema", 1), 400},
		{"over the limit", outlookRequest + strings.Repeat("<!-- padding -->", 100), 413},
	} {
		if code, body := post(t, c, url, tt.body); code != tt.code {
			t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.code)
		}
	}
	if code, _, _ := get(t, c, url); code != http.StatusMethodNotAllowed {
		t.Errorf("GET autodiscover.xml: %d, want 405", code)
	}
}

func TestAutodiscoverJSONRedirectsToThePOXEndpoint(t *testing.T) {
	_, c := startServer(t, Options{Ports: allPorts}, ServerLimits{})
	for _, url := range []string{
		"https://autodiscover.example.org/autodiscover/autodiscover.json?Email=alice%40example.org&Protocol=AutodiscoverV1",
		"https://autodiscover.example.org/autodiscover/autodiscover.json/v1.0/alice@example.org?Protocol=AutodiscoverV1",
		"https://example.org/autodiscover/autodiscover.json?Email=nobody%40example.org&Protocol=autodiscoverv1",
	} {
		code, hdr, body := get(t, c, url)
		if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
			t.Fatalf("%s: %d %s", url, code, body)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"Protocol": "AutodiscoverV1", "Url": "https://autodiscover.example.org/autodiscover/autodiscover.xml"}
		if len(got) != 2 || got["Protocol"] != want["Protocol"] || got["Url"] != want["Url"] {
			t.Errorf("%s: %v, want %v", url, got, want)
		}
	}
	code, _, body := get(t, c, "https://autodiscover.example.org/autodiscover/autodiscover.json?Email=alice%40example.org&Protocol=ActiveSync")
	if code != 400 || !strings.Contains(body, "InvalidProtocol") {
		t.Errorf("Protocol=ActiveSync: %d %s, want 400 InvalidProtocol", code, body)
	}
}

func TestMTASTSPolicyIsRFC8461Text(t *testing.T) {
	for _, tt := range []struct {
		policy Policy
		lines  []string
	}{
		{Policy{Mode: "testing"}, []string{"version: STSv1", "mode: testing", "mx: mx.example.org", "max_age: 604800"}},
		{Policy{Mode: "enforce", MaxAge: 24 * time.Hour}, []string{"version: STSv1", "mode: enforce", "mx: mx.example.org", "max_age: 86400"}},
	} {
		_, c := startServer(t, Options{Ports: allPorts, Policy: tt.policy}, ServerLimits{})
		code, hdr, body := get(t, c, "https://mta-sts.example.org/.well-known/mta-sts.txt")
		if code != 200 || hdr.Get("Content-Type") != "text/plain" {
			t.Fatalf("%d %q: %q", code, hdr.Get("Content-Type"), body)
		}
		// RFC 8461 section 3.2: each line "key: value" ending in CRLF,
		// version first.
		if !strings.HasSuffix(body, "\r\n") {
			t.Errorf("policy %q does not end in CRLF", body)
		}
		lines := strings.Split(strings.TrimSuffix(body, "\r\n"), "\r\n")
		if len(lines) != len(tt.lines) {
			t.Fatalf("policy %q: %d lines, want %d", body, len(lines), len(tt.lines))
		}
		for i, l := range lines {
			if l != tt.lines[i] || strings.Contains(l, "\n") {
				t.Errorf("line %d = %q, want %q", i+1, l, tt.lines[i])
			}
		}
	}
}

func TestPolicyIDChangesWithThePolicy(t *testing.T) {
	a := Policy{Mode: "testing"}.ID("mx.example.org")
	for _, other := range []string{
		Policy{Mode: "enforce"}.ID("mx.example.org"),
		Policy{Mode: "testing", MaxAge: time.Hour}.ID("mx.example.org"),
		Policy{Mode: "testing"}.ID("mx2.example.org"),
	} {
		if other == a {
			t.Errorf("id %s did not change with the policy", a)
		}
	}
	if a != (Policy{Mode: "testing", MaxAge: DefaultMaxAge}).ID("mx.example.org") {
		t.Error("the same policy text gave another id")
	}
	if len(a) < 1 || len(a) > 32 || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("id %q is not 1 to 32 alphanumerics (RFC 8461 section 3.1)", a)
	}
}

func TestUnknownHostAndPathAre404(t *testing.T) {
	_, c := startServer(t, Options{Ports: allPorts}, ServerLimits{})
	for _, url := range []string{
		"https://mx.example.org/mail/config-v1.1.xml",
		"https://autoconfig.example.com/mail/config-v1.1.xml",
		"https://www.example.org/.well-known/mta-sts.txt",
		"https://evil.test.example.org/.well-known/mta-sts.txt",
		"https://autoconfig.example.org/",
		"https://autoconfig.example.org/mail/config-v1.0.xml",
		"https://example.org/.well-known/mta-sts.txt/x",
	} {
		if code, _, body := get(t, c, url); code != 404 {
			t.Errorf("%s: %d %s, want 404", url, code, body)
		}
	}
}

func TestHTTPSLimits(t *testing.T) {
	addr, c := startServer(t, Options{Ports: allPorts}, ServerLimits{MaxHeaderBytes: 4096, ReadHeaderTimeout: 300 * time.Millisecond})
	t.Run("header over MaxHeaderBytes is 431", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "https://example.org/.well-known/mta-sts.txt", nil)
		req.Header.Set("X-Pad", strings.Repeat("a", 8192))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%d, want 431", resp.StatusCode)
		}
	})
	t.Run("a request head never finished is cut off", func(t *testing.T) {
		_, clientTLS := tlstest.Pair(t)
		clientTLS.InsecureSkipVerify = true
		conn, err := tls.Dial("tcp", addr, clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: example.org\r\n")
		// Hang guard only: the server's 300ms cuts the connection off.
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = bufio.NewReader(conn).ReadString('\n')
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the server kept a request head open past ReadHeaderTimeout")
		}
	})
}
