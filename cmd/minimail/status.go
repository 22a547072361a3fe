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

func printStatus(w io.Writer, cfg *Config, now time.Time) error {
	fmt.Fprintf(w, "minimail %s\n", version())
	resp, err := callServer(cfg.DataDir, request{Op: "status"})
	running := err == nil && resp.Error == "" && resp.Status != nil
	switch {
	case running:
		st := resp.Status
		fmt.Fprintf(w, "server:      running, pid %d, since %s (%s)\n", st.PID, st.Started.Local().Format(time.RFC3339), st.Version)
		keys := make([]string, 0, len(st.Listeners))
		for k := range st.Listeners {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %-19s %s\n", k, st.Listeners[k])
		}
	case errors.Is(err, errNoServer):
		fmt.Fprintf(w, "server:      not running (nothing answers on %s)\n", filepath.Join(cfg.DataDir, controlSocket))
	default:
		if err == nil {
			err = errors.New(resp.Error)
		}
		fmt.Fprintf(w, "server:      no answer: %v\n", err)
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
		fmt.Fprintf(w, "queue:       %d message(s), the oldest queued %s ago (%s)\n",
			len(entries), now.Sub(oldest.Created).Round(time.Second), oldest.Created.Local().Format(time.RFC3339))
	}

	if cfg.ACME.Email != "" {
		printACMECerts(w, cfg, now)
	} else if cfg.TLS.Cert == "" {
		fmt.Fprintln(w, "certificate: none (tls.cert is not set)")
	} else if leaf, err := readLeaf(cfg.TLS.Cert); err != nil {
		fmt.Fprintf(w, "certificate: %s: %v\n", cfg.TLS.Cert, err)
	} else {
		left := leaf.NotAfter.Sub(now)
		state := fmt.Sprintf("%d days left", int(left.Hours()/24))
		if left <= 0 {
			state = "EXPIRED"
		}
		fmt.Fprintf(w, "certificate: %s for %s, until %s (%s)\n", cfg.TLS.Cert, strings.Join(certNames(leaf), ", "),
			leaf.NotAfter.Local().Format(time.RFC3339), state)
	}
	if !running {
		return errNotRunning
	}
	return nil
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
