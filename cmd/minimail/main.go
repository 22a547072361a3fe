package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// usageError is bad usage: a wrong argument or flag. Exit code 2. usage is
// the command's one-line synopsis, printed after the message.
type usageError struct{ msg, usage string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run executes the command line and returns the process exit code: 0 ok,
// 1 runtime failure, 2 bad usage or bad config (SPEC.md).
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	args = asSendmail(args)
	err := app.Run(args)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "minimail: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) && ue.usage != "" {
		fmt.Fprintf(stderr, "usage: %s\n", ue.usage)
	}
	return exitCode(err)
}

// asSendmail turns the command line of a binary called as "sendmail" (a
// symlink at /usr/sbin/sendmail) into `minimail sendmail ARGS`, reading
// /etc/minimail/minimail.toml unless MINIMAIL_CONFIG (or -C) names another.
func asSendmail(args []string) []string {
	if len(args) == 0 || filepath.Base(args[0]) != "sendmail" {
		return args
	}
	out := []string{args[0]}
	if os.Getenv("MINIMAIL_CONFIG") == "" {
		out = append(out, "--config", sendmailConfig)
	}
	return append(append(out, "sendmail"), args[1:]...)
}

func exitCode(err error) int {
	var xe *exitError
	if errors.As(err, &xe) {
		return xe.code
	}
	var ue *usageError
	var ce *configError
	var ec cli.ExitCoder
	var re *refusedError
	switch {
	case errors.As(err, &ue), errors.As(err, &ce), errors.As(err, &re):
		return 2
	case errors.As(err, &ec):
		// Only the cli package itself makes ExitCoders here: an unknown
		// command or help topic, which is bad usage.
		return 2
	}
	return 1
}
