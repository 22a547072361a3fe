package main

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimail/mta/web"
)

// webSite writes a config for example.test (hostname mx.example.test)
// with submissions, pop3s and https on loopback, the [tls] pair when
// withFiles, and extra TOML appended, and loads it.
func webSite(t *testing.T, listen map[string]string, withFiles bool, extra string) *Config {
	t.Helper()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "data"), 0o700)
	var b strings.Builder
	fmt.Fprintf(&b, "hostname = \"mx.example.test\"\ndomains = [\"example.test\"]\ndata_dir = \"data\"\n[listen]\n")
	for _, k := range []string{"smtp", "submission", "submissions", "pop3", "pop3s", "https"} {
		if a, ok := listen[k]; ok {
			fmt.Fprintf(&b, "%s = %q\n", k, a)
		}
	}
	if withFiles {
		certPEM, keyPEM, err := selfSigned("mx.example.test", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600)
		os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600)
		b.WriteString("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n")
	}
	b.WriteString(extra)
	path := filepath.Join(dir, "minimail.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serveSite starts cfg in process, as serve does, and stops it when the
// test ends; the logs collect in the returned buffer.
func serveSite(t *testing.T, cfg *Config) (*server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	srv, err := startServer(cfg, slog.New(slog.NewTextHandler(logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.stop(5 * time.Second) })
	return srv, logs
}

// httpsClient sends every request to addr, whatever the URL's host, with
// tlsConf (and the URL's host as SNI unless tlsConf names one).
func httpsClient(addr string, tlsConf *tls.Config) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsConf,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

func fetch(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeHTTPSNamesTheListenersThatAreOn(t *testing.T) {
	cfg := webSite(t, map[string]string{"submissions": "127.0.0.1:0", "pop3s": "127.0.0.1:0", "submission": "127.0.0.1:0", "https": "127.0.0.1:0"}, true,
		"[mta_sts]\nmode = \"enforce\"\nmax_age = \"24h\"\n")
	srv, _ := serveSite(t, cfg)
	c := httpsClient(srv.addrs["listen.https"], &tls.Config{InsecureSkipVerify: true})

	code, body := fetch(t, c, "https://autoconfig.example.test/mail/config-v1.1.xml?emailaddress=alice%40example.test")
	if code != 200 {
		t.Fatalf("autoconfig: %d %s", code, body)
	}
	var cc web.ClientConfig
	if err := xml.Unmarshal([]byte(body), &cc); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		key, socket string
	}{{"listen.pop3s", "SSL"}, {"listen.submissions", "SSL"}, {"listen.submission", "STARTTLS"}}
	got := append(cc.Provider.Incoming, cc.Provider.Outgoing...)
	if len(got) != len(want) {
		t.Fatalf("%d servers, want %d (listen.pop3 is off):\n%s", len(got), len(want), body)
	}
	for i, w := range want {
		if port := listenPort(srv.addrs[w.key]); got[i].Port != port || got[i].SocketType != w.socket || got[i].Hostname != "mx.example.test" || got[i].Username != "%EMAILADDRESS%" {
			t.Errorf("server %d = %+v, want %s's port %d, %s", i, got[i], w.key, port, w.socket)
		}
	}

	code, body = fetch(t, c, "https://mta-sts.example.test/.well-known/mta-sts.txt")
	if want := "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"; code != 200 || body != want {
		t.Errorf("mta-sts.txt: %d %q, want %q", code, body, want)
	}
	if code, _ := fetch(t, c, "https://example.com/.well-known/mta-sts.txt"); code != 404 {
		t.Errorf("unknown Host: %d, want 404", code)
	}

	// The mail listeners' TLS: 1.2 at least, no session tickets.
	conn, err := tls.Dial("tcp", srv.addrs["listen.https"], &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Error("TLS 1.1 handshake accepted")
	}
	sessions := tls.NewLRUClientSessionCache(1)
	conn, err = tls.Dial("tcp", srv.addrs["listen.https"], &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, ClientSessionCache: sessions})
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"))
	io.Copy(io.Discard, conn)
	conn.Close()
	conn, err = tls.Dial("tcp", srv.addrs["listen.https"], &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, ClientSessionCache: sessions})
	if err != nil {
		t.Fatal(err)
	}
	if conn.ConnectionState().DidResume {
		t.Error("a TLS 1.2 session was resumed: session tickets are on")
	}
	conn.Close()
}

// TestServeHTTPSConnectionLimit: limits.max_connections holds for
// listen.https too; a connection over it waits until one closes.
func TestServeHTTPSConnectionLimit(t *testing.T) {
	cfg := webSite(t, map[string]string{"https": "127.0.0.1:0"}, true, "[limits]\nmax_connections = 2\n")
	srv, _ := serveSite(t, cfg)
	addr := srv.addrs["listen.https"]
	dial := func(wait time.Duration) (*tls.Conn, error) {
		d := &net.Dialer{Deadline: time.Now().Add(wait)}
		return tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	}
	var open []*tls.Conn
	for range 2 {
		c, err := dial(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	if c, err := dial(300 * time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a third connection was served with limits.max_connections = 2")
	}
	open[0].Close()
	c, err := dial(30 * time.Second)
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	c.Close()
	open[1].Close()
}
