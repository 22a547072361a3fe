package msgauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
)

// DefaultTimeout bounds all the DNS work of one Verify call when
// Verifier.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// maxSignatures caps the DKIM signatures verified per message: each costs a
// DNS lookup and a public-key operation, and a sender could add hundreds.
const maxSignatures = 10

// Verifier checks SPF, DKIM and DMARC on inbound messages and records the
// results in an Authentication-Results field (RFC 8601).
type Verifier struct {
	Resolver    *net.Resolver // every lookup goes through it; nil means net.DefaultResolver
	Cache       TXTCache      // when set, TXT answers it holds are taken from it first
	AuthServID  string        // our host name, the authserv-id of the field we add
	RejectDMARC bool          // refuse DMARC failures of p=reject domains instead of only recording them
	Timeout     time.Duration // for all lookups of one message; zero means DefaultTimeout
	Logger      *slog.Logger  // for what goes wrong inside the checks (a panic); nil discards
}

// Disposition is what a receiving server should do with a message, as
// Verify decides it.
type Disposition int

const (
	// Deliver: deliver Verdict.Message, which records the results.
	Deliver Disposition = iota
	// RejectMalformed: the message starts with a continuation line (RFC
	// 5322 section 2.2: a field starts with its name). Prepended, our field
	// would take that line for its own continuation, and with it whatever
	// results the sender wrote there.
	RejectMalformed
	// RejectUnevaluable: the message has no single usable From domain (RFC
	// 7489 section 6.6.1: such messages cannot be evaluated and are
	// "typically rejected"; RFC 5322 section 3.6 requires exactly one From
	// field). This does not depend on RejectDMARC: it is a malformed
	// message, not a policy.
	RejectUnevaluable
	// RejectPolicy: DMARC fails and the From domain's policy is reject, with
	// RejectDMARC set (RFC 7489 sections 6.6.4, 10.3: reject during SMTP).
	RejectPolicy
	// Temporary: RejectDMARC is set and DNS trouble leaves the DMARC verdict
	// open while it could be a reject: deferring is the only way that is
	// neither a silent pass nor a wrong rejection (RFC 7489 section 6.6.2,
	// temperror).
	Temporary
)

// Verdict is the outcome of Verify.
type Verdict struct {
	Disposition Disposition
	// Reason says why a message is not delivered, in a sentence fit for
	// the reply to the sender; "" for Deliver.
	Reason string
	// Summary is the verdicts for the caller's log line, e.g. "spf=pass
	// dkim=pass:a.test dmarc=pass policy=none from_domain=a.test"; "" when
	// the message could not be checked.
	Summary string
	// Field is the Authentication-Results field to put in front of
	// Message (Deliver only), with the line ending of the rest.
	Field []byte
	// Authenticated is the domains the message authenticated for: the
	// SPF domain (MAIL FROM's, or HELO's for the null sender) when SPF
	// passes, and the d= of each DKIM signature that verifies.
	Authenticated []string
	// Message is the message to deliver after Field (Deliver only): the
	// one given, with every Authentication-Results field claiming
	// AuthServID removed; the very slice given when there was none, so the
	// caller can put Field in front without copying the message.
	Message []byte
}

