package remote

import (
	"io"
	"net"
	"testing"
)

// TestWithGreeting: the greeting is read first, then what the server sends.
func TestWithGreeting(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		server.Write([]byte("250 after TLS\r\n"))
		server.Close()
	}()
	got, err := io.ReadAll(WithGreeting(client, "220 TLS established\r\n"))
	if err != nil || string(got) != "220 TLS established\r\n250 after TLS\r\n" {
		t.Fatalf("read %q, %v", got, err)
	}
}
