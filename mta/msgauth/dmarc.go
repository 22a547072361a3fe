package msgauth

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

const (
	policyNone       = dmarc.PolicyNone
	policyQuarantine = dmarc.Policy(dmarc.PolicyQuarantine)
	policyReject     = dmarc.Policy(dmarc.PolicyReject)
)

type dmarcOutcome struct {
	value  authres.ResultValue
	policy dmarc.Policy // the policy to apply on fail, after sp= and pct=; "" when unknown
	// mayReject is set on temperror when the verdict, once DNS answers,
	// could be a failure under p=reject.
	mayReject bool
	reason    string
}

func (o dmarcOutcome) result(from string) authres.Result {
	return &authres.DMARCResult{Value: o.value, Reason: o.reason, From: from}
}

// dmarcRecord is the outcome of the policy lookup, done beside the SPF and
// DKIM checks so that a hanging server for one cannot spend the others' time.
type dmarcRecord struct {
	rec *dmarc.Record
	sub bool // found at the organizational domain, not at the From domain
	err error
}

// lookupPolicy finds the record that applies to the From domain (RFC 7489
// section 6.6.3): the From domain's own, else its organizational domain's,
// whose sp= then applies.
func lookupPolicy(ctx context.Context, res resolver, from string) dmarcRecord {
	rec, err := lookupDMARC(ctx, res, from)
	if org := orgDomain(from); errors.Is(err, dmarc.ErrNoPolicy) && org != from {
		rec, err = lookupDMARC(ctx, res, org)
		return dmarcRecord{rec: rec, sub: true, err: err}
	}
	return dmarcRecord{rec: rec, err: err}
}

// checkDMARC evaluates the DMARC policy of the From domain against the SPF
// and DKIM results (RFC 7489 section 6.6).
func checkDMARC(from string, dr dmarcRecord, sp spfOutcome, dk []dkimOutcome) dmarcOutcome {
	// An identifier equal to the From domain is aligned in every mode, so a
	// pass of one settles the verdict even when the record is unknown.
	exactPass := sp.value == spf.Pass && sp.domain == from
	for _, o := range dk {
		exactPass = exactPass || o.value == authres.ResultPass && o.domain == from
	}
	rec, err := dr.rec, dr.err
	switch {
	case dmarc.IsTempFail(err):
		return dmarcOutcome{value: authres.ResultTempError, mayReject: !exactPass, reason: "DMARC record unavailable"}
	case errors.Is(err, dmarc.ErrNoPolicy):
		return dmarcOutcome{value: authres.ResultNone}
	case err != nil:
		// Section 6.6.3: an unparsable record is no record; we say so.
		return dmarcOutcome{value: authres.ResultPermError, reason: "invalid DMARC record"}
	}

	policy := rec.Policy
	if dr.sub && rec.SubdomainPolicy != "" {
		policy = rec.SubdomainPolicy
	}
	// Section 6.6.4: pct= applies the policy to that share of failing
	// messages; the rest get the next weaker policy.
	if rec.Percent != nil && *rec.Percent < 100 && rand.IntN(100) >= *rec.Percent {
		switch policy {
		case policyReject:
			policy = policyQuarantine
		case policyQuarantine:
			policy = policyNone
		}
	}

	// Section 3.1: an identifier is aligned when it equals the From domain
	// (strict) or shares its organizational domain (relaxed).
	spfAligned := aligned(sp.domain, from, rec.SPFAlignment)
	pass := sp.value == spf.Pass && spfAligned
	temp := sp.value == spf.TempError && spfAligned
	for _, o := range dk {
		if aligned(o.domain, from, rec.DKIMAlignment) {
			pass = pass || o.value == authres.ResultPass
			temp = temp || o.value == authres.ResultTempError
		}
	}
	switch {
	case pass:
		return dmarcOutcome{value: authres.ResultPass, policy: policy}
	case temp:
		// An aligned identifier could not be checked: it might still pass.
		return dmarcOutcome{value: authres.ResultTempError, policy: policy, mayReject: policy == policyReject,
			reason: "aligned identifier unverifiable"}
	}
	return dmarcOutcome{value: authres.ResultFail, policy: policy, reason: "policy " + string(policy)}
}

func lookupDMARC(ctx context.Context, res resolver, domain string) (*dmarc.Record, error) {
	return dmarc.LookupWithOptions(domain, &dmarc.LookupOptions{
		LookupTXT: func(name string) ([]string, error) { return res.LookupTXT(ctx, name) },
	})
}

func aligned(id, from string, mode dmarc.AlignmentMode) bool {
	id = strings.ToLower(strings.TrimSuffix(id, "."))
	if id == "" {
		return false
	}
	if id == from {
		return true
	}
	return mode != dmarc.AlignmentStrict && orgDomain(id) == orgDomain(from)
}

// orgDomain returns the organizational domain (RFC 7489 section 3.2): the
// public suffix plus one label, by the Public Suffix List compiled into
// golang.org/x/net/publicsuffix. Names under a suffix it does not know (such
// as .test) fall to its default rule, the last two labels.
func orgDomain(domain string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain // the domain is itself a public suffix
	}
	return org
}