// Verify authenticates msg, received from ip after HELO helo and MAIL FROM
// mailFrom ("" for the null sender), and decides what to do with it. A
// message to deliver comes back with every Authentication-Results field
// claiming AuthServID removed, and one new field to prepend, e.g.
//
//	Authentication-Results: mx.example.org;
//		spf=pass smtp.mailfrom=bob@example.com;
//		dkim=pass header.d=example.com header.s=mail;
//		dmarc=pass header.from=example.com
//
// See Disposition for the messages refused or deferred. Everything else is
// delivered, with the results recorded; a DMARC failure under p=quarantine
// is recorded as dmarc=fail with reason "policy quarantine", for the
// mailbox owner's filters. The error is for a Verifier that cannot check
// at all (no AuthServID).
func (v *Verifier) Verify(ctx context.Context, ip net.IP, helo, mailFrom string, msg []byte) (Verdict, error) {
	if v.AuthServID == "" {
		return Verdict{}, errors.New("msgauth: Verifier.AuthServID is not set")
	}
	if startsWithContinuation(msg) {
		return Verdict{Disposition: RejectMalformed, Reason: capitalize(errContinuationFirst.Error())}, nil
	}
	fields, rest := splitHeader(msg)
	from, err := fromDomain(fields)
	if err != nil {
		return Verdict{Disposition: RejectUnevaluable, Reason: capitalize(err.Error())}, nil
	}
	ctx, cancel, res := v.lookups(ctx)
	defer cancel()

	// The SPF check and the DMARC record lookup are tried on the cache
	// alone first, here: a sender domain seen within its records' TTL
	// costs no wait, and no goroutine handoff either, which at one message
	// at a time was a tenth of the server's CPU. A check the cache cannot
	// complete runs on the network beside the DKIM check, so that a server
	// hanging on one lookup does not eat the others' time.
	sp, spfCached := fromCache(res, func(r resolver) spfOutcome { return checkSPF(ctx, r, ip, helo, mailFrom) })
	var spfDone <-chan spfOutcome
	if !spfCached {
		spfDone = beside(v.logger(), "spf check", func() spfOutcome { return checkSPF(ctx, res, ip, helo, mailFrom) },
			func(any) spfOutcome {
				return spfOutcome{value: spf.TempError, mailFrom: mailFrom, helo: helo, dnsTrouble: true}
			})
	}
	dr, dmarcCached := fromCache(res, func(r resolver) dmarcRecord { return lookupPolicy(ctx, r, from) })
	var recDone <-chan dmarcRecord
	if !dmarcCached {
		recDone = beside(v.logger(), "dmarc lookup", func() dmarcRecord { return lookupPolicy(ctx, res, from) },
			func(p any) dmarcRecord { return dmarcRecord{err: fmt.Errorf("dmarc lookup panicked: %v", p)} })
	}
	dk := checkDKIM(ctx, res, fields, rest, msg)
	if spfDone != nil {
		sp = <-spfDone
	}
	if recDone != nil {
		dr = <-recDone
	}
	dm := checkDMARC(from, dr, sp, dk)

	results := []authres.Result{sp.result()}
	dkimSummary := make([]string, 0, len(dk))
	if len(dk) == 0 {
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
		dkimSummary = append(dkimSummary, string(authres.ResultNone))
	}
	for _, o := range dk {
		results = append(results, o.result())
		dkimSummary = append(dkimSummary, string(o.value)+":"+o.domain)
	}
	results = append(results, dm.result(from))
	summary := fmt.Sprintf("spf=%s dkim=%s dmarc=%s policy=%s from_domain=%s",
		sp.value, strings.Join(dkimSummary, ","), dm.value, dm.policy, from)

	var authenticated []string
	if sp.value == spf.Pass {
		authenticated = append(authenticated, sp.domain)
	}
	for _, o := range dk {
		if o.value == authres.ResultPass && o.domain != "" && !slices.Contains(authenticated, o.domain) {
			authenticated = append(authenticated, o.domain)
		}
	}
	switch {
	case dm.value == authres.ResultFail && dm.policy == policyReject && v.RejectDMARC:
		return Verdict{Disposition: RejectPolicy, Reason: "Rejected by the DMARC policy of " + from, Summary: summary}, nil
	case dm.value == authres.ResultTempError && dm.mayReject && v.RejectDMARC:
		return Verdict{Disposition: Temporary, Reason: "DMARC check of " + from + " failed temporarily, try again later", Summary: summary}, nil
	}
	h := formatAuthResults(v.AuthServID, results, lineEnding(msg))
	return Verdict{Disposition: Deliver, Field: []byte(h), Message: stripAuthResults(msg, v.AuthServID), Summary: summary, Authenticated: authenticated}, nil
}

// beside runs check in a goroutine of its own and returns where its outcome
// will be. A panic there becomes onPanic's outcome: the SMTP session's
// recover cannot reach that goroutine, and the panic would kill the whole
// server.
func beside[T any](log *slog.Logger, what string, check func() T, onPanic func(any) T) <-chan T {
	done := make(chan T, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				log.Error(what+" panicked", "panic", p)
				done <- onPanic(p)
			}
		}()
		done <- check()
	}()
	return done
}

func (v *Verifier) logger() *slog.Logger {
	if v.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return v.Logger
}

// formatAuthResults writes the field with one result per line, so that it
// stays readable and far below the 998-octet line limit (RFC 5322 section
// 2.1.1) with several signatures.
func formatAuthResults(id string, results []authres.Result, eol string) string {
	var b strings.Builder
	b.WriteString("Authentication-Results: " + id)
	for _, r := range results {
		// Formatting each result alone keeps folding out of quoted reasons.
		s := strings.TrimPrefix(authres.Format("", []authres.Result{r}), "; ")
		b.WriteString(";" + eol + "\t" + strings.TrimSpace(s))
	}
	b.WriteString(eol)
	return b.String()
}

