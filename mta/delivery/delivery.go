// Package delivery holds the one rule for whether a failed delivery is
// worth another try, so that the packages that produce delivery errors
// (mda, remote) and those that act on them (mta, queue) agree without
// importing each other.
//
// The verdict travels inside the error, as with go-smtp's *SMTPError: an
// error in the chain with a Temporary() bool method decides. An error
// without one is temporary, because the two mistakes are not alike: a
// wrong 4xx (or a deferral) costs a retry, a wrong 5xx (or a bounce) loses
// the message.
package delivery

import "errors"

// Temporary reports whether a later attempt may succeed where err failed:
// what the first error in err's chain with a Temporary() bool method says,
// and true when none has one. A nil err is no failure: false.
func Temporary(err error) bool {
	if err == nil {
		return false
	}
	var t interface{ Temporary() bool }
	if errors.As(err, &t) {
		return t.Temporary()
	}
	return true
}
