package remote

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"minimail/mta/dnstest"
	"minimail/mta/remote/smtptest"
)

// publicAddr stands for a public MX address. mapDialer sends it to a
// loopback listener: nothing leaves the machine.
const publicAddr = "1.2.3.4"

func TestDeliverNeverDialsInternalAddressesFromDNS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	dns := dnstest.Start(t,
		"loop.test. 60 IN MX 10 mx.loop.test.",
		"mx.loop.test. 60 IN A 127.0.0.1",
		"meta.test. 60 IN MX 10 mx.meta.test.",
		"mx.meta.test. 60 IN A 169.254.169.254",
		"zero.test. 60 IN MX 10 mx.zero.test.",
		"mx.zero.test. 60 IN A 0.0.0.0",
		"mx.zero.test. 60 IN AAAA ::",
		"v6loop.test. 60 IN MX 10 mx.v6loop.test.",
		"mx.v6loop.test. 60 IN AAAA ::1",
		"mapped.test. 60 IN MX 10 mx.mapped.test.",
		"mx.mapped.test. 60 IN AAAA ::ffff:127.0.0.1",
		"nat64.test. 60 IN MX 10 mx.nat64.test.",
		"mx.nat64.test. 60 IN AAAA 64:ff9b::7f00:1",
		"private.test. 60 IN MX 10 mx.private.test.",
		"mx.private.test. 60 IN A 10.1.2.3",
		"mx.private.test. 60 IN A 172.16.5.4",
		"mx.private.test. 60 IN A 192.168.1.1",
		"mx.private.test. 60 IN A 100.64.0.1",
		"mx.private.test. 60 IN AAAA fd00::1",
		"mx.private.test. 60 IN AAAA fe80::1",
		"ipmx.test. 60 IN MX 10 127.0.0.1.",
		"implicit.test. 60 IN A 127.0.0.1",
		"mixed.test. 60 IN MX 10 mx1.mixed.test.",
		"mixed.test. 60 IN MX 20 mx2.mixed.test.",
		"mx1.mixed.test. 60 IN A 127.0.0.1",
		"mx2.mixed.test. 60 IN A "+publicAddr,
		"both.test. 60 IN MX 10 mx.both.test.",
		"mx.both.test. 60 IN A 127.0.0.1",
		"mx.both.test. 60 IN A "+publicAddr,
	)
	tests := []struct {
		name      string
		rcpt      string
		status    string
		temporary bool
		dialed    []string
	}{
		{"MX on loopback", "x@loop.test", "4.4.4", true, nil},
		{"MX on the cloud metadata address", "x@meta.test", "4.4.4", true, nil},
		{"MX on the unspecified addresses", "x@zero.test", "4.4.4", true, nil},
		{"MX on IPv6 loopback", "x@v6loop.test", "4.4.4", true, nil},
		{"MX on IPv4-mapped loopback", "x@mapped.test", "4.4.4", true, nil},
		{"MX on NAT64 loopback", "x@nat64.test", "4.4.4", true, nil},
		{"MX on private and link-local addresses", "x@private.test", "4.4.4", true, nil},
		{"MX named by an internal IP address", "x@ipmx.test", "4.4.4", true, nil},
		{"implicit MX on loopback", "x@implicit.test", "4.4.4", true, nil},
		{"internal MX skipped for the next one", "x@mixed.test", "", false, []string{publicAddr + ":25"}},
		{"internal address of an MX skipped", "x@both.test", "", false, []string{publicAddr + ":25"}},
		{"loopback literal", "x@[127.0.0.1]", "5.4.4", false, nil},
		{"IPv6 loopback literal", "x@[IPv6:::1]", "5.4.4", false, nil},
		{"IPv4-mapped literal", "x@[IPv6:::ffff:127.0.0.1]", "5.4.4", false, nil},
		{"metadata literal", "x@[169.254.169.254]", "5.4.4", false, nil},
		{"private literal", "x@[10.0.0.1]", "5.4.4", false, nil},
		{"unspecified literal", "x@[0.0.0.0]", "5.4.4", false, nil},
		{"public literal", "x@[" + publicAddr + "]", "", false, []string{publicAddr + ":25"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every address leads to the test server, so a dial that
			// should not happen shows as a delivery.
			d := &mapDialer{anyAddr: srv.Addr}
			var logs bytes.Buffer
			c := &Client{Hostname: "mx.a.test", DNS: dns.Addr, Dialer: d, Timeout: 5 * time.Second,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			res := c.Deliver(context.Background(), "bob@a.test", []string{tt.rcpt}, []byte(testMsg))
			wantErr(t, 0, res[0], tt.status, tt.temporary)
			if got := d.Dialed(); strings.Join(got, " ") != strings.Join(tt.dialed, " ") {
				t.Errorf("dialed %v, want %v", got, tt.dialed)
			}
			if tt.name != "public literal" && !strings.Contains(logs.String(), `msg="internal address skipped"`) {
				t.Errorf("no log of the skipped address in %q", logs.String())
			}
		})
	}
}

func TestDeliverRoutesAndSmarthostMayNameInternalHosts(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	_, port, _ := net.SplitHostPort(srv.Addr)
	dns := dnstest.Start(t, "relay.internal.test. 60 IN A 127.0.0.1")
	tests := []struct {
		name   string
		client *Client
	}{
		{"route by name", &Client{Routes: map[string]string{"b.test": "relay.internal.test:" + port}}},
		{"route by address", &Client{Routes: map[string]string{"b.test": srv.Addr}}},
		{"smarthost by name", &Client{Smarthost: "relay.internal.test:" + port}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.client
			c.Hostname, c.DNS, c.Timeout = "mx.a.test", dns.Addr, 5*time.Second
			res := c.Deliver(context.Background(), "bob@a.test", []string{"x@b.test"}, []byte(testMsg))
			wantErr(t, 0, res[0], "", false)
			srv.Wait(t)
		})
	}
}

func TestIsPublic(t *testing.T) {
	tests := []struct {
		addr   string
		public bool
	}{
		{"8.8.8.8", true},
		{"2a00:1450:4001:82b::1b", true},
		{"64:ff9b::808:808", true},
		{"2002:808:808::1", true},
		{"::ffff:8.8.8.8", true},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"127.0.0.1", false},
		{"127.255.255.254", false},
		{"10.0.0.1", false},
		{"172.31.255.255", false},
		{"192.168.0.1", false},
		{"169.254.169.254", false},
		{"100.64.0.1", false},
		{"192.0.0.8", false},
		{"192.0.2.1", false},
		{"198.18.0.1", false},
		{"198.51.100.1", false},
		{"203.0.113.1", false},
		{"224.0.0.1", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		{"::", false},
		{"::1", false},
		{"::127.0.0.1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
		{"64:ff9b::7f00:1", false},
		{"64:ff9b:1::808:808", false},
		{"2002:7f00:1::1", false},
		{"2001:db8::1", false},
		{"2001::1", false},
		{"3fff::1", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"fec0::1", false},
		{"ff02::1", false},
		{"100::1", false},
	}
	for _, tt := range tests {
		if got := isPublic(netip.MustParseAddr(tt.addr)); got != tt.public {
			t.Errorf("isPublic(%s) = %v, want %v", tt.addr, got, tt.public)
		}
	}
}
