package pop3

import (
	"errors"
	"strconv"
	"strings"
)

// command is one parsed client line.
type command struct {
	// Verb is the keyword, upper-cased: RFC 1939 section 3 makes keywords
	// case-insensitive.
	Verb string
	// Args are the space-separated arguments.
	Args []string
	// Rest is everything after the keyword and its separating space,
	// untouched. PASS uses it: RFC 1939 section 7 lets a server treat spaces
	// as part of the password, since PASS has exactly one argument.
	Rest string
}

// maxVerbLength bounds the keyword. RFC 1939 keywords are three or four
// characters and RFC 2449 extension keywords at most four; a little slack
// keeps the parser tolerant without letting junk through as a keyword.
const maxVerbLength = 16

var (
	errEmptyCommand = errors.New("empty command")
	errBadVerb      = errors.New("malformed command keyword")
)

// parseCommand splits a line (without its CRLF) into keyword and arguments.
// Keywords must be printable ASCII with no spaces; arguments are separated by
// runs of spaces (RFC 1939 asks for single spaces, clients vary).
func parseCommand(line string) (command, error) {
	verb, rest, _ := strings.Cut(line, " ")
	if verb == "" {
		if strings.TrimLeft(line, " ") == "" {
			return command{}, errEmptyCommand
		}
		return command{}, errBadVerb
	}
	if len(verb) > maxVerbLength {
		return command{}, errBadVerb
	}
	for i := 0; i < len(verb); i++ {
		if c := verb[i]; c <= ' ' || c >= 0x7f {
			return command{}, errBadVerb
		}
	}
	return command{
		Verb: strings.ToUpper(verb),
		Args: strings.FieldsFunc(rest, func(r rune) bool { return r == ' ' }),
		Rest: rest,
	}, nil
}

// parseNumber reads a non-negative decimal argument: digits only, no sign,
// as RFC 1939 section 3 describes message numbers and line counts.
func parseNumber(s string) (uint64, bool) {
	if s == "" || len(s) > 20 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}
