package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"minimail/mta/queue"
	"minimail/store"
)

// serverStatus is what a running server says of itself for `status`.
type serverStatus struct {
	Version   string            `json:"version"`
	PID       int               `json:"pid"`
	Started   time.Time         `json:"started"`
	Listeners map[string]string `json:"listeners"` // config key -> address
}

// status is the running server's answer to the "status" request.
func (s *server) status() serverStatus {
	listeners := make(map[string]string, len(s.addrs))
	for k, v := range s.addrs {
		listeners[k] = v
	}
	return serverStatus{Version: version(), PID: os.Getpid(), Started: s.started, Listeners: listeners}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "version, whether the server runs and on which listeners, the queue, the certificate's names and expiry",
		UsageText: "minimail [--config FILE] status",
		Action: func(c *cli.Context) error {
			if _, err := args(c); err != nil {
				return err
			}
			cfg, err := config(c)
			if err != nil {
				return err
			}
			return printStatus(c.App.Writer, cfg, time.Now())
		},
	}
}

// errNotRunning makes `status` exit 1 when no server runs, after it has
// said all it can without one.
var errNotRunning = errors.New("no server is running")

// certWarning is how close to its expiry a certificate makes status fail:
// a week leaves time to act, and ACME renews well before (30 days).
const certWarning = 7 * 24 * time.Hour

// printStatus says what it can find out, then returns an error (exit 1)
// naming every problem: no server, a listener down, a certificate that
// expires within certWarning, a queued message older than
// relay.delay_notice.
func printStatus(w io.Writer, cfg *Config, now time.Time) error {
	fmt.Fprintf(w, "minimail %s\n", version())
	var problems []string
	resp, err := callServer(cfg.DataDir, request{Op: "status"})
	running := err == nil && resp.Error == "" && resp.Status != nil
	switch {
	case running:
		st := resp.Status
		fmt.Fprintf(w, "server:      running, pid %d, since %s, up %s (%s)\n", st.PID, st.Started.Local().Format(time.RFC3339),
			now.Sub(st.Started).Round(time.Second), st.Version)
		problems = append(problems, printListeners(w, cfg, st.Listeners, now)...)
	case errors.Is(err, errNoServer):
		fmt.Fprintf(w, "server:      not running (nothing answers on %s)\n", filepath.Join(cfg.DataDir, controlSocket))
		problems = append(problems, errNotRunning.Error())
	default:
		if err == nil {
			err = errors.New(resp.Error)
		}
		fmt.Fprintf(w, "server:      no answer: %v\n", err)
		problems = append(problems, "server: no answer")
	}

	entries, err := queueEntries(cfg, running)
	switch {
	case err != nil:
		fmt.Fprintf(w, "queue:       cannot read: %v\n", err)
	case len(entries) == 0:
		fmt.Fprintln(w, "queue:       empty")
	default:
		oldest := entries[0]
		for _, e := range entries[1:] {
			if e.Created.Before(oldest.Created) {
				oldest = e
			}
		}
		age := now.Sub(oldest.Created)
		lastErr := oldest.LastError
		if lastErr == "" {
			lastErr = "none yet"
		}
		fmt.Fprintf(w, "queue:       %d message(s), the oldest (%s) queued %s ago (%s), last error: %s\n",
			len(entries), queue.EntryID(oldest), age.Round(time.Second), oldest.Created.Local().Format(time.RFC3339), lastErr)
		if notice := cfg.Relay.DelayNotice.or(4 * time.Hour); notice > 0 && age > notice {
			problems = append(problems, fmt.Sprintf("queue: message %s has waited %s, more than relay.delay_notice (%s)",
				queue.EntryID(oldest), age.Round(time.Second), notice))
		}
	}

	if cfg.ACME.Email != "" {
		printACMECerts(w, cfg, now)
	} else if cfg.TLS.Cert == "" {
		fmt.Fprintln(w, "certificate: none (tls.cert is not set)")
	} else if leaf, err := readLeaf(cfg.TLS.Cert); err != nil {
		fmt.Fprintf(w, "certificate: %s: %v\n", cfg.TLS.Cert, err)
	} else {
		fmt.Fprintf(w, "certificate: %s for %s, until %s (%s)\n", cfg.TLS.Cert, strings.Join(certNames(leaf), ", "),
			leaf.NotAfter.Local().Format(time.RFC3339), daysLeft(leaf, now))
		if !running && leaf.NotAfter.Sub(now) < certWarning {
			problems = append(problems, fmt.Sprintf("certificate %s: %s", cfg.TLS.Cert, daysLeft(leaf, now)))
		}
	}

	dbPath := filepath.Join(cfg.DataDir, store.FileName)
	if fi, err := os.Stat(dbPath); err != nil {
		fmt.Fprintf(w, "store:       %v\n", err)
	} else {
		fmt.Fprintf(w, "store:       %s, %d bytes\n", dbPath, fi.Size())
	}
	if counts, err := adminDo(cfg, request{Op: "trace.count"}); err != nil {
		fmt.Fprintf(w, "last hour:   cannot read: %v\n", err)
	} else {
		c := counts.Counts
		fmt.Fprintf(w, "last hour:   %d received, %d delivered to mailboxes, %d sent on, %d bounced\n",
			c[store.EventReceived], c[store.EventDelivered], c[store.EventSent], c[store.EventBounced])
	}

	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(w, "PROBLEM:     %s\n", p)
		}
		if len(problems) == 1 && problems[0] == errNotRunning.Error() {
			return errNotRunning
		}
		return fmt.Errorf("status: %d problem(s): %s", len(problems), strings.Join(problems, "; "))
	}
	return nil
}

