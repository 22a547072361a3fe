package main

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"minimail/mta/queue"
	"minimail/store"
)

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	onUsage := func(_ *cli.Context, err error, _ bool) error { return usagef("%v", err) }
	app := &cli.App{
		Name:      "minimail",
		Usage:     "a small mail server: SMTP in and out, a durable queue, POP3",
		Reader:    stdin,
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "config",
				Usage:   "config file",
				EnvVars: []string{"MINIMAIL_CONFIG"},
				Value:   "minimail.toml",
			},
		},
		OnUsageError:    onUsage,
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // run() reports errors and picks exit codes
		Commands: []*cli.Command{
			initCommand(),
			serveCommand(),
			userCommand(),
			queueCommand(),
			dnsCommand(),
			backupCommand(),
			compactCommand(),
			demoCommand(),
		},
	}
	for _, c := range app.Commands {
		setUsageHandler(c, onUsage)
	}
	return app
}

func setUsageHandler(c *cli.Command, h cli.OnUsageErrorFunc) {
	c.OnUsageError = h
	for _, sub := range c.Subcommands {
		setUsageHandler(sub, h)
	}
}

// config loads the file named by --config.
func config(c *cli.Context) (*Config, error) {
	return loadConfig(c.String("config"))
}

// args checks the positional argument count.
func args(c *cli.Context, names ...string) ([]string, error) {
	if c.NArg() != len(names) {
		return nil, usagef("%s: want %d argument(s): %s (flags go before arguments)", c.Command.FullName(), len(names), strings.Join(names, " "))
	}
	return c.Args().Slice(), nil
}

// adminAction is the Action of an admin command: it checks the positional
// arguments, loads the config, has the request carried out (by the running
// server or on the store directly) and prints the answer.
func adminAction(argNames []string, build func(args []string) request, print func(w io.Writer, args []string, resp response)) cli.ActionFunc {
	return func(c *cli.Context) error {
		a, err := args(c, argNames...)
		if err != nil {
			return err
		}
		cfg, err := config(c)
		if err != nil {
			return err
		}
		resp, err := adminDo(cfg, build(a))
		if err != nil {
			return err
		}
		print(c.App.Writer, a, resp)
		return nil
	}
}

func userCommand() *cli.Command {
	password := &cli.StringFlag{Name: "password", Usage: "the password (default: one line read from stdin)"}
	return &cli.Command{
		Name:  "user",
		Usage: "manage mailboxes",
		Subcommands: []*cli.Command{
			{
				Name: "add", Usage: "create a mailbox", ArgsUsage: "ADDR",
				Flags:  []cli.Flag{password},
				Action: func(c *cli.Context) error { return userWithPassword(c, "user.add") },
			},
			{
				Name: "passwd", Usage: "set a mailbox's password", ArgsUsage: "ADDR",
				Flags:  []cli.Flag{password},
				Action: func(c *cli.Context) error { return userWithPassword(c, "user.passwd") },
			},
			{
				Name: "del", Usage: "delete a mailbox and all its mail", ArgsUsage: "ADDR",
				Action: adminAction([]string{"ADDR"},
					func(a []string) request { return request{Op: "user.del", Addr: a[0]} },
					func(w io.Writer, a []string, _ response) { fmt.Fprintf(w, "deleted %s\n", a[0]) }),
			},
			{
				Name: "list", Usage: "list mailboxes",
				Action: adminAction(nil,
					func([]string) request { return request{Op: "user.list"} },
					func(w io.Writer, _ []string, resp response) {
						for _, u := range resp.Users {
							fmt.Fprintf(w, "%s\t%s\n", u.Address, u.Created.Format(time.RFC3339))
						}
					}),
			},
		},
	}
}

// userWithPassword runs user add / user passwd after checking the address
// and password here, so bad input is a usage error (exit 2) that changes
// nothing.
func userWithPassword(c *cli.Context, op string) error {
	a, err := args(c, "ADDR")
	if err != nil {
		return err
	}
	cfg, err := config(c)
	if err != nil {
		return err
	}
	addr, err := userAddress(cfg, a[0])
	if err != nil {
		return usagef("%v", err)
	}
	pw := c.String("password")
	if !c.IsSet("password") {
		line, err := bufio.NewReader(c.App.Reader).ReadString('\n')
		if err != nil && line == "" {
			return usagef("no password: pass --password or one line on stdin")
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	if pw == "" {
		return usagef("empty password refused")
	}
	if _, err := adminDo(cfg, request{Op: op, Addr: addr, Password: pw}); err != nil {
		return err
	}
	verb := "created"
	if op == "user.passwd" {
		verb = "password changed for"
	}
	fmt.Fprintf(c.App.Writer, "%s %s\n", verb, addr)
	return nil
}

func queueCommand() *cli.Command {
	return &cli.Command{
		Name:  "queue",
		Usage: "inspect and act on the outbound queue",
		Subcommands: []*cli.Command{
			{
				Name: "list", Usage: "one line per queued message: id, sender, recipients, attempts, next attempt, last error",
				Action: adminAction(nil,
					func([]string) request { return request{Op: "queue.list"} },
					func(w io.Writer, _ []string, resp response) { printQueue(w, resp.Queue) }),
			},
			{
				Name: "flush", Usage: "retry every queued message now",
				Action: adminAction(nil,
					func([]string) request { return request{Op: "queue.flush"} },
					func(io.Writer, []string, response) {}),
			},
			{
				Name: "drop", Usage: "delete a queued message without bouncing it", ArgsUsage: "ID",
				Action: adminAction([]string{"ID"},
					func(a []string) request { return request{Op: "queue.drop", ID: a[0]} },
					func(w io.Writer, a []string, _ response) { fmt.Fprintf(w, "dropped %s\n", a[0]) }),
			},
		},
	}
}

func printQueue(w io.Writer, entries []store.QueueEntry) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, e := range entries {
		var rcpts []string
		for _, r := range e.Rcpts {
			if r.State == store.RcptPending {
				rcpts = append(rcpts, r.Addr)
			}
		}
		from := e.From
		if from == "" {
			from = "<>"
		}
		lastErr := e.LastError
		if lastErr == "" {
			lastErr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", queue.FormatID(e.ID), from, strings.Join(rcpts, ","),
			e.Attempts, e.NextAttempt.Local().Format(time.RFC3339), lastErr)
	}
	tw.Flush()
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name: "backup", Usage: "write a consistent copy of the database to FILE, also while serve runs", ArgsUsage: "FILE",
		Action: func(c *cli.Context) error {
			a, err := args(c, "FILE")
			if err != nil {
				return err
			}
			cfg, err := config(c)
			if err != nil {
				return err
			}
			// The server may run in another directory: send it an absolute path.
			path, err := filepath.Abs(a[0])
			if err != nil {
				return usagef("backup file %s: %v", a[0], err)
			}
			if _, err := adminDo(cfg, request{Op: "backup", Path: path}); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "backup written to %s\n", path)
			return nil
		},
	}
}
