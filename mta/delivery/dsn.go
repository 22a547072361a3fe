package delivery

import "github.com/emersion/go-smtp"

// DSN is what RFC 3461 asks of one message: RET and ENVID of its MAIL
// command, and each recipient's NOTIFY and ORCPT (Rcpts, in the order of
// the recipients; a nil entry or a short list means none was given). The
// SMTP server fills it from what go-smtp parsed, the queue keeps it with
// the message, and the remote client passes it on.
type DSN struct {
	Ret   smtp.DSNReturn
	EnvID string
	Rcpts []*smtp.RcptOptions
}

// Rcpt returns the parameters of recipient i, nil when it had none.
func (d DSN) Rcpt(i int) *smtp.RcptOptions {
	if i < 0 || i >= len(d.Rcpts) {
		return nil
	}
	return d.Rcpts[i]
}
