package antispam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// DefaultRspamdTimeout bounds one scan when Rspamd.Timeout is zero.
// rspamd gives up on a message itself after its task_timeout (8 s by
// default) and answers then; 20 s leaves room for a busy server while
// staying far below the 10 minutes a sender waits for the reply to DATA
// (RFC 5321 4.5.3.2.6).
const DefaultRspamdTimeout = 20 * time.Second

// maxRspamdReply bounds the answer read from rspamd: a reply with every
// symbol of a large rule set is tens of kilobytes.
const maxRspamdReply = 1 << 20

// The actions rspamd answers with (rspamd's "metric actions").
const (
	ActionNoAction       = "no action"
	ActionGreylist       = "greylist"
	ActionAddHeader      = "add header"
	ActionRewriteSubject = "rewrite subject"
	ActionSoftReject     = "soft reject"
	ActionReject         = "reject"
)

// Rspamd scans messages with an rspamd server over its HTTP protocol
// (POST /checkv2, the protocol rspamd's own proxy and the MTA
// integrations speak).
type Rspamd struct {
	URL     string        // base URL, e.g. "http://127.0.0.1:11333"
	Timeout time.Duration // for one scan, connection included; 0 = DefaultRspamdTimeout
	// Client is nil for a private one that keeps connections open and
	// ignores HTTP_PROXY (rspamd is a local service).
	Client *http.Client

	once   sync.Once
	client *http.Client
}

// Envelope is what rspamd is told about a message besides its text. There
// is never a User: MX clients are not authenticated, and rspamd treats an
// authenticated user's mail as outbound.
type Envelope struct {
	IP      netip.Addr
	Helo    string
	From    string   // envelope sender; "" for the null sender
	Rcpts   []string // envelope recipients
	QueueID string   // the transaction's id, the one in the 250 reply
}

// Result is rspamd's verdict on one message.
type Result struct {
	Action   string
	Score    float64
	Required float64 // the score of the reject action
	Symbols  []Symbol
	// Message is rspamd's text for the SMTP reply (messages.smtp_message),
	// made fit for a reply line; "" when it gave none.
	Message string
	// Subject is the new subject for ActionRewriteSubject.
	Subject string
}

// Symbol is one rule that matched, with its share of the score.
type Symbol struct {
	Name  string
	Score float64
}

// Check scans msg. An error means there is no verdict: rspamd is down,
// slow, or answered something that is not one.
func (r *Rspamd) Check(ctx context.Context, env Envelope, msg []byte) (Result, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultRspamdTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(r.URL, "/")+"/checkv2", bytes.NewReader(msg))
	if err != nil {
		return Result{}, fmt.Errorf("rspamd: %w", err)
	}
	// Header values are the client's words: net/http refuses a value
	// with CR or LF, so none can add a header of its own.
	if env.IP.IsValid() {
		req.Header.Set("IP", env.IP.String())
	}
	if env.Helo != "" {
		req.Header.Set("Helo", env.Helo)
	}
	if env.From != "" {
		req.Header.Set("From", env.From)
	}
	for _, rc := range env.Rcpts {
		req.Header.Add("Rcpt", rc)
	}
	if env.QueueID != "" {
		req.Header.Set("Queue-Id", env.QueueID)
	}
	r.once.Do(func() {
		r.client = r.Client
		if r.client == nil {
			r.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}}
		}
	})
	resp, err := r.client.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("rspamd: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRspamdReply+1))
	if err != nil {
		return Result{}, fmt.Errorf("rspamd: reading the reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Result{}, fmt.Errorf("rspamd: %s: %s", resp.Status, ReplyText(string(body)))
	}
	if len(body) > maxRspamdReply {
		return Result{}, fmt.Errorf("rspamd: reply over %d bytes", maxRspamdReply)
	}
	return ParseReply(body)
}

// rspamdReply is the part of rspamd's JSON reply that is used.
type rspamdReply struct {
	Action   *string  `json:"action"`
	Score    *float64 `json:"score"`
	Required float64  `json:"required_score"`
	Symbols  map[string]struct {
		Score float64 `json:"score"`
	} `json:"symbols"`
	Messages map[string]json.RawMessage `json:"messages"`
	Subject  string                     `json:"subject"`
}

var errNoVerdict = errors.New("rspamd: reply has no action or score")

// ParseReply reads rspamd's /checkv2 reply. A reply without an action and
// a score, or with an action this package does not know, is an error:
// guessing would either refuse mail or let a reject through as clean.
func ParseReply(b []byte) (Result, error) {
	var rep rspamdReply
	if err := json.Unmarshal(b, &rep); err != nil {
		return Result{}, fmt.Errorf("rspamd: unreadable reply: %w", err)
	}
	if rep.Action == nil || rep.Score == nil {
		return Result{}, errNoVerdict
	}
	res := Result{Action: *rep.Action, Score: *rep.Score, Required: rep.Required}
	switch res.Action {
	case ActionNoAction, ActionGreylist, ActionAddHeader, ActionRewriteSubject, ActionSoftReject, ActionReject:
	default:
		return Result{}, fmt.Errorf("rspamd: unknown action %q", ReplyText(res.Action))
	}
	if math.IsNaN(res.Score) || math.IsInf(res.Score, 0) {
		return Result{}, errors.New("rspamd: score is not a number")
	}
	if math.IsNaN(res.Required) || math.IsInf(res.Required, 0) {
		res.Required = 0
	}
	for name, s := range rep.Symbols {
		if n := symbolName(name); n != "" && !math.IsNaN(s.Score) && !math.IsInf(s.Score, 0) {
			res.Symbols = append(res.Symbols, Symbol{Name: n, Score: s.Score})
		}
	}
	if raw, ok := rep.Messages["smtp_message"]; ok {
		var text string
		if json.Unmarshal(raw, &text) == nil {
			res.Message = ReplyText(text)
		}
	}
	res.Subject = rep.Subject
	return res, nil
}

// symbolName keeps a symbol name that can go into a header as it is:
// rspamd's names are upper-case words with '_' (user rules may add
// digits, '-' and '.'). Anything else is dropped, not quoted.
func symbolName(s string) string {
	if s == "" || len(s) > 64 {
		return ""
	}
	for _, c := range []byte(s) {
		ok := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if !ok {
			return ""
		}
	}
	return s
}
