// Command minimail is a small mail server for a self-hosted domain: SMTP for
// other servers (MX) and for mail clients (submission), an outbound queue,
// local delivery into a bbolt store, and POP3. See README.md.
//
// How a message flows through minimail. Each step names the package that
// owns it; only this package (serve.go) knows more than one of them.
//
// Inbound, from another server to a local mailbox:
//
//	mta/guard    accept: connection limits per server and per address
//	mta          MX session (go-smtp under mta's shims): EHLO, STARTTLS,
//	             MAIL (sender parsed once), RCPT (local recipients only,
//	             through mda's Resolve), DATA (time and size limits, CRLF
//	             only, header limits)
//	mta/msgauth  SPF, DKIM, DMARC: Authentication-Results, or a refusal
//	             (lookups through mta/resolve, cached)
//	mta/antispam early talkers and DNSBL (at connect, refused at RCPT),
//	             local-domain senders without SPF (MAIL, From:),
//	             greylisting (store) and rspamd after DATA
//	mda          Return-Path and Delivered-To per recipient, every copy in
//	             one commit; an alias's remote targets get one queue entry
//	             in that same commit, its sender rewritten with SRS
//	             (mta/srs) unless local; an SRS address is reversed to
//	             its original sender or refused
//	store        one bbolt transaction, fsync'd: then, and only then, 250
//	pop3         the owner logs in, lists, retrieves and deletes (store)
//
// Outbound, from a local user to anyone:
//
//	mta          submission session (587 STARTTLS, 465 TLS): AUTH (store),
//	             MAIL must be the user's address or an alias that
//	             delivers to it (mda.MaySendAs), From: checked, Bcc
//	             removed, Date and Message-ID added
//	mta/msgauth  DKIM signature for the sender's domain
//	mda          local recipients, as above
//	mta/queue    the remote recipients (and local ones asking for a DSN
//	             on success), stored (store) before the 250, with their
//	             RFC 3461 parameters
//	mta/remote   queue runner: route, smarthost or MX (mta/resolve), never
//	             an internal address, STARTTLS, per-recipient results,
//	             DSN parameters passed on to a next hop that offers DSN
//	mta/queue    retries with backoff, delay notices, success notices, and
//	             in the end a bounce (RFC 3464), each as NOTIFY asks,
//	             queued in the commit that marks it sent and delivered
//	             through mda to a local sender or sent on to a remote one;
//	             never a notice for a notice
package main
