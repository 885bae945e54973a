// Package torctl runs or attaches to the Tor that carries torgate's
// traffic, and tells the router when Tor can carry it.
//
// Two modes, chosen by Config:
//
//   - Managed (Config.ControlAddr empty): torctl starts the tor binary
//     (Debian's tor package) with its own DataDirectory, a SocksPort on a
//     unix socket that only torgate uses (IsolateSOCKSAuth,
//     KeepAliveIsolateSOCKSAuth, ExtendedErrors), and a control socket with
//     cookie authentication. Operators add lines (bridges, pluggable
//     transports) with Config.TorrcFile. If tor exits, torctl restarts it
//     with exponential backoff.
//   - Attach (Config.ControlAddr set): torctl connects to the control port
//     of a Tor that already runs (cookie, password or no authentication)
//     and reads its SocksPort from GETINFO net/listeners/socks unless
//     Config.SocksAddr names it. A lost connection is retried with backoff.
//
// In both modes Ready reports, with one atomic load, whether Tor is
// bootstrapped to 100 %, has a working circuit and sees the network up
// (GETINFO status/bootstrap-phase, status/circuit-established,
// network-liveness, kept current by STATUS_CLIENT and NETWORK_LIVENESS
// events and a periodic poll). Without a control connection Tor is never
// ready: the router then answers every new flow with a RST and every DNS
// query with SERVFAIL. When Tor goes away (its process exits or the control
// connection drops) Config.OnDown runs, so the router can end the flows
// that went through it.
//
// NewNym sends SIGNAL NEWNYM, keeping Tor's rate limit of one per
// NewNymInterval. Per-source new identity is the router's business
// (tunnel.Isolator.NewIdentity): it changes SOCKS credentials, which Tor
// isolates on, and needs no control port.
//
// Usage:
//
//	t, err := torctl.New(torctl.Config{DataDir: "/var/lib/torgate/tor", OnDown: endFlows})
//	if err != nil { ... }
//	if err := t.Start(ctx); err != nil { ... }
//	defer t.Close()
//	dialer := &socks.Dialer{Dial: t.DialSocks} // ready: t.Ready
//
// github.com/cretz/bine is used for the process and the control protocol,
// and only in this package; control.go wraps its blocking calls with
// contexts.
package torctl