type spfOutcome struct {
	value      spf.Result
	mailFrom   string // "" for the null sender
	helo       string
	domain     string // the domain checked: MAIL FROM's, or HELO's for the null sender
	dnsTrouble bool
}

// CheckSPF returns the SPF result ("pass", "fail", "softfail", "neutral",
// "none", "temperror", "permerror") for a client at ip sending from
// mailFrom after HELO helo, as Verify computes it: the MX asks it at MAIL
// FROM about senders in the local domains, which only a client the
// domain's SPF record names may use.
func (v *Verifier) CheckSPF(ctx context.Context, ip net.IP, helo, mailFrom string) string {
	ctx, cancel, res := v.lookups(ctx)
	defer cancel()
	return string(checkSPF(ctx, res, ip, helo, mailFrom).value)
}

// lookups bounds the DNS work of one check by Timeout and gives the
// resolver it goes through.
func (v *Verifier) lookups(ctx context.Context) (context.Context, context.CancelFunc, resolver) {
	timeout := v.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	res := resolver{r: v.Resolver, cache: v.Cache}
	if res.r == nil {
		res.r = net.DefaultResolver
	}
	return ctx, cancel, res
}

// checkSPF checks the MAIL FROM identity, or the HELO identity for the null
// sender (RFC 7208 section 2.4: the sender is then postmaster@helo).
func checkSPF(ctx context.Context, res resolver, ip net.IP, helo, mailFrom string) spfOutcome {
	o := spfOutcome{mailFrom: mailFrom, helo: helo}
	sender := mailFrom
	if at := strings.LastIndexByte(mailFrom, '@'); at >= 0 && at < len(mailFrom)-1 {
		// mailFrom is an RFC 5321 path, whose local part may be quoted and
		// hold '@' ("x@evil.test>, <ceo"@paypal.test): the domain is after
		// the last '@'. The SPF library splits at the first, so it gets a
		// local part it cannot misread: RFC 7208 4.3's "postmaster".
		o.domain = mailFrom[at+1:]
		if strings.ContainsRune(mailFrom[:at], '@') || strings.HasPrefix(mailFrom, `"`) {
			sender = "postmaster@" + o.domain
		}
	} else {
		o.domain, sender, o.mailFrom = helo, "postmaster@"+helo, ""
	}
	o.domain = strings.ToLower(strings.TrimSuffix(o.domain, "."))
	if _, ok := dns.IsDomainName(o.domain); !ok || !strings.Contains(o.domain, ".") {
		// An address literal or a bare name: nothing to look up (RFC 7208
		// section 2.3 checks HELO only when it is a fully qualified domain).
		o.value = spf.None
		return o
	}
	o.value, _ = spf.CheckHostWithSender(ip, helo, sender, spf.WithResolver(res), spf.WithContext(ctx))
	return o
}

func (o spfOutcome) result() authres.Result {
	r := &authres.SPFResult{Value: authres.ResultValue(o.value)}
	if o.mailFrom != "" {
		r.From = o.mailFrom
	} else {
		r.Helo = o.helo
	}
	if o.value == spf.TempError {
		r.Reason = "DNS lookup failed"
	}
	return r
}

type dkimOutcome struct {
	value    authres.ResultValue
	domain   string // d=
	selector string // s=
	reason   string
}

// checkDKIM verifies the first maxSignatures signatures (RFC 6376 section
// 6.1). It returns no outcome for a message without signatures.
func checkDKIM(ctx context.Context, res resolver, fields []field, rest, msg []byte) []dkimOutcome {
	var sigs []field
	for _, f := range fields {
		if strings.EqualFold(f.dkimName(), "DKIM-Signature") {
			sigs = append(sigs, f)
		}
	}
	if len(sigs) == 0 {
		return nil
	}
	// Bound the library's work before it starts (see MaxHeaderBytes): the
	// colon after each signature's name stands for the last name in its h=.
	names := 0
	for _, sig := range sigs[:min(len(sigs), maxSignatures)] {
		names += bytes.Count(sig.raw, []byte(":"))
	}
	shape := MeasureHeader(msg)
	err := shape.check()
	if err == nil {
		err = checkFieldScans(shape.Fields, names)
	}
	if err != nil {
		return []dkimOutcome{{value: authres.ResultPermError, reason: err.Error()}}
	}
	m := toCRLF(msg)
	if len(rest) == 0 {
		// A message of header fields only: the verifier wants the empty line.
		if !bytes.HasSuffix(m, []byte("\r\n")) {
			m = append(m[:len(m):len(m)], "\r\n"...)
		}
		m = append(m[:len(m):len(m)], "\r\n"...)
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(m), &dkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return res.LookupTXT(ctx, name) },
		MaxVerifications: maxSignatures,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return []dkimOutcome{{value: authres.ResultPermError, reason: "unparsable message"}}
	}
	out := make([]dkimOutcome, 0, len(verifs))
	for i, vf := range verifs {
		o := dkimOutcome{domain: strings.ToLower(vf.Domain)}
		if i < len(sigs) {
			o.selector = tagValue(sigs[i].value(), "s")
		}
		switch {
		case vf.Err == nil:
			o.value = authres.ResultPass
		case dkim.IsTempFail(vf.Err):
			o.value, o.reason = authres.ResultTempError, "key unavailable"
		case dkim.IsPermFail(vf.Err):
			o.value, o.reason = authres.ResultPermError, strings.TrimPrefix(vf.Err.Error(), "dkim: ")
		default:
			o.value, o.reason = authres.ResultFail, strings.TrimPrefix(vf.Err.Error(), "dkim: ")
		}
		out = append(out, o)
	}
	return out
}

