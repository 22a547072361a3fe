package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"minimail/mta/queue"
	"minimail/store"
)

// newApp builds the command line. Every command has a one-line UsageText
// starting with "minimail": help shows it, and a usage error prints it
// alone, never the whole help.
func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:      "minimail",
		Usage:     "a small mail server: SMTP in and out, a durable queue, POP3",
		UsageText: "minimail [--config FILE] COMMAND [options] [arguments]   (minimail --help lists the commands)",
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
			&cli.BoolFlag{Name: "version", Usage: "print the version"},
		},
		// --version is ours: it prints "minimail VERSION".
		HideVersion:     true,
		HideHelpCommand: true,
		Action:          rootAction,
		OnUsageError:    onUsageError,
		ExitErrHandler:  func(*cli.Context, error) {}, // run() reports errors and picks exit codes
		Commands: []*cli.Command{
			initCommand(),
			serveCommand(),
			userCommand(),
			aliasCommand(),
			queueCommand(),
			authCommand(),
			statusCommand(),
			traceCommand(),
			dnsCommand(),
			backupCommand(),
			compactCommand(),
			demoCommand(),
			sendmailCommand(),
		},
	}
	usage := map[string]string{
		"init":  "minimail init --domain DOMAIN --hostname HOSTNAME [--dir DIR] [--data-dir DIR] [--service-user USER]",
		"serve": "minimail [--config FILE] serve",
		"dns":   "minimail [--config FILE] dns [--check]",
		"demo":  "minimail demo [--keep]",
	}
	for _, c := range app.Commands {
		if c.UsageText == "" {
			c.UsageText = usage[c.Name]
		}
		prepareCommand(c, c.Name != "init" && c.Name != "demo")
	}
	return app
}

// rootAction runs for `minimail` without a command: --version, or help.
func rootAction(c *cli.Context) error {
	if c.Bool("version") {
		fmt.Fprintf(c.App.Writer, "minimail %s\n", version())
		return nil
	}
	if c.NArg() > 0 {
		if c.Args().First() == "help" {
			return cli.ShowAppHelp(c)
		}
		return &usageError{msg: fmt.Sprintf("unknown command %s", c.Args().First()), usage: c.App.UsageText}
	}
	return cli.ShowAppHelp(c)
}

// onUsageError turns a flag the cli package refused into a usageError with
// the command's usage line.
func onUsageError(c *cli.Context, err error, _ bool) error {
	return &usageError{msg: err.Error(), usage: usageLine(c)}
}

func usageLine(c *cli.Context) string {
	if c.Command != nil && c.Command.UsageText != "" {
		return c.Command.UsageText
	}
	return c.App.UsageText
}

// prepareCommand gives c and its subcommands the usage error handling, a
// --config flag of their own when they read the config (so that
// `minimail serve --config X` works as `minimail --config X serve` does),
// and, for a command with subcommands, an Action that names an unknown
// subcommand.
func prepareCommand(c *cli.Command, readsConfig bool) {
	c.OnUsageError = onUsageError
	if readsConfig {
		c.Flags = append(c.Flags, &cli.StringFlag{Name: "config", Usage: "config file (as the global --config)"})
	}
	if len(c.Subcommands) > 0 && c.Action == nil {
		c.Action = func(ctx *cli.Context) error {
			if ctx.NArg() > 0 {
				return usagef("unknown command %s %s", commandName(ctx), ctx.Args().First())
			}
			return cli.ShowSubcommandHelp(ctx)
		}
	}
	if act := c.Action; act != nil {
		c.Action = func(ctx *cli.Context) error {
			err := act(ctx)
			var ue *usageError
			if errors.As(err, &ue) && ue.usage == "" {
				ue.usage = usageLine(ctx)
			}
			return err
		}
	}
	for _, sub := range c.Subcommands {
		prepareCommand(sub, readsConfig)
	}
}

// configPath is the --config given closest to the command (after it wins
// over before it), else the global flag's value: MINIMAIL_CONFIG or the
// default.
func configPath(c *cli.Context) string {
	var root *cli.Context
	for _, ctx := range c.Lineage() {
		if ctx.Command == nil {
			continue
		}
		if slices.Contains(ctx.LocalFlagNames(), "config") {
			return ctx.String("config")
		}
		root = ctx
	}
	if root == nil {
		return c.String("config")
	}
	return root.String("config")
}

// config loads the file named by --config.
func config(c *cli.Context) (*Config, error) {
	return loadConfig(configPath(c))
}

