package tlstest

import (
	"crypto/tls"
	"testing"
)

// handshake runs one TLS handshake over loopback and returns the
// client's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*tls.Conn).Handshake()
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), client)
	if err == nil {
		c.Close()
	}
	return err
}

func TestPair(t *testing.T) {
	tests := []struct {
		name    string
		names   []string
		mutate  func(*tls.Config)
		wantErr bool
	}{
		{"first name verified", []string{"mx.test", "alt.test"}, nil, false},
		{"second name verified", []string{"mx.test", "alt.test"}, func(c *tls.Config) { c.ServerName = "alt.test" }, false},
		{"no names: the IP address is verified", nil, nil, false},
		{"a name not on the certificate fails", []string{"mx.test"}, func(c *tls.Config) { c.ServerName = "other.test" }, true},
		{"an untrusting client fails", []string{"mx.test"}, func(c *tls.Config) { c.RootCAs = nil }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := Pair(t, tt.names...)
			if len(tt.names) > 0 && client.ServerName != tt.names[0] {
				t.Errorf("ServerName %q, want %q", client.ServerName, tt.names[0])
			}
			if tt.mutate != nil {
				tt.mutate(client)
			}
			if err := handshake(t, server, client); (err != nil) != tt.wantErr {
				t.Fatalf("handshake: %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestPairIsFreshEachCall(t *testing.T) {
	s1, _ := Pair(t, "mx.test")
	_, c2 := Pair(t, "mx.test")
	if err := handshake(t, s1, c2); err == nil {
		t.Fatal("a client trusted another call's certificate")
	}
}
