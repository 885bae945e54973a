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
//
// # Privileges of the managed Tor
//
// With Config.User (torgate defaults it to Debian's debian-tor when it
// runs as root) tor never runs as root: torctl starts it with that uid,
// its primary gid and no supplementary groups (exec.Cmd's
// SysProcAttr.Credential), rather than writing torrc "User" and letting a
// root tor drop privileges after opening its sockets. Measured with
// Debian's tor 0.4.9.11 on 2026-12-02, both work; Credential was chosen
// because:
//
//   - tor needs no root at all: its listeners are unix sockets and it
//     binds no port below 1024, so nothing is gained by starting it as
//     root, and with "User" tor parses the operator's torrc (%include)
//     and opens files as root first.
//   - A restart then needs CAP_SETUID and CAP_SETGID in torgate (and
//     CAP_KILL to stop a tor of another uid). With "User", a restarted
//     tor would run as root with whatever capabilities torgate's bounding
//     set still holds, and need CAP_CHOWN (tor chowns its sockets to
//     User) and CAP_DAC_OVERRIDE to enter its own 0700 DataDirectory as
//     root: more capabilities for torgate to keep, and a root tor.
//
// The files are laid out so that torgate, once it has dropped
// CAP_DAC_OVERRIDE, still reaches the sockets and the cookie through
// ordinary permissions (see prepareDirs): DataDir is tor's alone (0700,
// owned by User; one left owned by root by an earlier version is handed
// over with chown -R, keeping its guards); the sockets, the cookie and the
// generated torrc sit in DataDir+"-run", owned by User with torgate's
// group (root) and the setgid bit, so tor's GroupWritable sockets and
// CookieAuthFileGroupReadable cookie get group root and mode 0660/0640.
// tor accepts such a socket directory (group 0 or its own). Every
// directory above DataDir must be searchable by User: torctl adds o+x to
// the state directory it owns and names any other that blocks the way.
//   - Attach (Config.ControlAddr set): torctl connects to the control port
//     of a Tor that already runs (cookie, password or no authentication)
//     and reads its SocksPort from GETINFO net/listeners/socks unless
//     Config.SocksAddr names it. A lost connection is retried with backoff.
//     torctl does not inspect an attached Tor's process: ProcessState
//     does not know it, and Confirm alone decides its ends of stream.
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
// The control-port client, Conn (control.go), is torgate's only one: the
// private test network (internal/testnet) uses it too. Every call takes
// a context, and one goroutine per connection reads replies and events.
// github.com/cretz/bine is used only in this package: its process
// package starts tor (managed.go), and its control package authenticates
// and reads a reply (control.go, the only file that imports it).
package torctl
