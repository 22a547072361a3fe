package antispam

import (
	"bytes"
	"fmt"
	"mime"
	"minimail/mta/header"
	"slices"
	"sort"
	"strings"
)

// ForgedFields are the fields the MX adds from rspamd's verdict. A copy
// that arrives with a message was written by its sender, who would like
// to be taken for clean: header.Remove drops them before the scan.
var ForgedFields = []string{"X-Spam", "X-Spamd-Result", "X-Spam-Status", "X-Spam-Flag"}

// maxSymbols bounds the symbols listed in X-Spamd-Result, the largest
// first.
const maxSymbols = 50

// ResultFields are the fields that record res in front of a delivered
// message: always X-Spamd-Result with the score, in the format of
// rspamd's own milter_headers module ("default: False [1.20 / 15.00]"
// and one matched rule a line), and X-Spam: Yes when the action says the
// message is spam but may be delivered.
func ResultFields(res Result) []byte {
	var b bytes.Buffer
	if res.Action == ActionAddHeader || res.Action == ActionRewriteSubject {
		b.WriteString("X-Spam: Yes\r\n")
	}
	spam := "False"
	if res.Action != ActionNoAction && res.Action != ActionGreylist {
		spam = "True"
	}
	fmt.Fprintf(&b, "X-Spamd-Result: default: %s [%.2f / %.2f]", spam, res.Score, res.Required)
	syms := slices.Clone(res.Symbols)
	sort.Slice(syms, func(i, j int) bool {
		if a, b := abs(syms[i].Score), abs(syms[j].Score); a != b {
			return a > b
		}
		return syms[i].Name < syms[j].Name
	})
	for _, s := range syms[:min(len(syms), maxSymbols)] {
		fmt.Fprintf(&b, ";\r\n\t%s(%.2f)", s.Name, s.Score)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// maxSubject bounds a rewritten subject, well within the 998-octet line
// limit once encoded.
const maxSubject = 400

// RewriteSubject replaces the Subject fields of the CRLF message msg with
// one holding subject, as rspamd's rewrite subject action asks. rspamd
// gives the subject decoded: one with characters outside ASCII is written
// as an RFC 2047 encoded word. Control characters are dropped, so the
// value cannot end the field early.
func RewriteSubject(msg []byte, subject string) []byte {
	subject = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, subject)
	if len(subject) > maxSubject {
		subject = strings.ToValidUTF8(subject[:maxSubject], "")
	}
	value := subject
	for _, r := range subject {
		if r >= 0x80 {
			value = mime.QEncoding.Encode("utf-8", subject)
			break
		}
	}
	rest := header.Remove(msg, "Subject")
	out := make([]byte, 0, len(rest)+len(value)+12)
	out = append(out, "Subject: "+value+"\r\n"...)
	return append(out, rest...)
}
