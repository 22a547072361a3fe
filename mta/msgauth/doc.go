// Package msgauth authenticates mail: it DKIM-signs what we send for our
// own domains (Signer), checks SPF, DKIM and DMARC on what we receive and
// records the outcome in one Authentication-Results field (Verifier), and
// says which DNS records a domain must publish for others to check us and
// whether they are published (Records, Check, GenerateKey, LoadKey).
//
// Every DNS lookup goes through the injected *net.Resolver, so tests and
// `[relay] dns` point all of them at one server. DNS trouble never becomes a
// pass: it is temperror in the results and, where it leaves a p=reject
// verdict open, a Temporary verdict so that the server defers the message.
//
// Verify answers with a Verdict (deliver, reject for a reason, or defer),
// not in SMTP terms: the SMTP server maps each Disposition to its reply.
//
// Sign and Verify keep the line endings of the message they are given: a
// CRLF-only message comes back CRLF-only.
//
// The organizational domain (RFC 7489 section 3.2) comes from the Public
// Suffix List in golang.org/x/net/publicsuffix; names under suffixes the list
// does not know fall back to their last two labels.
//
// go-msgauth's DKIM code does work quadratic in the size of some hostile
// headers (a field folded over many lines, h= naming a field per header
// field). Verify and Sign measure the header first (MeasureHeader) and keep
// anything beyond MaxHeaderBytes, MaxFieldLines or a bound on that scanning
// from the library: dkim=permerror when verifying, an error when signing.
//
// Messages are plain byte slices: they are bounded by max_message_bytes, and
// both signing and checking need the whole message anyway.
package msgauth