// args checks the positional argument count.
func args(c *cli.Context, names ...string) ([]string, error) {
	if c.NArg() != len(names) {
		want := "no arguments"
		if len(names) > 0 {
			want = fmt.Sprintf("%d argument(s): %s", len(names), strings.Join(names, " "))
		}
		return nil, usagef("%s: want %s (flags go before arguments)", commandName(c), want)
	}
	return c.Args().Slice(), nil
}

// commandName is the command as typed, "user add".
func commandName(c *cli.Context) string {
	var names []string
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil && ctx.Command.Name != c.App.Name {
			names = append([]string{ctx.Command.Name}, names...)
		}
	}
	return strings.Join(names, " ")
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
	password := &cli.StringFlag{Name: "password", Usage: "the password, for scripts (it lands in shell history and ps): default: asked twice on a terminal, else one line of stdin"}
	return &cli.Command{
		Name:      "user",
		Usage:     "manage mailboxes",
		UsageText: "minimail [--config FILE] user add|passwd|del|list|quota [options] [ADDR] [BYTES]",
		Subcommands: []*cli.Command{
			{
				Name: "add", Usage: "create a mailbox", ArgsUsage: "ADDR",
				UsageText: "minimail [--config FILE] user add [--password PASSWORD] ADDR",
				Flags:     []cli.Flag{password},
				Action:    func(c *cli.Context) error { return userWithPassword(c, "user.add") },
			},
			{
				Name: "passwd", Usage: "set a mailbox's password", ArgsUsage: "ADDR",
				UsageText: "minimail [--config FILE] user passwd [--password PASSWORD] ADDR",
				Flags:     []cli.Flag{password},
				Action:    func(c *cli.Context) error { return userWithPassword(c, "user.passwd") },
			},
			{
				Name: "del", Usage: "delete a mailbox and all its mail", ArgsUsage: "ADDR",
				UsageText: "minimail [--config FILE] user del ADDR",
				Action: adminAction([]string{"ADDR"},
					func(a []string) request { return request{Op: "user.del", Addr: a[0]} },
					func(w io.Writer, a []string, _ response) { fmt.Fprintf(w, "deleted %s\n", a[0]) }),
			},
			{
				Name: "list", Usage: "list mailboxes",
				UsageText: "minimail [--config FILE] user list",
				Action: adminAction(nil,
					func([]string) request { return request{Op: "user.list"} },
					func(w io.Writer, _ []string, resp response) {
						for _, u := range resp.Users {
							fmt.Fprintf(w, "%s\t%s\t%s\n", u.Address, u.Created.Format(time.RFC3339), usageText(u, resp.DefaultQuota))
						}
					}),
			},
			{
				Name: "quota", Usage: "set a mailbox's quota in bytes; 0 = the limits.max_mailbox_bytes default", ArgsUsage: "ADDR BYTES",
				UsageText: "minimail [--config FILE] user quota ADDR BYTES",
				Action:    userQuota,
			},
		},
	}
}

// usageText is the use and quota column of `user list`: "120 of 5000
// bytes", "(default)" after a quota from limits.max_mailbox_bytes, "no
// quota" when neither the user nor the default has one.
func usageText(u store.User, defaultQuota int64) string {
	switch {
	case u.Quota > 0:
		return fmt.Sprintf("%d of %d bytes", u.Used, u.Quota)
	case defaultQuota > 0:
		return fmt.Sprintf("%d of %d bytes (default)", u.Used, defaultQuota)
	}
	return fmt.Sprintf("%d bytes, no quota", u.Used)
}

