// Package pop3 is minimail's POP3 server: RFC 1939 with CAPA and extended
// response codes (RFC 2449, RFC 3206), STLS (RFC 2595) and SASL PLAIN
// (RFC 5034, RFC 4616), over any Maildrop (in production, *store.Store).
//
// # Promise
//
// A message leaves the maildrop only when the client sends QUIT in the
// TRANSACTION state and the single Delete transaction commits. A dropped
// connection, an autologout, a Shutdown that cuts a session off or a failed
// Delete removes nothing. Message numbers are fixed for the session (mail
// that arrives meanwhile shows up in the next session), and a message's
// UIDL is the one the store gives it (store.MessageInfo.UIDL), which never
// changes and never repeats, also after a restored backup. RETR sends
// exactly the stored octets, dot-stuffed on the wire, and reports their
// count before stuffing.
//
// # States
//
//	AUTHORIZATION  greeting; CAPA, STLS, USER/PASS, AUTH PLAIN, QUIT
//	TRANSACTION    after a login that also took the maildrop lock;
//	               STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, CAPA, QUIT
//	UPDATE         QUIT from TRANSACTION: commit the deletions, sign off
//
// Commands of the wrong state, unknown commands and bad arguments get -ERR
// and the session goes on; a session that has collected 20 -ERR replies is
// dropped.
//
// The maildrop lock is an in-memory set of addresses held by sessions, so it
// vanishes with the session or the process and can never go stale. A second
// login to a locked maildrop gets "-ERR [IN-USE]" and stays in
// AUTHORIZATION.
//
// # Security
//
// Credentials are accepted only over TLS (POP3S, or after STLS) unless
// Options.AllowInsecureAuth is set; before that USER and SASL are not
// advertised and USER, PASS and AUTH answer "-ERR [AUTH] ... use STLS".
// Input pipelined behind STLS is discarded. A wrong password is answered
// after Options.AuthFailDelay and counted in a guard.AuthThrottle (per IP and
// subnet, shared with SMTP AUTH); a throttled address gets -ERR with the
// SYS/TEMP response code.
// Idle sessions are logged out after Options.IdleTimeout (10 minutes by
// default, the RFC 1939 minimum), command lines are bounded, and
// guard.ConnLimiter caps concurrent connections.
//
// APOP (RFC 1939 section 7) is not offered: it proves knowledge of the
// password with an MD5 digest of a server challenge and the plaintext
// password, so the server would have to store passwords in plaintext (or an
// equivalent), where minimail keeps only bcrypt hashes. MD5 challenge
// response also adds nothing once the session runs over TLS.
//
// Each session ends with one log line, "pop3 session", giving remote_ip,
// tls, user, auth_failures, retrieved, deleted, duration and result.
package pop3