// printListeners prints one line per listener of the running server, up
// or down and the certificate it presents, and returns the problems.
func printListeners(w io.Writer, cfg *Config, listeners map[string]string, now time.Time) []string {
	keys := make([]string, 0, len(listeners))
	for k := range listeners {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var problems []string
	for _, k := range keys {
		addr := listeners[k]
		p := probeListener(k, addr, cfg.Hostname)
		switch {
		case p.err != nil:
			fmt.Fprintf(w, "  %-19s %s DOWN: %v\n", k, addr, p.err)
			problems = append(problems, fmt.Sprintf("%s (%s) is down: %v", k, addr, p.err))
		case p.leaf == nil:
			fmt.Fprintf(w, "  %-19s %s up, no TLS\n", k, addr)
		default:
			fmt.Fprintf(w, "  %-19s %s up, certificate for %s, %s\n", k, addr, strings.Join(certNames(p.leaf), ", "), daysLeft(p.leaf, now))
			if p.leaf.NotAfter.Sub(now) < certWarning {
				problems = append(problems, fmt.Sprintf("%s: certificate for %s: %s", k, strings.Join(certNames(p.leaf), ", "), daysLeft(p.leaf, now)))
			}
		}
	}
	return problems
}

// daysLeft says how long a certificate has before it expires.
func daysLeft(leaf *x509.Certificate, now time.Time) string {
	left := leaf.NotAfter.Sub(now)
	if left <= 0 {
		return "EXPIRED"
	}
	return fmt.Sprintf("%d days left", int(left.Hours()/24))
}

// printACMECerts prints the ACME certificate of each name, from the store
// (through the running server when there is one).
func printACMECerts(w io.Writer, cfg *Config, now time.Time) {
	resp, err := adminDo(cfg, request{Op: "certs"})
	if err != nil {
		fmt.Fprintf(w, "certificate: acme (%s), cannot read: %v\n", cfg.ACME.Directory, err)
		return
	}
	for _, c := range resp.Certs {
		if c.NotAfter.IsZero() {
			fmt.Fprintf(w, "certificate: acme for %s: none yet (a self-signed one is served until the CA issues it)\n", c.Name)
			continue
		}
		left := c.NotAfter.Sub(now)
		state := fmt.Sprintf("%d days left", int(left.Hours()/24))
		if left <= 0 {
			state = "EXPIRED"
		}
		fmt.Fprintf(w, "certificate: acme for %s, until %s (%s), from %s\n", c.Name, c.NotAfter.Local().Format(time.RFC3339), state, c.Issuer)
	}
}

// queueEntries asks the running server, or reads the store when none runs.
func queueEntries(cfg *Config, running bool) ([]store.QueueEntry, error) {
	if running {
		resp, err := callServer(cfg.DataDir, request{Op: "queue.list"})
		if err == nil && resp.Error != "" {
			err = errors.New(resp.Error)
		}
		return resp.Queue, err
	}
	resp, err := adminDo(cfg, request{Op: "queue.list"})
	return resp.Queue, err
}

// readLeaf returns the first certificate of a PEM file.
func readLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate in it")
	}
	return x509.ParseCertificate(block.Bytes)
}