// userQuota runs user quota ADDR BYTES; BYTES that are no number of 0 or
// more are a usage error.
func userQuota(c *cli.Context) error {
	a, err := args(c, "ADDR", "BYTES")
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(a[1], 10, 64)
	if err != nil || n < 0 {
		return usagef("BYTES %q: want a number of bytes, 0 or more (0 = the limits.max_mailbox_bytes default)", a[1])
	}
	return adminAction([]string{"ADDR", "BYTES"},
		func(a []string) request { return request{Op: "user.quota", Addr: a[0], Quota: n} },
		func(w io.Writer, a []string, _ response) {
			if n == 0 {
				fmt.Fprintf(w, "quota of %s: the default\n", a[0])
			} else {
				fmt.Fprintf(w, "quota of %s: %d bytes\n", a[0], n)
			}
		})(c)
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
	pw, err := readPassword(c, addr)
	if err != nil {
		return err
	}
	if err := checkPassword(cfg, addr, pw); err != nil {
		return usagef("%v", err)
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

func aliasCommand() *cli.Command {
	return &cli.Command{
		Name:      "alias",
		Usage:     "manage aliases (local@domain, or @domain: the catch-all)",
		UsageText: "minimail [--config FILE] alias add|del|list [ALIAS] [TARGET...]",
		Subcommands: []*cli.Command{
			{
				Name: "add", Usage: "make ALIAS deliver to the TARGETs (local users, aliases, or remote addresses to forward to)", ArgsUsage: "ALIAS TARGET...",
				UsageText: "minimail [--config FILE] alias add ALIAS TARGET...",
				Action: func(c *cli.Context) error {
					if c.NArg() < 2 {
						return usagef("alias add: want ALIAS and at least one TARGET")
					}
					a := c.Args().Slice()
					cfg, err := config(c)
					if err != nil {
						return err
					}
					resp, err := adminDo(cfg, request{Op: "alias.add", Addr: a[0], Targets: a[1:]})
					if err != nil {
						return err
					}
					for _, al := range resp.Aliases {
						fmt.Fprintf(c.App.Writer, "created %s -> %s\n", al.Address, strings.Join(al.Targets, ", "))
					}
					return nil
				},
			},
			{
				Name: "del", Usage: "delete an alias", ArgsUsage: "ALIAS",
				UsageText: "minimail [--config FILE] alias del ALIAS",
				Action: adminAction([]string{"ALIAS"},
					func(a []string) request { return request{Op: "alias.del", Addr: a[0]} },
					func(w io.Writer, a []string, _ response) { fmt.Fprintf(w, "deleted %s\n", a[0]) }),
			},
			{
				Name: "list", Usage: "list aliases: alias, then its targets",
				UsageText: "minimail [--config FILE] alias list",
				Action: adminAction(nil,
					func([]string) request { return request{Op: "alias.list"} },
					func(w io.Writer, _ []string, resp response) {
						for _, al := range resp.Aliases {
							fmt.Fprintf(w, "%s\t%s\n", al.Address, strings.Join(al.Targets, ","))
						}
					}),
			},
		},
	}
}

func queueCommand() *cli.Command {
	return &cli.Command{
		Name:      "queue",
		Usage:     "inspect and act on the outbound queue",
		UsageText: "minimail [--config FILE] queue list|flush|drop [ID]",
		Subcommands: []*cli.Command{
			{
				Name: "list", Usage: "one line per queued message: id, sender, recipients, attempts, next attempt, last error",
				UsageText: "minimail [--config FILE] queue list",
				Action: adminAction(nil,
					func([]string) request { return request{Op: "queue.list"} },
					func(w io.Writer, _ []string, resp response) { printQueue(w, resp.Queue) }),
			},
			{
				Name: "flush", Usage: "retry every queued message now",
				UsageText: "minimail [--config FILE] queue flush",
				Action: adminAction(nil,
					func([]string) request { return request{Op: "queue.flush"} },
					func(io.Writer, []string, response) {}),
			},
			{
				Name: "drop", Usage: "delete a queued message without bouncing it", ArgsUsage: "ID",
				UsageText: "minimail [--config FILE] queue drop ID",
				Action: adminAction([]string{"ID"},
					func(a []string) request { return request{Op: "queue.drop", ID: a[0]} },
					func(w io.Writer, a []string, _ response) { fmt.Fprintf(w, "dropped %s\n", a[0]) }),
			},
		},
	}
}

// printQueue prints a header and one line per queued message, or says the
// queue is empty, so that an empty answer never looks like a failure.
func printQueue(w io.Writer, entries []store.QueueEntry) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\tFROM\tRECIPIENTS\tATTEMPTS\tNEXT ATTEMPT\tLAST ERROR\n")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", queue.EntryID(e), from, strings.Join(rcpts, ","),
			e.Attempts, e.NextAttempt.Local().Format(time.RFC3339), lastErr)
	}
	tw.Flush()
	if len(entries) == 0 {
		fmt.Fprintln(w, "queue is empty")
	}
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name: "backup", Usage: "write a consistent copy of the database to FILE (never overwritten), also while serve runs", ArgsUsage: "FILE",
		UsageText: "minimail [--config FILE] backup FILE",
		Action: func(c *cli.Context) error {
			a, err := args(c, "FILE")
			if err != nil {
				return err
			}
			cfg, err := config(c)
			if err != nil {
				return err
			}
			path, err := filepath.Abs(a[0])
			if err != nil {
				return usagef("backup file %s: %v", a[0], err)
			}
			n, err := backupFile(cfg, path)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "backup written to %s (%d bytes)\n", path, n)
			return nil
		},
	}
}
