package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"minimail/mta/guard"
)

// `minimail auth blocked` and `auth unblock` show and lift the login
// blocks of the throttle SMTP AUTH and POP3 share (auth.max_failures
// failed logins from an address, four times as many from its /24 or /64,
// within auth.failure_window). The blocks live in the running server's
// memory, so these commands only ever talk to it over the control socket.

// adminThrottle is what the auth commands need of the running server's
// login throttle; *guard.AuthThrottle satisfies it.
type adminThrottle interface {
	Blocks() []guard.Block
	Unblock(target netip.Prefix) []netip.Prefix
	UnblockAll() []netip.Prefix
}

// noServerForBlocks is the error of the auth commands when no server runs
// on dataDir.
func noServerForBlocks(dataDir string) error {
	return fmt.Errorf("no server running on %s: blocks are kept in the running server's memory", dataDir)
}

// unblockAll is the ADDR of `auth unblock` that clears every count.
const unblockAll = "all"

// unblockTarget parses the ADDR of `auth unblock`: an IP address, which
// also clears its subnet's count, or a subnet in CIDR notation, as `auth
// blocked` lists them.
func unblockTarget(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.WithZone("").Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	return netip.Prefix{}, fmt.Errorf("ADDR %q: want an IP address (192.0.2.7, 2001:db8::7), a subnet (192.0.2.0/24, 2001:db8::/64) or %s", s, unblockAll)
}

// errNoThrottle answers the auth operations outside a running server.
var errNoThrottle = errors.New("no login throttle here: blocks are kept in the running server's memory")

// unblock runs auth.unblock on the server.
func (a *adminOps) unblock(addr string) ([]netip.Prefix, error) {
	if a.throttle == nil {
		return nil, errNoThrottle
	}
	if addr == unblockAll {
		return a.throttle.UnblockAll(), nil
	}
	target, err := unblockTarget(addr)
	if err != nil {
		return nil, err
	}
	return a.throttle.Unblock(target), nil
}

// blocks runs auth.blocked on the server.
func (a *adminOps) blocks() ([]guard.Block, error) {
	if a.throttle == nil {
		return nil, errNoThrottle
	}
	return a.throttle.Blocks(), nil
}

func authCommand() *cli.Command {
	return &cli.Command{
		Name:      "auth",
		Usage:     "see and lift the running server's blocks of addresses with too many failed logins",
		UsageText: "minimail [--config FILE] auth blocked|unblock [ADDR|all]",
		Subcommands: []*cli.Command{
			{
				Name: "blocked", Usage: "list the addresses and subnets whose logins are refused, and until when",
				UsageText: "minimail [--config FILE] auth blocked",
				Action: func(c *cli.Context) error {
					if _, err := args(c); err != nil {
						return err
					}
					resp, err := callLiveServer(c, request{Op: "auth.blocked"})
					if err != nil {
						return err
					}
					printBlocks(c.App.Writer, resp.Blocks)
					return nil
				},
			},
			{
				Name: "unblock", ArgsUsage: "ADDR|all",
				Usage:     "accept logins again from an address (clearing its subnet's count too), a subnet, or all",
				UsageText: "minimail [--config FILE] auth unblock ADDR|all",
				Action: func(c *cli.Context) error {
					a, err := args(c, "ADDR|all")
					if err != nil {
						return err
					}
					if a[0] != unblockAll {
						if _, err := unblockTarget(a[0]); err != nil {
							return usagef("%v", err)
						}
					}
					resp, err := callLiveServer(c, request{Op: "auth.unblock", Addr: a[0]})
					if err != nil {
						return err
					}
					printCleared(c.App.Writer, a[0], resp.Cleared)
					return nil
				},
			},
		},
	}
}

// callLiveServer sends req to the server running on the config's data_dir:
// unlike the other admin commands, there is nothing to do without it.
func callLiveServer(c *cli.Context, req request) (response, error) {
	cfg, err := config(c)
	if err != nil {
		return response{}, err
	}
	resp, err := callServer(cfg.DataDir, req)
	switch {
	case errors.Is(err, errNoServer):
		return resp, noServerForBlocks(cfg.DataDir)
	case err != nil:
		return resp, err
	case resp.Error != "":
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// printBlocks prints a header and one line per block, or says there is
// none, so that an empty answer never looks like a failure.
func printBlocks(w io.Writer, blocks []guard.Block) {
	if len(blocks) == 0 {
		fmt.Fprintln(w, "no address is blocked")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ADDRESS\tFAILURES\tBLOCKED UNTIL\n")
	for _, b := range blocks {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", netName(b.Net), b.Failures, b.Until.Local().Format(time.RFC3339))
	}
	tw.Flush()
}

// printCleared says what `auth unblock` cleared.
func printCleared(w io.Writer, target string, cleared []netip.Prefix) {
	switch {
	case len(cleared) == 0 && target == unblockAll:
		fmt.Fprintln(w, "no failed logins counted: nothing to unblock")
		return
	case len(cleared) == 0:
		fmt.Fprintf(w, "no failed logins counted for %s: nothing to unblock\n", target)
		return
	}
	for _, p := range cleared {
		fmt.Fprintf(w, "cleared the failed logins of %s\n", netName(p))
	}
}

// netName shows a single address without its /32 or /128.
func netName(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}
