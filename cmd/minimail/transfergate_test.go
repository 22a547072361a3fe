package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"minimail/mta/dnstest"
)

// TestBigTransfersShareOneGateAcrossListeners: the servers of one process
// share its memory, and so one TransferGate: with GOMAXPROCS=1 (four
// places), four big messages announced with SIZE= on port 25 take every
// place as their DATA begins, and a big message on submission waits, not
// answered, until one of them is stored. A gate of its own per listener
// would take it in at once.
func TestBigTransfersShareOneGateAcrossListeners(t *testing.T) {
	cfg := initSite(t)
	mxAddr, subAddr := freePort(t), freePort(t)
	setListen(t, cfg, map[string]string{"smtp": mxAddr, "submission": subAddr})
	dnsSrv := dnstest.Start(t)
	appendConfig(t, cfg, "", `dns       = ""`, fmt.Sprintf("dns = %q", dnsSrv.Addr))
	appendConfig(t, cfg, "", "allow_insecure_auth = false\n", "allow_insecure_auth = true\n")
	const alice, pw = "alice@example.test", "a long passphrase"
	if r := minimail(t, "", "--config", cfg, "user", "add", "--password", pw, alice); r.code != 0 {
		t.Fatal(r.stderr)
	}
	serve := exec.Command(binary, "--config", cfg, "serve")
	serve.Env = append(os.Environ(), "GOMAXPROCS=1")
	startServing(t, serve, 2)

	const size = 300 << 10
	body := strings.Repeat(strings.Repeat("x", 78)+"\r\n", size/80)
	var mx []*lineConn
	for range 4 {
		c := dialFrom(t, mxAddr, "127.0.0.1")
		c.wantReply("EHLO client.test", "250 ")
		c.wantReply(fmt.Sprintf("MAIL FROM:<x@other.test> SIZE=%d", size), "250 ")
		c.wantReply("RCPT TO:<"+alice+">", "250 ")
		c.wantReply("DATA", "354 ")
		mx = append(mx, c)
	}
	sub := dialFrom(t, subAddr, "127.0.0.1")
	sub.wantReply("EHLO laptop.test", "250 ")
	sub.wantReply(smtpPlain(alice, pw), "235 ")
	sub.wantReply("MAIL FROM:<"+alice+">", "250 ")
	sub.wantReply("RCPT TO:<"+alice+">", "250 ")
	sub.wantReply("DATA", "354 ")
	go io.WriteString(sub.conn, "From: "+alice+"\r\nSubject: big\r\n\r\n"+body+".\r\n")
	sub.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if line, err := sub.r.ReadString('\n'); err == nil {
		t.Fatalf("big message on submission answered while port 25's four held every place: %q", line)
	}
	sub.conn.SetReadDeadline(time.Now().Add(30 * time.Second))

	io.WriteString(mx[0].conn, "From: x@other.test\r\nSubject: big\r\n\r\n"+body)
	mx[0].wantReply(".", "250 ")
	sub.wantReply("", "250 ")
}
