// Package dns answers the workstations' DNS queries for torgate and keeps
// the map from virtual addresses back to hostnames.
//
// The netstack package intercepts every UDP and TCP packet to port 53,
// whatever its destination, and hands it to the Server: each UDP query to
// ServeDatagram, each TCP/53 connection attempt (a flow.Request) to
// ServeTCP. Those own the limits on serving DNS (per-workstation shares
// of Config.Workers and Config.TCPConns, QueryTimeout, RFC 7766's bounds
// on a connection) and pass every message to Server.Handle; the tunnel
// package asks Server.Lookup or Server.Acquire which hostname a
// connection to a virtual address is for, and opens a SOCKS connection to
// that hostname. This package opens no socket of its own: it answers
// over the connections and reply funcs netstack gives it (messages are
// parsed and built with golang.org/x/net/dns/dnsmessage), and keeps the
// map, optionally persisted to a file. Nothing here ever sends a query anywhere except through the
// Resolver the caller supplies, which goes through Tor.
//
// # Modes
//
// In ModeAutomap, the default, an A or AAAA query is answered at once with a
// virtual address from Config.Pool4 or Config.Pool6, the way Tor's
// AutomapHostsOnResolve does. When the workstation connects to that
// address, the tunnel asks Tor to connect to the hostname, and the exit
// relay resolves it. This is the default because:
//
//   - The exit resolves the name on the same circuit that carries the
//     connection, so the lookup and the TCP stream share one isolation
//     context. With separate lookups, a name could be resolved on one
//     circuit and connected to on another.
//   - .onion names work: they have no IP address to resolve to.
//   - There is no DNS round trip through Tor before each connection, which
//     would add a Tor round trip (hundreds of milliseconds, seconds while a
//     circuit is built) to every new name, and a failure mode of its own.
//   - The resolved IP address never comes back to the workstation, so
//     software there cannot leak it (in a header, a WebRTC candidate, a
//     log), and an exit's DNS answer cannot make an application believe a
//     name has an address of the exit's choosing (DNS rebinding onto
//     loopback or LAN addresses).
//
// The cost: applications see virtual addresses, and anything that needs
// the real address (rare) does not get it.
//
// In ModeResolve, A, AAAA and PTR queries go to Config.Resolver, which the
// tunnel implements with Tor's SOCKS RESOLVE and RESOLVE_PTR commands using
// the isolation credentials of the asking workstation. RESOLVE returns one
// address: it answers an A query if it is IPv4 and an AAAA query if it is
// IPv6, and otherwise the answer is an empty NOERROR. A resolver error
// whose chain has a NotFound() bool method returning true (NotFoundError;
// the tunnel uses it for SOCKS "host unreachable") gives NXDOMAIN, any
// other error SERVFAIL. An answer that is unspecified, loopback, multicast
// or inside our own pools gives SERVFAIL: an exit must not be able to steer
// a workstation onto another name's virtual address. At most
// Config.MaxResolves calls run at once, each bounded by
// Config.ResolveTimeout. .onion names are automapped in both modes and never
// reach the Resolver.
//
// # Virtual address pools
//
// Each automap entry owns one address of Pool4 (default 10.192.0.0/10, as
// Whonix-Gateway's VirtualAddrNetworkIPv4) and the address of Pool6
// (default fd9d:7a2b:5c1e::/64, a fixed unique-local prefix) that has the
// same IPv4 address in its low 32 bits: example.com might be 10.201.17.5
// and fd9d:7a2b:5c1e::ac9:1105. A and AAAA for one name therefore always
// agree. Addresses ending in .0 or .255 are never handed out. Names are
// matched without regard to ASCII case or a trailing dot; the question is
// echoed as asked.
//
// Workstations are strangers (issue 11). An entry belongs to the source
// address that looked the name up: only that source can turn the address
// back into the name (Lookup, Acquire, PTR); for any other source the
// address is exactly like one never handed out (the tunnel answers a RST,
// PTR NXDOMAIN). Two sources asking for one name get two entries and two
// addresses. Addresses are drawn in the order of a keyed pseudo-random
// permutation, so a workstation cannot predict or enumerate others'.
//
// The table holds at most Config.MaxEntries names (default 65536, about
// 11 MiB), and each source at most Config.MaxEntriesPerSource (default a
// quarter of it). A source at its share recycles its own least recently
// used entry; when the whole table is full, the source holding the most
// recyclable entries gives one up. One workstation's flood of names
// therefore only recycles its own entries. Entries pinned with Acquire,
// because a flow is using them, are never recycled; if a source's
// candidates are all pinned, its new names get SERVFAIL (Stats.Exhausted).
//
// One workstation can also ask from thousands of made-up source addresses
// (issue 19). With Config.Proven, which tells a source that has shown it
// receives our packets (LAN: bound by torgate's ARP/ND; TUN: a recent TCP
// handshake) from one that has not, unproven sources together hold at
// most Config.MaxUnprovenEntries (default an eighth of the table) and
// recycle only each other's entries; if they can recycle none (all
// pinned), their new names get SERVFAIL (Stats.UnprovenRefused). Proven
// sources keep the rest, and never take the unproven share's room or
// entries either: a workstation's first query comes before its proof, so
// a new one must always find room. A source becomes proven for good (while
// it has entries) once Proven says so. Sources restored from the state
// file count with the proven ones but give way to them first, until they
// prove themselves again.
//
// No reuse, within a run or across restarts: Pool4 is split into epochs
// (64 for the default pool); each run starts in the next epoch, persisted
// in Config.EpochFile before the first answer, and moves on (persisting
// again) when an epoch is used up. An address handed to one name goes to
// another only after a pass over the whole pool (about four million
// names) or 64 restarts, so a workstation's cached answer never reaches
// another name, even after a SIGKILL. The entries themselves survive a
// restart if Config.StateFile is set (see Save); the file lists every
// name mapped for a workstation proven at the time of the save, and who
// asked for it, and is checksummed: a damaged or truncated file is
// discarded whole. Neither file is read unless it is a regular file, and
// never without a time limit.
//
// # What each query gets
//
//   - Not parseable as far as the header, or with the QR bit set: no answer
//     (ErrDrop), counted. Answering a response would start a loop.
//   - Opcode other than QUERY: NOTIMP.
//   - Not exactly one question, or a malformed question, answer, authority
//     or additional section (bad names, compression loops, truncation):
//     FORMERR. Names longer than 255 bytes or labels longer than 63 cannot
//     be parsed, so they get FORMERR too.
//   - EDNS(0) (RFC 6891): the client's UDP payload size is honoured,
//     clamped to 512..1232; the response carries an OPT record when the
//     query did, advertising 1232 and echoing the DO bit; an EDNS version
//     other than 0 gets BADVERS; two OPT records, or one not owned by the
//     root, get FORMERR.
//   - Config.Ready reports false (the asking workstation's Tor not usable):
//     SERVFAIL for every query of that workstation that got this far,
//     automapped and local names included. Fail closed.
//   - Class other than IN: NOTIMP.
//   - A, AAAA: by the name policy below.
//   - PTR for a reverse name (in-addr.arpa, ip6.arpa) of a virtual address:
//     the mapped name if the asking source owns the entry, in both modes;
//     NXDOMAIN otherwise. 127.0.0.1 and
//     ::1: localhost. In ModeResolve, a global unicast non-private address
//     goes to Resolver.ResolvePTR. Everything else: NXDOMAIN.
//   - HTTPS (65), SVCB (64): an empty NOERROR (NXDOMAIN for blocked names),
//     so browsers fall back to A/AAAA immediately.
//   - Every other type (MX, TXT, NS, SOA, SRV, CNAME, ANY, ...): NOTIMP. A
//     workstation behind Tor can only make TCP connections to names.
//
// Every response copies the ID, opcode, RD and CD bits, sets RA, and echoes
// the question when the query has exactly one that parses. Answers are built without name compression, which would
// cost allocations; a UDP answer that does not fit is rebuilt compressed,
// and if it still does not fit it is sent with only the question and the
// TC bit, so the client retries over TCP. With the sizes involved (names of
// at most 255 bytes, one answer) only very long names over plain 512-byte
// UDP ever need either step.
//
// # Name policy
//
// For A and AAAA (and HTTPS/SVCB, which never get answers):
//
//   - A name that is an IP address literal, in any spelling a resolver
//     library or Tor might read as one ("127.0.0.1", "127.1", "0x7f.1",
//     "2130706433", "::ffff:10.0.0.1", "[::1]"; dest.ParseLiteral): the
//     literal itself if Config.Policy allows it (A for IPv4, AAAA for
//     IPv6, else NODATA), NXDOMAIN counted by reason (Stats.Forbidden) if
//     not. Never automapped or resolved: a virtual address for
//     "127.0.0.1" would later leave as CONNECT "127.0.0.1".
//   - localhost and *.localhost: 127.0.0.1 or ::1, answered here (RFC 6761
//     §6.3); this is what users and software expect, and it never leaves.
//   - *.onion: automapped, in both modes.
//   - NXDOMAIN, answered here and never sent to Tor: single-label names
//     (wpad, printer: search-list and LAN names no exit can resolve),
//     *.exit (Tor's exit-selection notation; Tor refuses it by default,
//     AllowDotExit 0, since a web page could use it to choose the exit),
//     *.local (mDNS), *.invalid, *.internal, *.home.arpa, and any other
//     name under .arpa; also names with characters other than letters,
//     digits, '-' and '_', and the root.
//   - Everything else: automapped (ModeAutomap) or resolved (ModeResolve).
//
// # Operation
//
// A Server is safe for concurrent use by any number of goroutines. The
// automap path takes one mutex for a map lookup and allocates nothing for a
// name already mapped. Names are destinations and are never logged unless
// Config.LogDestinations is set, and then only at Debug; nothing is logged
// per query above Debug. Stats returns counters by query kind and result,
// and Metrics exports them to Prometheus with bounded labels only.
//
// This is a component of torgate, not a public contract: its API changes
// with torgate's needs. Embedders use package github.com/torgate/torgate.
package dns
