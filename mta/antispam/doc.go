// Package antispam holds the MX's filters against junk mail, each a small
// type the mta package reaches through an interface of its own:
//
//   - DNSBL looks the connecting address up in DNS blocklists (RFC 5782).
//   - Rspamd asks an rspamd server about each message over its HTTP
//     protocol (POST /checkv2) and turns the answer into header edits.
//   - Greylist defers the first attempt of an unknown (client network,
//     sender, recipient) triplet, keeping what it learns in the store.
//
// Every filter fails open: a lookup, a scan or a store write that goes
// wrong lets the mail through (and is logged by the caller), because a
// wrongly refused message is lost to its sender while a junk message that
// slips through costs a click. Submission and authenticated sessions never
// reach this package.
package antispam
