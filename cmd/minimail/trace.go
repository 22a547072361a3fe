package main

import (
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/urfave/cli/v2"

	"minimail/store"
)

// `minimail trace ID`: every event the store kept about a message (see
// store/trace.go), through the running server's control socket or, with
// no server running, the store opened briefly.

func traceCommand() *cli.Command {
	return &cli.Command{
		Name:      "trace",
		Usage:     "every stage and hop of a message: ID is the id of the 250 reply, a Message-ID (with or without <>), or a recipient address (its last 20 messages)",
		ArgsUsage: "ID",
		UsageText: "minimail [--config FILE] trace ID",
		Action: func(c *cli.Context) error {
			a, err := args(c, "ID")
			if err != nil {
				return err
			}
			if err := checkTraceQuery(a[0]); err != nil {
				return err
			}
			cfg, err := config(c)
			if err != nil {
				return err
			}
			resp, err := adminDo(cfg, request{Op: "trace", ID: a[0]})
			if err != nil {
				return err
			}
			printTrace(c.App.Writer, resp.Events)
			return nil
		},
	}
}

// maxTraceQuery bounds the argument: a Message-ID field's line (RFC 5322
// 2.1.1) is the longest thing it can be.
const maxTraceQuery = 998

// checkTraceQuery refuses an argument nothing could be traced by (exit 2):
// empty, too long, or with spaces or control characters inside.
func checkTraceQuery(q string) error {
	switch {
	case strings.TrimSpace(q) == "":
		return usagef("trace: ID is empty")
	case len(q) > maxTraceQuery:
		return usagef("trace: ID of %d octets, more than %d", len(q), maxTraceQuery)
	case strings.ContainsFunc(strings.TrimSpace(q), func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return usagef("trace: ID %q contains spaces or control characters", q)
	}
	return nil
}

// printTrace prints one line per event, oldest first (the store's order),
// each starting with its time and kind.
func printTrace(w io.Writer, events []store.Event) {
	for _, e := range events {
		fmt.Fprintln(w, e.String())
	}
}
