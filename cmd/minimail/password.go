package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// defaultMinPasswordLength is auth.min_password_length when unset.
const defaultMinPasswordLength = 8

// readPassword gets the password for `user add` and `user passwd`: from
// --password (scripts; it shows in shell history and ps), else, on a
// terminal, typed twice without echo, else one line of stdin.
func readPassword(c *cli.Context, addr string) (string, error) {
	if c.IsSet("password") {
		return c.String("password"), nil
	}
	if f, ok := c.App.Reader.(interface{ Fd() uintptr }); ok && term.IsTerminal(int(f.Fd())) {
		return promptPassword(int(f.Fd()), c.App.ErrWriter, addr)
	}
	line, err := bufio.NewReader(c.App.Reader).ReadString('\n')
	if err != nil && line == "" {
		return "", usagef("no password: type it on a terminal, or pass one line on stdin (or --password in scripts)")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// promptPassword asks for the password on the terminal fd, twice, with
// echo off, as passwd(1) does. The prompts go to w (stderr), so stdout
// stays the command's answer.
func promptPassword(fd int, w io.Writer, addr string) (string, error) {
	read := func(prompt string) (string, error) {
		fmt.Fprint(w, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(w) // the Enter the terminal did not echo
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		return string(b), nil
	}
	pw, err := read(fmt.Sprintf("New password for %s: ", addr))
	if err != nil {
		return "", err
	}
	again, err := read("Repeat it: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", usagef("the passwords do not match; nothing changed")
	}
	return pw, nil
}

// maxPasswordBytes is as much of a password as bcrypt uses.
const maxPasswordBytes = 72

// checkPassword refuses an empty password, one shorter than
// auth.min_password_length characters, and one longer than bcrypt takes.
func checkPassword(cfg *Config, addr, pw string) error {
	if pw == "" {
		return fmt.Errorf("empty password refused")
	}
	want := cfg.minPasswordLength()
	if n := utf8.RuneCountInString(pw); n < want {
		return fmt.Errorf("password for %s: %d characters, want at least %d (auth.min_password_length in %s)", addr, n, want, cfg.path)
	}
	if len(pw) > maxPasswordBytes {
		return fmt.Errorf("password for %s: %d bytes, more than the %d a bcrypt hash takes", addr, len(pw), maxPasswordBytes)
	}
	return nil
}
