// Package pop3 is minimail's POP3 server: RFC 1939 with CAPA and extended
// response codes (RFC 2449, RFC 3206), STLS (RFC 2595) and SASL PLAIN
// (RFC 5034, RFC 4616), over any Maildrop. The package speaks its own
// types (Maildrop, MessageInfo, ErrAuthFailed, ConnLimiter, Throttle) and
// imports nothing of minimail's: cmd/minimail adapts the store and the
// mta/guard limits to them.
//
// # Promise
//
// A message leaves the maildrop only when the client sends QUIT in the
// TRANSACTION state and the single Delete transaction commits. A dropped
// connection, an autologout, a Shutdown that cuts a session off or a failed
// Delete removes nothing. Message numbers are fixed for the session (mail
// that arrives meanwhile shows up in the next session), and a message's
// UIDL is the one the Maildrop gives it (MessageInfo.UIDL), which never
// changes and never repeats, also after a restored backup. RETR sends exactly the stored
// octets, dot-stuffed on the wire, and reports their count before stuffing.
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
// The maildrop lock (Options.Locks, a Locker) is taken at login and held
// until the session ends. The caller gives every Server over the same
// mailboxes one Locker, so a maildrop is opened once whichever listener the
// client comes in through; MaildropLocks keeps the locks in memory, so they
// vanish with the session or the process and can never go stale. A second
// login to a locked maildrop gets "-ERR [IN-USE]" and stays in
// AUTHORIZATION.
//
// # Security
//
// Credentials are accepted only over TLS (POP3S, or after STLS) unless
// Options.AllowInsecureAuth is set; before that USER and SASL are not
// advertised and USER, PASS and AUTH answer "-ERR [AUTH] ... use STLS".
// Input pipelined behind STLS is discarded. A wrong password is answered
// after Options.AuthFailDelay and counted in Options.AuthThrottle (in
// minimail a guard.AuthThrottle, per IP and subnet, shared with SMTP AUTH);
// a throttled address gets -ERR with the SYS/TEMP response code.
//
// APOP (RFC 1939 section 7) is not offered: it proves knowledge of the
// password with an MD5 digest of a server challenge and the plaintext
// password, so the server would have to store passwords in plaintext (or an
// equivalent), where minimail keeps only bcrypt hashes. MD5 challenge
// response also adds nothing once the session runs over TLS.
//
// # Time limits
//
// Every deadline is held, not renewed by each read, so a client that
// trickles bytes gains nothing:
//
//   - a command line must come in full within Options.IdleTimeout of the
//     previous reply (the autologout timer of RFC 1939 section 3: 10
//     minutes by default, the RFC minimum);
//   - from its first byte it must end within Options.CommandTimeout, and
//     a TLS handshake (POP3S, STLS) must finish within it too;
//   - a session that has not logged in is closed Options.LoginTimeout
//     after it connected, however busy it keeps the server.
//
// A timed-out session is closed without a reply (RFC 1939 section 3), and
// the partial line it was sending is never run. Command lines are bounded
// in length, and Options.Limiter caps concurrent connections.
//
// # Log
//
// Every login attempt logs one line, with proto "pop3", client (the IP
// address, the key every minimail log uses) and user (the login name tried,
// or the canonical address once the credentials are good):
// "authenticated", or "auth_failed" with a reason: wrong user or password,
// login name is not an address, login name has no domain (answered with a
// hint, not counted by the throttle), authorization identity differs, too many
// failed logins, maildrop in use, or (with err) credentials not checked or
// maildrop not opened. Passwords are never logged.
//
// Each session ends with one line, "pop3 session", giving client, tls,
// user (of the last login attempt), auth ("authenticated" or the last
// reason, "" if no login was tried), auth_failures, retrieved, deleted,
// duration and result: quit, dropped, timeout (the autologout or the
// command time limit), login timeout, shutdown, too many errors, line
// flood, tls failed or delete failed.
package pop3
