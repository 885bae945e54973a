// Package socks is a SOCKS5 client (RFC 1928, with RFC 1929 username/password
// authentication) that speaks Tor's extensions to its SocksPort.
//
// A [Dialer] opens one connection to the SOCKS server per request through its
// Dial function; the package has no global dialer and never opens any other
// connection. [Dialer.Connect] runs the CONNECT handshake and hands back the
// raw connection (a *net.TCPConn or *net.UnixConn, never a wrapper) so that
// its user can reach the socket itself: torgate's relay (package tunnel)
// drives the descriptor through its own epoll set and half-closes it.
// [Dialer.Resolve] and
// [Dialer.ResolvePTR] use Tor's RESOLVE (0xF0) and RESOLVE_PTR (0xF1) commands
// and close the connection after the reply.
//
// The package also owns the server's side of the wire format, for
// torgate's SOCKS ports (internal/socksport) and the servers that stand in
// for Tor in tests and benchmarks (socks/sockstest, bench/socksd): a
// [ServerReader] parses what a client sends, SOCKS5 or SOCKS4/4a, and
// [Methods.Select] chooses the authentication method as Tor does.
//
// # Tor specifics
//
//   - Stream isolation. Tor isolates streams by SOCKS username/password
//     (IsolateSOCKSAuth, on by default), so [Auth] is the isolation key, not a
//     secret. Proposal 351 reserves usernames starting with "<torS0X>" for
//     structured isolation formats; the package refuses them so that an
//     isolation key is never misread by Tor as one of those formats.
//   - Reply codes. Besides RFC 1928's codes 0x00-0x08, Tor reports onion
//     service failures with its ExtendedErrors codes 0xF0-0xF7. A non-zero
//     reply is returned as a [*ReplyError] carrying the [Reply], whose String
//     form is a stable label for metrics.
//
// # No pipelining
//
// The client sends each handshake message only after it has read the
// server's answer to the previous one: greeting, method reply, then the
// username/password, auth reply, then the request. Tor 0.4.9 mishandles a
// greeting and a username/password that arrive in the same read: it skips
// the method-selection reply and answers only the auth message, so a
// pipelining client waits forever for a reply or misparses the one it gets.
// The round trip costs microseconds on the loopback link to Tor.
//
// For the same reason the client never reads more than the exact length of a
// reply (no bufio on the connection): Tor may send the first bytes of the
// stream in the same segment as the CONNECT reply, and they belong to the
// caller.
//
// # Errors and privacy
//
// Every error is wrapped with a short context ("socks connect: read reply:
// ..."). A failure on the connection to the server stays an I/O error; a
// server that breaks the protocol yields a [*ProtocolError]; rejected
// authentication wraps [ErrAuthRejected] or [ErrNoAcceptableMethod]; bad
// arguments wrap [ErrInvalidRequest]; a context deadline or cancellation
// wraps ctx.Err(). On any failure the connection is closed. Error messages
// never contain the destination, the hostname or the credentials, so callers
// may log them without leaking where a workstation was going.
//
// This is a component of torgate, not a public contract: its API changes
// with torgate's needs. Embedders use package github.com/torgate/torgate.
package socks