func (o dkimOutcome) result() authres.Result {
	return &authres.GenericResult{Method: "dkim", Value: o.value, Params: map[string]string{
		"reason": o.reason, "header.d": o.domain, "header.s": o.selector,
	}}
}

// resolver adapts *net.Resolver for the spf, dkim and dmarc packages. Names
// are made absolute, so that the search list of resolv.conf never turns a
// SERVFAIL into the NXDOMAIN of some suffixed name, and every DNS error
// other than "not found" is marked temporary, so that all three packages
// report DNS trouble as temperror rather than as a missing record.
type resolver struct {
	r     *net.Resolver
	cache TXTCache
	// offline, when set, makes every lookup the cache cannot answer fail
	// at once, and records that it did (fromCache).
	offline *bool
}

// fromCache runs check on what res's cache holds alone, and reports whether
// that was every answer check asked for: if not, its outcome is not to be
// used. Only TXT answers are taken from the cache (see TXTCache); a check
// that needs another kind misses.
func fromCache[T any](res resolver, check func(resolver) T) (out T, complete bool) {
	if res.cache == nil {
		return out, false
	}
	missed := false
	res.offline = &missed
	out = check(res)
	return out, !missed
}

// miss fails a lookup that needs the network while r is offline.
func (r resolver) miss(name string) error {
	*r.offline = true
	return &net.DNSError{Err: "not in the cache", Name: name, IsTemporary: true}
}

// TXTCache answers the TXT lookups whose answers it holds (resolve.Cache
// does): SPF, DKIM and DMARC each ask for TXT records, and a message from
// a known sender domain asks what was asked moments before. hit is false
// when it holds no answer; the lookup then goes to the resolver.
type TXTCache interface {
	LookupTXT(name string) (txts []string, hit bool, err error)
}

func (r resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if r.cache != nil {
		if txts, hit, err := r.cache.LookupTXT(absolute(name)); hit {
			return txts, dnsError(err)
		}
	}
	if r.offline != nil {
		return nil, r.miss(name)
	}
	txts, err := r.r.LookupTXT(ctx, absolute(name))
	return txts, dnsError(err)
}

func (r resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if r.offline != nil {
		return nil, r.miss(name)
	}
	mxs, err := r.r.LookupMX(ctx, absolute(name))
	return mxs, dnsError(err)
}

func (r resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if net.ParseIP(host) == nil {
		host = absolute(host)
	}
	if r.offline != nil {
		return nil, r.miss(host)
	}
	addrs, err := r.r.LookupIPAddr(ctx, host)
	return addrs, dnsError(err)
}

func (r resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	if r.offline != nil {
		return nil, r.miss(addr)
	}
	names, err := r.r.LookupAddr(ctx, addr)
	return names, dnsError(err)
}

func absolute(name string) string {
	if name == "" || strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

// dnsError returns err as a *net.DNSError (the libraries use type
// assertions, not errors.As), temporary unless it says "not found".
func dnsError(err error) error {
	if err == nil {
		return nil
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsNotFound || de.IsTemporary || de.IsTimeout {
			return de
		}
		return &net.DNSError{Err: de.Err, Name: de.Name, Server: de.Server, IsTemporary: true}
	}
	return &net.DNSError{Err: err.Error(), IsTemporary: true}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Ensure resolver satisfies what spf needs.
var _ spf.DNSResolver = resolver{}
