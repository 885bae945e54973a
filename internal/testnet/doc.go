// Package testnet builds a complete private Tor network on loopback from
// the system's tor (Debian 0.4.9) for torgate's integration tests and
// benchmarks: three directory authorities, middle relays, exits, a client
// tor, optionally an onion-service host, plus a DNS server for the exits
// and an HTTP test server. Start returns once the client is bootstrapped
// (about 10-12 s after the first tor starts, plus key generation, which is
// cached across runs); Close stops everything.
//
//	n, err := testnet.Start(ctx, testnet.Config{Dir: t.TempDir(), Onion: true})
//	if err != nil { t.Fatal(err) }
//	t.Cleanup(func() { n.Close() })
//	// SOCKS5 to n.SocksAddr: n.WebName, n.WebAddr, n.OnionAddr;
//	// or run your own tor with n.ClientTorrc().
//
// # Layout
//
// Every node has its own address in one 127.A.B.0/24 block (random unless
// Config.Block is set, so two test binaries can run networks side by side),
// and every listener binds that address only; ports are fixed per role:
//
//	.11-.13  auth0-2    ORPort 18001, DirPort 18002, ControlPort 18003
//	.20-.39  mid0..     ORPort 18001, ControlPort 18003
//	.60-.79  exit0..    ORPort 18001, ControlPort 18003
//	.100     client0    SocksPort 18004 (ExtendedErrors), ControlPort 18003
//	.101     hs0        onion-service host (Config.Onion)
//	.102     -          OutboundBindAddress of clients using ClientTorrc
//	.53      DNS        18053 UDP+TCP: WebName (and Config.Hosts), else NXDOMAIN
//	.80      web        18080 HTTP: "/", "/bytes?n=", "/whoami", "POST /sink"
//
// Torrcs, data directories and notice logs live in Config.Dir/nodes/NAME.
//
// # Bootstrap sequence
//
//  1. Keys: tor --list-fingerprint for every relay and tor-gencert for the
//     authorities, in parallel, or copied from the key cache.
//  2. Authorities start with their first vote held back almost a full
//     30 s interval (TestingV3AuthVotingStartOffset); relays start as soon
//     as the authorities' DirPorts accept connections.
//  3. Once every authority serves every relay's descriptor, SETCONF moves
//     the offset so that the authorities vote within about a second. While
//     descriptors are missing (tor's start-up crypto takes 10 s or more on
//     a loaded box), the hold is renewed every 15 s so that no vote is
//     wasted on an incomplete set of relays.
//  4. When every authority serves a consensus listing every relay with the
//     right flags, the client (and onion host) start; Start waits for
//     PROGRESS=100 and, with Onion, for HS_DESC UPLOADED from every HSDir.
//
// # Non-obvious settings
//
// All tors:
//   - own 127.A.B.x per node: ports can be fixed, and two networks differ
//     by block, not port.
//   - OutboundBindAddress = own address: tor binds only for non-loopback
//     destinations, and Linux refuses to connect a 127.x-bound socket to
//     anything else, so no node can leave loopback.
//   - GeoIPFile/GeoIPv6File = an empty regular file: parsing the real ones
//     costs 3-7 s and ~90 MB per tor (and tor rejects /dev/null).
//   - AssumeReachable 1: relays publish at once and authorities list them
//     as Running without reachability tests.
//   - PathsNeededToBuildCircuits 0.67: a tiny network bootstraps with fewer
//     descriptors.
//   - __OwningControllerProcess = test binary's PID (plus Pdeathsig on
//     Linux): a killed test leaves no tor behind.
//   - --defaults-torrc = the empty file: no system torrc-defaults leaks in.
//
// Relays:
//   - SocksPort 0: otherwise every relay fights over 127.0.0.1:9050.
//   - ServerDNSResolvConfFile naming only the harness DNS server (as
//     "nameserver IP:PORT", which libevent accepts, so no root): every relay
//     starts a resolver, and the host's resolv.conf names a real server.
//   - DirCache 0 on middles and exits: clients fetch everything from the
//     authorities, which always have it, instead of a cache that may not yet.
//
// Authorities:
//   - TestingDirAuthVoteGuard/HSDir = the authorities, strict: they are the
//     only directory caches, so the only possible HSDirs; as the only
//     Guards, and with V3BandwidthsFile giving every relay equal measured
//     bandwidth (authorities' own measurements are ignored), the rendezvous
//     point is never the client's guard, which would stall onion
//     connections.
//   - TestingDirAuthVoteExit = the exits, strict; TestingMinExitFlagThreshold 0.
//   - V3AuthVotingInterval 30, delays 2: fast enough, and idle CPU stays
//     at 1-2 % of a core (interval 10 costs ~7 % and memory keeps growing).
//
// Exits:
//   - ExitPolicy accept *:*: clients only see the policy summary, which
//     cannot express "loopback only"; OutboundBindAddress makes it safe.
//   - ExitPolicyRejectPrivate 0: the web server is on loopback.
//   - RefuseUnknownExits 0: an exit without a consensus yet would refuse
//     streams from relays it does not know (END MISC).
//   - ServerDNSAllowNonRFC953Hostnames 1, ServerDNSDetectHijacking 0 (no
//     probes for www.google.com etc.), ServerDNSSearchDomains 0.
//
// Client:
//   - ConfluxEnabled 0: with conflux, the same SOCKS credentials may land
//     on different circuits, which breaks isolation assertions.
//   - The block avoids 127.192.0.0/10, tor's VirtualAddrNetworkIPv4: a
//     client refuses CONNECTs to IP literals in it.
//
// The DNS server matches names case-insensitively and echoes the question
// unchanged, because the exits' resolver randomises the case of queries.
//
// # Control connections
//
// The harness speaks to its tors with torctl's control client, the one
// torgate itself uses (torctl.Conn: any command line under a context,
// GETINFO, SETCONF, SETEVENTS, events in order). control.go only adds
// what tests want on top: the cookie login by address (DialControl) and
// a channel that holds a connection's events for a test to read.
// streams.go parses stream-status, circuit-status and STREAM events:
// Tor's view, which tests assert on.
package testnet
