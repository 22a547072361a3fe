package main

import (
	"context"
	"fmt"
	"log/slog"
	"minimail/mta/header"
	"net/url"
	"strings"
	"time"

	"minimail/mta"
	"minimail/mta/antispam"
	"minimail/mta/msgauth"
	"minimail/mta/resolve"
	"minimail/store"
)

// Bounds of the [antispam] durations.
const (
	maxGreetDelay    = 10 * time.Second // RFC 5321 4.5.3.2.1 has clients wait 5 minutes, but some give up after 30 s
	maxGreylist      = 24 * time.Hour   // beyond it a retrying sender gives up (antispam.DefaultGreylistRetryWindow)
	maxRspamdTimeout = 5 * time.Minute  // below limits.data_timeout's default, which the sender sees too
)

// offDuration is a duration whose "" means off, as SPEC writes
// antispam.greylist.
type offDuration struct{ duration }

func (d *offDuration) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		d.Duration = 0
		return nil
	}
	return d.duration.UnmarshalText(b)
}

// validateAntispam: [antispam].
func (c *Config) validateAntispam() error {
	a := &c.Antispam
	for i, z := range a.DNSBL {
		if !validDomain(z) || !strings.Contains(strings.Trim(z, "."), ".") {
			return c.fail("antispam.dnsbl", "%q is not a DNS zone (want a name such as \"zen.spamhaus.org\")", z)
		}
		a.DNSBL[i] = strings.ToLower(strings.TrimSuffix(z, "."))
	}
	if a.Rspamd != "" {
		u, err := url.Parse(a.Rspamd)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return c.fail("antispam.rspamd", "%q: want the URL of rspamd's normal worker, such as \"http://127.0.0.1:11333\"", a.Rspamd)
		}
	}
	if a.RspamdTimeout.Duration > maxRspamdTimeout {
		return c.fail("antispam.rspamd_timeout", "%s is above %s", a.RspamdTimeout.Duration, maxRspamdTimeout)
	}
	if g := a.Greylist.Duration; g > maxGreylist {
		return c.fail("antispam.greylist", "%s is above %s, after which senders stop retrying", g, maxGreylist)
	}
	if a.GreetDelay != nil && a.GreetDelay.Duration > maxGreetDelay {
		return c.fail("antispam.greet_delay", "%s is above %s: senders would give up before the greeting", a.GreetDelay.Duration, maxGreetDelay)
	}
	return nil
}

// greetDelay is antispam.greet_delay in mta.Options terms: unset is the
// default, "0s" is off.
func (c *Config) greetDelay() time.Duration {
	switch {
	case c.Antispam.GreetDelay == nil:
		return 0
	case c.Antispam.GreetDelay.Duration == 0:
		return -1
	}
	return c.Antispam.GreetDelay.Duration
}

// antispamOptions wires [antispam] into the MX's options: the local-sender
// rule (always on, through the MX's SPF check), the early-talker wait, and
// each filter the config turns on.
func antispamOptions(o *mta.Options, cfg *Config, verifier *msgauth.Verifier, dnsCache *resolve.Cache, st *store.Store, log *slog.Logger) {
	o.SenderSPF = verifier.CheckSPF
	o.GreetDelay = cfg.greetDelay()
	a := cfg.Antispam
	if len(a.DNSBL) > 0 {
		o.Blocklist = &antispam.DNSBL{Zones: a.DNSBL, Resolver: dnsCache.Resolver(cfg.Relay.DNS), Logger: log}
	}
	if a.Greylist.Duration > 0 {
		o.Greylist = &antispam.Greylist{Delay: a.Greylist.Duration, Store: st}
	}
	if a.Rspamd != "" {
		o.Scan = scanWithRspamd(&antispam.Rspamd{URL: a.Rspamd, Timeout: a.RspamdTimeout.Duration})
	}
}

// scanWithRspamd gives the MX rspamd's verdicts in the MX's terms. The
// fields the verdict is recorded in are removed from the message first,
// whatever rspamd says or fails to say: a sender must not be able to
// write its own "X-Spam: No".
func scanWithRspamd(r *antispam.Rspamd) func(context.Context, mta.Envelope, []byte) (mta.Verdict, error) {
	return func(ctx context.Context, env mta.Envelope, msg []byte) (mta.Verdict, error) {
		msg = header.Remove(msg, antispam.ForgedFields...)
		res, err := r.Check(ctx, antispam.Envelope{IP: env.IP, Helo: env.Helo, From: env.From, Rcpts: env.Rcpts, QueueID: env.ID}, msg)
		if err != nil {
			return mta.Verdict{Message: msg}, err
		}
		v := mta.Verdict{
			Message: msg,
			Summary: fmt.Sprintf("rspamd=%s score=%.2f/%.2f", strings.ReplaceAll(res.Action, " ", "_"), res.Score, res.Required),
		}
		switch res.Action {
		case antispam.ActionReject:
			v.Disposition, v.Reason = mta.RejectSpam, orText(res.Message, "message refused as spam")
			return v, nil
		case antispam.ActionSoftReject, antispam.ActionGreylist:
			v.Disposition, v.Reason = mta.DeferSpam, orText(res.Message, "message deferred by the spam filter, try again later")
			return v, nil
		case antispam.ActionRewriteSubject:
			if res.Subject != "" {
				v.Message = antispam.RewriteSubject(msg, res.Subject)
			}
		}
		v.Prepend = antispam.ResultFields(res)
		return v, nil
	}
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
