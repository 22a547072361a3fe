package main

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"minimail/mta/msgauth"
	"minimail/mta/resolve"
	"minimail/mta/web"
)

func dnsCommand() *cli.Command {
	return &cli.Command{
		Name:  "dns",
		Usage: "print the DNS records to publish for the configured domains (MX, SPF, DKIM, DMARC; SRV, autoconfig/autodiscover/mta-sts names, MTA-STS, TLS-RPT); --check compares the first four with what is published",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "check", Usage: "look the MX, SPF, DKIM and DMARC records up through relay.dns (or the system resolver) and say of each: ok, missing or different; exit 1 unless all are ok"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("dns takes no arguments")
			}
			cfg, err := config(c)
			if err != nil {
				return err
			}
			recs, err := configRecords(cfg)
			if err != nil {
				return err
			}
			if c.Bool("check") {
				return checkRecords(c.Context, c.App.Writer, cfg, recs)
			}
			printRecords(c.App.Writer, cfg.Hostname, append(recs, clientRecords(cfg)...))
			if cfg.Listen.HTTPS == "" {
				fmt.Fprintf(c.App.Writer, "\n; listen.https is off: the autoconfig., autodiscover. and mta-sts. names and the _mta-sts record\n; are left out, since nothing serves them.\n")
			}
			return nil
		},
	}
}

// configRecords are the records to publish for every domain of cfg.
func configRecords(cfg *Config) ([]msgauth.Record, error) {
	var pub crypto.PublicKey
	if cfg.DKIM.Key != "" {
		key, err := msgauth.LoadKey(cfg.DKIM.Key)
		if err != nil {
			msg := err.Error()
			if hint := readHint(err); hint != "" {
				msg += ": " + hint
			}
			return nil, &configError{path: cfg.path, key: "dkim.key", msg: msg}
		}
		pub = key.Public()
	}
	return domainRecords(cfg.Domains, cfg.Hostname, cfg.DKIM.Selector, pub)
}

func domainRecords(domains []string, hostname, selector string, pub crypto.PublicKey) ([]msgauth.Record, error) {
	var all []msgauth.Record
	for _, d := range domains {
		recs, err := msgauth.Records(d, hostname, selector, pub)
		if err != nil {
			return nil, fmt.Errorf("dns records for %s: %w", d, err)
		}
		all = append(all, recs...)
	}
	return all, nil
}

// clientRecords are the records that let mail clients find the servers
// (SRV, RFC 6186 and 8314; autoconfig and autodiscover names) and senders
// the MTA-STS policy and where to report TLS failures, for every domain.
// The names served over HTTPS are left out while listen.https is off.
func clientRecords(cfg *Config) []msgauth.Record {
	addrs := map[string]string{}
	for _, l := range cfg.listeners() {
		addrs[l.key] = l.addr
	}
	ports := webPorts(addrs)
	var out []msgauth.Record
	for _, d := range cfg.Domains {
		for _, r := range web.Records(d, cfg.Hostname, ports, cfg.mtaSTSPolicy()) {
			if cfg.Listen.HTTPS == "" && (r.Kind == web.KindCNAME || r.Kind == web.KindMTASTS) {
				continue
			}
			out = append(out, r)
		}
	}
	return out
}

// printRecords prints each record twice: as a zone-file line, for those
// who edit a zone, and as name / type / value, for a web DNS panel. The
// panel's value is the text in one piece: a TXT record split into quoted
// strings, pasted as it stands, would publish the quotes.
func printRecords(w io.Writer, hostname string, recs []msgauth.Record) {
	fmt.Fprintf(w, "; DNS records to publish. Also: an A/AAAA record for %s,\n; and a PTR record for its address naming %s (ask your hosting provider).\n", hostname, hostname)
	fmt.Fprintf(w, "\n; In zone-file syntax (BIND, NSD, Knot; long TXT values are split into quoted strings, which receivers join):\n")
	for _, r := range recs {
		fmt.Fprintln(w, r.Zone())
	}
	fmt.Fprintf(w, "\n; For a web DNS panel, as name / type / value. Paste each value whole, without adding quotes;\n; in an MX value, 10 is the priority; an SRV value is priority, weight, port and target\n; (target \".\": the service is not offered).\n")
	fmt.Fprintf(w, "; A panel that wants names relative to the domain takes @ for the domain itself and the part before it for the others.\n")
	for _, r := range recs {
		fmt.Fprintf(w, "%s / %s / %s\n", strings.TrimSuffix(r.Name, "."), r.Type, panelValue(r))
	}
}

// panelValue is the value as a web panel wants it: host names without the
// root's trailing dot, which some panels would take for part of the name
// (the root itself, an SRV target meaning "not offered", stays ".").
func panelValue(r msgauth.Record) string {
	switch r.Type {
	case "MX", "CNAME", "SRV":
		if strings.HasSuffix(r.Value, " .") || r.Value == "." {
			return r.Value
		}
		return strings.TrimSuffix(r.Value, ".")
	}
	return r.Value
}

// lookupTimeout bounds each lookup of `dns --check`.
const lookupTimeout = 10 * time.Second

// checkRecords looks each record up through relay.dns and prints what it
// finds. It fails (exit 1) unless every record is published.
func checkRecords(ctx context.Context, w io.Writer, cfg *Config, recs []msgauth.Record) error {
	via := "the system resolver (relay.dns is empty)"
	if cfg.Relay.DNS != "" {
		via = cfg.Relay.DNS + " (relay.dns)"
	}
	fmt.Fprintf(w, "; looking up through %s\n", via)
	res := resolve.New(cfg.Relay.DNS)
	bad := 0
	for _, r := range recs {
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		f := msgauth.Check(lctx, res, r)
		cancel()
		line := fmt.Sprintf("%-6s %s %s: %s", r.Kind, r.Name, r.Type, f.Status)
		if f.Detail != "" {
			line += ": " + f.Detail
		}
		fmt.Fprintln(w, line)
		if f.Status != msgauth.Published {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d records are not published as `minimail dns` prints them "+
			"(a change shows once the old record's TTL has passed)", bad, len(recs))
	}
	return nil
}
