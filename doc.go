// Package torgate is a userspace Tor router: a TUN device (or an Ethernet
// LAN) carries the workstations' IP packets, a gVisor network stack
// terminates every TCP flow, and each flow leaves through Tor's SOCKS port
// with credentials that isolate one workstation's circuits from another's.
// DNS is answered by torgate itself, through Tor; UDP and ICMP are
// dropped. Nothing leaves except through Tor.
//
// This package is the whole contract for an embedder: Config and Router.
// The components under it (netstack, tunnel, dns, socks, internal/...)
// are torgate's own and change freely; nothing here exposes them.
//
// # A gateway in a few lines
//
// A gateway with a Tor of its own (see Example_managedTor):
//
//	r, err := torgate.NewContext(ctx, torgate.Config{
//		TUNName:    "torgate0",
//		Addr4:      netip.MustParsePrefix("10.152.152.10/18"),
//		ManagedTor: &torgate.ManagedTor{DataDir: "/var/lib/torgate/tor"},
//	})
//	if err != nil { ... }
//	err = r.Run(ctx) // until ctx is done, or a part fails
//
// # Choices a Config makes
//
// Where packets come from: exactly one of Config.Device (any
// golang.zx2c4.com/wireguard/tun Device: an in-memory one for tests, a
// VM's tap), Config.TUNFD (a TUN a parent opened), Config.TUNName (created
// here, with Addr4/Addr6) or Config.LAN (Ethernet interfaces torgate takes
// from the kernel: the gateway's own ARP and neighbour discovery, a
// workstation is a machine, its MAC).
//
// Where flows go: exactly one of Config.ManagedTor (torgate runs and
// supervises tor), Config.AttachedTor (a running Tor's control port),
// Config.SocksAddr or Config.Upstream (any SOCKS5 server; readiness then
// rests on the server answering).
//
// How flows share circuits: Config.Isolation (IsolateSource by default).
// How names are answered: Config.DNSMode (DNSAutomap by default: virtual
// addresses from DefaultDNSPool4/DefaultDNSPool6 that stand for names, so
// that nothing is resolved before a connection and the exit resolves it).
// Every limit has a default sized for a gateway (docs/limits.md); zero
// takes it.
//
// # Life of a Router
//
// NewContext validates the Config, builds every part and starts (or
// attaches to) Tor; when it fails it undoes what it did. Start (or Run)
// forwards; Run returns when its context ends or a part fails (the TUN
// went away, Tor's supervisor stopped), and Close ends every flow with a
// RST, saves the DNS table and stops the managed Tor.
//
// # Fail closed
//
// One readiness gate decides: until the packet loop runs, every LAN link
// is up, Tor is bootstrapped with a live circuit and its SOCKS port
// answers (and Config.Ready, if set, agrees), a new flow gets a RST and a
// DNS query SERVFAIL. Ready says why not; WaitReady waits for it; the
// metric "ready" shows it. When Tor goes away, every open flow ends with a
// RST, so that no application mistakes a cut download for a complete one.
//
// # Operating it
//
// NewIdentity gives one workstation new circuits, NewIdentityAll every
// workstation (and sends Tor NEWNYM); Metrics returns the Prometheus
// collectors (Config.Registerer registers them), Stats the packet
// counters. Destinations are never logged unless Config.LogDestinations.
// cmd/torgate is a thin layer of flags, logging and signals over this
// package.
package torgate
