// Package torgate is a userspace Tor router: a TUN device carries the
// workstations' IP packets, a gVisor network stack terminates every TCP
// flow, and each flow leaves through Tor's SOCKS port with credentials
// that isolate one workstation's circuits from another's. DNS is answered
// by torgate itself, through Tor; UDP and ICMP are dropped. Nothing leaves
// except through Tor.
//
// Embedding: a gateway with a Tor of its own (see Example_managedTor):
//
//	r, err := torgate.NewContext(ctx, torgate.Config{
//		TUNName:    "torgate0",
//		Addr4:      netip.MustParsePrefix("10.152.152.10/18"),
//		ManagedTor: &torgate.ManagedTor{DataDir: "/var/lib/torgate/tor"},
//	})
//	if err != nil { ... }
//	err = r.Run(ctx) // until ctx is done, or a part fails
//
// The Router owns the whole fail-closed policy: it starts (or attaches
// to) Tor, refuses flows and DNS until Tor is bootstrapped, ends every
// flow when Tor goes away, and offers readiness (Ready, WaitReady), new
// identities (NewIdentity, NewIdentityAll) and metrics. cmd/torgate is a
// thin layer of flags, logging and signals over this package.
package torgate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate/dns"
	"github.com/torgate/torgate/internal/endpoint"
	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/internal/lan"
	"github.com/torgate/torgate/internal/ownaddr"
	"github.com/torgate/torgate/internal/torctl"
	"github.com/torgate/torgate/netstack"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/tunnel"
)

// Config configures a Router. Field comments are the reference; cmd/torgate
// maps its flags onto these fields one to one.
type Config struct {
	// The TUN device: exactly one of Device (any wireguard tun.Device, for
	// embedding and tests), TUNFD (an open /dev/net/tun file descriptor
	// handed over by a parent) or TUNName (created and configured here).
	Device  tun.Device
	TUNFD   int
	TUNName string
	// LAN makes torgate the gateway of these Ethernet interfaces
	// (package lan: a passthru macvtap each, guard rules, ARP/NDP in
	// userspace) instead of using a TUN. Mutually exclusive with Device,
	// TUNFD and TUNName; MTU and Addr4/Addr6 come from the interfaces.
	LAN []string
	// MTU of the TUN. Default 1500.
	MTU int
	// Addr4 and Addr6 are the gateway-side addresses assigned to a TUN
	// created by name (optional; not used with Device or TUNFD).
	Addr4, Addr6 netip.Prefix

	// The upstream: exactly one of ManagedTor (torgate starts and
	// supervises its own tor), AttachedTor (a running Tor's control port),
	// SocksAddr or Upstream (plain SOCKS5: no control port, so readiness
	// rests on the SOCKS port answering).
	ManagedTor  *ManagedTor
	AttachedTor *AttachedTor
	// SocksAddr is a plain SOCKS5 upstream: "IP:port", "/path" or
	// "unix:/path".
	SocksAddr string
	// Upstream is a plain SOCKS5 upstream as a ready dialer.
	Upstream *socks.Dialer
	// OnTorProgress is called when a managed or attached Tor's bootstrap
	// phase changes, in order, one call at a time (for a progress view).
	// It must not block or call Close. Optional.
	OnTorProgress func(torctl.Bootstrap)

	// Isolation decides which flows share circuits. Default per source.
	Isolation tunnel.IsolationMode
	// IsolationSecret keys the credential derivation; nil draws a random one
	// per run.
	IsolationSecret []byte

	// DNSMode is automap (default) or resolve.
	DNSMode dns.Mode
	// DNSPool4, DNSPool6 are the virtual address pools for automap.
	// Defaults: dns.DefaultPool4, dns.DefaultPool6.
	DNSPool4, DNSPool6 netip.Prefix
	// StateDir keeps state across restarts (the automap table and its
	// address epoch). Optional; New fails if it is not writable.
	StateDir string
	// DNSEpochFile keeps the automap address epoch across restarts (see
	// dns.Config.EpochFile) when there is no StateDir: a runtime file such
	// as /run/torgate/dns-epoch. Ignored with a StateDir (the epoch lives
	// there). Unset without a StateDir, each run starts at a random epoch.
	DNSEpochFile string

	// Ready, if set, is one more readiness condition (for an embedder
	// that watches Tor itself); while false new flows get a RST and DNS
	// SERVFAIL. With ManagedTor or AttachedTor the router follows Tor's
	// bootstrap and liveness itself. With plain SOCKS and no Ready,
	// readiness comes from the router's own evidence: a periodic connect
	// and SOCKS greeting to the upstream and the outcome of real dials
	// (upstream_watch.go). In every mode a SOCKS port that stops
	// answering greetings makes the router not ready.
	Ready func() bool

	// Flow limits; zero takes tunnel's defaults.
	MaxFlows, MaxFlowsPerSource, MaxDialsPerSource int
	// Packet-path limits and their per-source shares; zero takes
	// netstack's defaults (MaxInFlight) and dns's (dns.Config.Workers,
	// TCPConns and their shares) (README, limits table).
	MaxInFlight, MaxInFlightPerSource int
	DNSWorkers, DNSWorkersPerSource   int
	DNSTCPConns, DNSTCPConnsPerSource int
	// KeepMemory turns off returning memory to the system
	// (debug.FreeOSMemory) after open flows fall by half from a peak.
	KeepMemory bool
	// DialTimeout, IdleTimeout, HalfCloseTimeout; zero takes tunnel's
	// defaults (sized for Tor).
	DialTimeout, IdleTimeout, HalfCloseTimeout time.Duration

	// ICMPUnreachable answers dropped UDP with ICMP port unreachable.
	ICMPUnreachable bool
	// LogDestinations lets debug logs name destinations (tunnel's and
	// dns's). Off by default.
	LogDestinations bool
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the router's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Router is a running torgate instance.
type Router struct {
	cfg    Config
	log    *slog.Logger
	stack  *netstack.Stack
	tunnel *tunnel.Tunnel
	dns    *dns.Server
	dialer *socks.Dialer
	watch  *upstreamWatch
	stop   context.CancelFunc // ends the watch loop; set by Start
	bg     sync.WaitGroup
	lan    *lan.Device // nil unless Config.LAN
	tor    *torSide

	closeOnce sync.Once
	closeErr  error
	started   atomic.Bool
	closed    atomic.Bool

	saverMu sync.Mutex
	saver   *time.Timer // guarded by saverMu; nil once closed
}

// saveState writes the automap table and re-arms itself.
func (r *Router) saveState() {
	if err := r.dns.Save(); err != nil {
		r.log.Warn("save dns state failed", "err", err)
	}
	r.saverMu.Lock()
	defer r.saverMu.Unlock()
	if r.saver != nil {
		r.saver.Reset(stateSaveInterval)
	}
}

// socksDialer turns SocksAddr ("IP:port", "/path" or "unix:/path") into
// a dialer.
func socksDialer(s string) (*socks.Dialer, error) {
	ep, err := endpoint.Parse(s)
	if err != nil {
		return nil, err
	}
	return socks.NewDialer(ep.Network, ep.Address)
}

func (c *Config) validate() error {
	n := 0
	if c.Device != nil {
		n++
	}
	if c.TUNFD > 0 {
		n++
	}
	if c.TUNName != "" {
		n++
	}
	if len(c.LAN) > 0 {
		n++
	}
	if n != 1 {
		return errors.New("config: exactly one of Device, TUNFD, TUNName and LAN must be set")
	}
	if c.TUNFD < 0 {
		return errors.New("config: TUNFD negative")
	}
	if c.MTU == 0 {
		c.MTU = 1500
	}
	if c.MTU < 1280 || c.MTU > 65535 {
		return fmt.Errorf("config: MTU %d out of range 1280-65535", c.MTU)
	}
	if c.Addr4.IsValid() && !c.Addr4.Addr().Is4() {
		return fmt.Errorf("config: Addr4 %s is not IPv4", c.Addr4)
	}
	if c.Addr6.IsValid() && !c.Addr6.Addr().Is6() {
		return fmt.Errorf("config: Addr6 %s is not IPv6", c.Addr6)
	}
	n = 0
	for _, set := range []bool{c.ManagedTor != nil, c.AttachedTor != nil, c.SocksAddr != "", c.Upstream != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("config: exactly one of ManagedTor, AttachedTor, SocksAddr and Upstream must be set")
	}
	if c.SocksAddr != "" {
		d, err := socksDialer(c.SocksAddr)
		if err != nil {
			return fmt.Errorf("config: SocksAddr: %w", err)
		}
		c.Upstream = d
	}
	if !c.DNSPool4.IsValid() {
		c.DNSPool4 = dns.DefaultPool4
	}
	if !c.DNSPool6.IsValid() {
		c.DNSPool6 = dns.DefaultPool6
	}
	for _, p := range []netip.Prefix{c.Addr4, c.Addr6} {
		if p.IsValid() && (c.DNSPool4.Overlaps(p) || c.DNSPool6.Overlaps(p)) {
			return fmt.Errorf("config: gateway address %s overlaps a DNS virtual pool", p)
		}
	}
	return nil
}

// eofGrace is how long an end of stream from an attached Tor (or an
// upstream whose readiness the caller reports) is held before it becomes a
// FIN, so that a dying Tor's closed sockets become RSTs: torctl notices a
// death within milliseconds (the control connection reads EOF; measured
// 2026-12-02 on the private Tor network). It delays the FIN of every
// stream such an upstream ends.
const eofGrace = 250 * time.Millisecond

// New is NewContext with a context that is never done.
func New(cfg Config) (*Router, error) {
	return NewContext(context.Background(), cfg)
}

// NewContext validates cfg and builds the router: it opens the TUN and
// starts the managed Tor (checking its torrc) or makes the first
// connection to the attached one; ctx bounds only that, not the Router's
// life. Call Run to forward, and Close (or cancel Run's context) to stop;
// Close also stops the managed Tor. The Router refuses flows and DNS
// until Tor is bootstrapped (see Ready, WaitReady).
func NewContext(ctx context.Context, cfg Config) (*Router, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger
	r := &Router{log: log}
	ts, err := newTorSide(&cfg, cfg.OnTorProgress, r.endFlowsTorDown)
	if err != nil {
		return nil, err
	}
	r.tor = ts
	r.cfg = cfg
	// Every dial goes through the liveness watch; readiness needs both
	// the caller's (Tor's) and the watch's.
	r.watch = newUpstreamWatch(cfg.Upstream.Dial, cfg.Ready == nil && ts.tor == nil, log.With("component", "upstream"))
	r.dialer = &socks.Dialer{Dial: r.watch.Dial}
	ready := r.watch.ok
	switch t := ts.tor; {
	case t != nil && cfg.Ready != nil:
		ready = func() bool { return t.Ready() && cfg.Ready() && r.watch.ok() }
	case t != nil:
		ready = func() bool { return t.Ready() && r.watch.ok() }
	case cfg.Ready != nil:
		ready = func() bool { return cfg.Ready() && r.watch.ok() }
	}

	iso, err := tunnel.NewIsolator(cfg.Isolation, cfg.IsolationSecret)
	if err != nil {
		return nil, err
	}
	tcfg := tunnel.Config{
		Upstream:          r.dialer,
		Isolator:          iso,
		Ready:             ready,
		DialTimeout:       cfg.DialTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		HalfCloseTimeout:  cfg.HalfCloseTimeout,
		MaxFlows:          cfg.MaxFlows,
		MaxFlowsPerSource: cfg.MaxFlowsPerSource,
		MaxDialsPerSource: cfg.MaxDialsPerSource,
		LogDestinations:   cfg.LogDestinations,
		Logger:            log.With("component", "tunnel"),
		// Never a destination: the virtual pools (a flow to one is its
		// name or a RST) and the gateway's own networks.
		ForbiddenDestinations: forbiddenPrefixes(cfg.DNSPool4, cfg.DNSPool6, cfg.Addr4, cfg.Addr6),
		// And the gateway's own addresses on every interface (its
		// uplink's too), as they are at the moment of each flow.
		OwnAddress: ownaddr.New().Contains,
	}
	// An end of stream from Tor: a managed Tor's process says at once
	// whether Tor is dying (checked per end of stream, ~8 µs, no
	// allocation); an attached Tor's control connection, or the caller's
	// Ready, needs a moment to report a death, so those ends of stream
	// wait for it, and so do a managed Tor's when /proc hides its process
	// (hidepid). A plain SOCKS upstream offers no evidence a wait could
	// collect in time (its probe runs every 5 s): its ends pass at once.
	if ts.mode == ModeManaged {
		tcfg.UpstreamState = ts.tor.ProcessState
	}
	if ts.mode != ModeSocks || cfg.Ready != nil {
		tcfg.EOFGrace = eofGrace
	}
	// The DNS server needs the tunnel's resolver and the tunnel needs the
	// DNS server's names: build the tunnel with a late-bound Names.
	if !cfg.KeepMemory {
		tcfg.FreeMemory = debug.FreeOSMemory
	}
	names := &lateNames{}
	tcfg.Names = names
	tn, err := tunnel.New(tcfg)
	if err != nil {
		return nil, err
	}
	r.tunnel = tn

	stateFile, epochFile := "", cfg.DNSEpochFile
	if cfg.StateDir != "" {
		stateFile = filepath.Join(cfg.StateDir, "automap.state")
		epochFile = filepath.Join(cfg.StateDir, "automap.epoch")
	}
	// Which workstations are proven: in a TUN, those that completed a
	// TCP handshake recently (the DNS table keeps its room for them); on
	// a LAN every source that reaches the stack was proven by torgate's
	// own ARP/ND and is a machine identity.
	proof := netstack.NewProof()
	proven := proof.Has
	if len(cfg.LAN) > 0 {
		proven = lan.IsMachineID
	}
	ds, err := dns.New(dns.Config{
		Mode:            cfg.DNSMode,
		Proven:          proven,
		Pool4:           cfg.DNSPool4,
		Pool6:           cfg.DNSPool6,
		StateFile:       stateFile,
		EpochFile:       epochFile,
		Resolver:        tn.Resolver(),
		Forbidden:       tn.Forbidden,
		Ready:           ready,
		LogDestinations: cfg.LogDestinations,
		Logger:          log.With("component", "dns"),
		// Port 53's limits: the dns.Server serves it (netstack's hook).
		Workers:           cfg.DNSWorkers,
		WorkersPerSource:  cfg.DNSWorkersPerSource,
		TCPConns:          cfg.DNSTCPConns,
		TCPConnsPerSource: cfg.DNSTCPConnsPerSource,
	})
	if err != nil {
		return nil, err
	}
	r.dns = ds
	names.s = ds

	dev, err := openTUN(&r.cfg)
	if err != nil {
		ds.Close()
		return nil, err
	}
	mtu := cfg.MTU
	var identify func(netip.Addr) (netip.Addr, bool)
	if ld, ok := dev.(*lan.Device); ok {
		r.lan = ld
		identify = ld.Identity
		mtu, _ = ld.MTU()
		for _, p := range ld.Prefixes() {
			if cfg.DNSPool4.Overlaps(p) || cfg.DNSPool6.Overlaps(p) {
				dev.Close()
				ds.Close()
				return nil, fmt.Errorf("config: LAN prefix %s overlaps a DNS virtual pool (change --dns-pool4/--dns-pool6)", p)
			}
		}
	}
	st, err := netstack.New(netstack.Config{
		Device:               dev,
		MTU:                  mtu,
		TCP:                  lanRefusing(r.lan, tn),
		DNS:                  ds,
		Identify:             identify,
		Proof:                proof,
		MaxInFlight:          cfg.MaxInFlight,
		MaxInFlightPerSource: cfg.MaxInFlightPerSource,
		ICMPUnreachable:      cfg.ICMPUnreachable,
		Logger:               log.With("component", "netstack"),
	})
	if err != nil {
		dev.Close()
		ds.Close()
		return nil, err
	}
	r.stack = st
	if cfg.Registerer != nil {
		for _, c := range r.Metrics() {
			if err := cfg.Registerer.Register(c); err != nil {
				st.Close()
				ds.Close()
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	if t := ts.tor; t != nil {
		// Last: OnDown may end flows from now on.
		if err := t.Start(ctx); err != nil {
			t.Close()
			st.Close()
			tn.Close()
			ds.Close()
			return nil, err
		}
		if ts.mode == ModeManaged {
			log.Info("starting tor", "mode", ts.mode, "data_dir", cfg.ManagedTor.DataDir, "socks", t.SocksAddr())
		} else {
			log.Info("attached to tor", "mode", ts.mode, "control", cfg.AttachedTor.ControlAddr, "socks", t.SocksAddr())
		}
	}
	return r, nil
}

// lateNames lets the tunnel reach the DNS server built after it.
type lateNames struct{ s *dns.Server }

func (l *lateNames) Acquire(src, ip netip.Addr) (string, func(), bool, bool) {
	return l.s.Acquire(src, ip)
}

// lanRefusing returns tn, or on a LAN (ld not nil) tn behind a refusal of
// flows to the gateway itself and the LANs: those are no destinations to
// send to Tor, and the gateway only serves DNS (port 53, which netstack
// hands to the DNS server, not here).
// A destination policy is to replace this adapter (issue 20).
func lanRefusing(ld *lan.Device, tn *tunnel.Tunnel) netstack.TCPHandler {
	if ld == nil {
		return tn
	}
	return lanRefusal{ld: ld, next: tn}
}

// lanRefusal is lanRefusing's adapter.
type lanRefusal struct {
	ld   *lan.Device
	next *tunnel.Tunnel
}

func (l lanRefusal) ServeTCP(f flow.Request) {
	if l.ld.Refuse(f.Dst().Addr()) {
		f.Reject()
		return
	}
	l.next.ServeTCP(f)
}

// forbiddenPrefixes returns the valid prefixes among ps, masked.
func forbiddenPrefixes(ps ...netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Metrics returns every collector of the router.
func (r *Router) Metrics() []prometheus.Collector {
	cs := r.tunnel.Metrics()
	cs = append(cs, r.dns.Metrics()...)
	cs = append(cs, newStackCollector(r.stack))
	cs = append(cs, r.watch.metrics()...)
	cs = append(cs, r.tor.metrics(r.Ready)...)
	if r.lan != nil {
		cs = append(cs, r.lan.Metrics()...)
	}
	return cs
}

// Stack returns the network stack, for its counters.
func (r *Router) Stack() *netstack.Stack { return r.stack }

// LAN returns the LAN link layer, nil unless Config.LAN is set.
func (r *Router) LAN() *lan.Device { return r.lan }

// LANReady reports whether every LAN interface can carry traffic
// (macvtap attached, interface up, frames readable); nil without LAN.
func (r *Router) LANReady() error {
	if r.lan == nil {
		return nil
	}
	return r.lan.Ready()
}

// Tunnel returns the flow layer, for its isolator and EndAll.
func (r *Router) Tunnel() *tunnel.Tunnel { return r.tunnel }

// DNS returns the DNS server.
func (r *Router) DNS() *dns.Server { return r.dns }

// shutdownDrain bounds how long Close waits for the resets of the flows
// it ended to leave through the TUN.
const shutdownDrain = time.Second

// stateSaveInterval bounds what a crash loses of the automap table.
const stateSaveInterval = 5 * time.Minute

// Healthy reports whether the packet loop runs: nil once started and
// until closed or until the TUN failed.
func (r *Router) Healthy() error {
	if !r.started.Load() {
		return errors.New("router not started")
	}
	if r.closed.Load() {
		return errors.New("router closed")
	}
	return r.stack.Err()
}

// UpstreamErr is nil while the SOCKS upstream answers, else why not. In
// plain SOCKS mode it is all the router knows about Tor: a SOCKS port
// says nothing of Tor's bootstrap.
func (r *Router) UpstreamErr() error { return r.watch.err() }

// Start begins forwarding. In plain SOCKS mode it first probes the
// upstream once (at most a second), so that a dead upstream is refused
// from the first flow on.
func (r *Router) Start() {
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	r.watch.start(ctx)
	r.bg.Go(func() { r.watch.watchLoop(ctx) })
	r.stack.Start()
	r.started.Store(true)
	if r.cfg.StateDir != "" {
		r.saverMu.Lock()
		r.saver = time.AfterFunc(stateSaveInterval, r.saveState)
		r.saverMu.Unlock()
	}
	r.log.Info("router started", "mtu", r.stack.MTU(), "isolation", r.cfg.Isolation.String(), "dns_mode", r.cfg.DNSMode.String())
}

// failPoll is how often Run checks the packet loop. A TUN that fails (or
// is deleted) ends Run within about this long.
const failPoll = 200 * time.Millisecond

// Run forwards until ctx is done or a part fails, then closes the
// router. The parts are the packet loop and the Tor supervisor. It
// returns nil after ctx is done, and the failure otherwise (for example
// netstack's "tun read" after the TUN was deleted, or a Tor supervisor
// that stopped): a router that cannot forward must not stay up looking
// healthy.
func (r *Router) Run(ctx context.Context) error {
	if !r.started.Load() {
		r.Start()
	}
	err := r.Wait(ctx)
	return errors.Join(err, r.Close())
}

// Wait blocks until ctx is done (nil) or the started router stops
// forwarding (its error): the packet loop failed or the Tor supervisor
// stopped.
func (r *Router) Wait(ctx context.Context) error {
	tick := time.NewTicker(failPoll)
	defer tick.Stop()
	var torDone <-chan struct{} // nil with plain SOCKS: never ready
	if t := r.tor.tor; t != nil {
		torDone = t.Done()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-torDone:
			if r.closed.Load() {
				return nil
			}
			return fmt.Errorf("router: %w", errTorStopped)
		case <-tick.C:
		}
		if err := r.stack.Err(); err != nil {
			if r.closed.Load() {
				return nil
			}
			return fmt.Errorf("router: %w", err)
		}
	}
}

// Close stops forwarding, ends all flows, saves DNS state, closes the
// TUN and stops the managed Tor (or leaves the attached one). It is safe
// to call more than once.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.saverMu.Lock()
		if r.saver != nil {
			r.saver.Stop()
			r.saver = nil
		}
		r.saverMu.Unlock()
		if r.stop != nil {
			r.stop()
		}
		r.bg.Wait()
		// Flows first, while the stack can still send their RSTs; then
		// let the RSTs reach the workstations before the TUN closes.
		err2 := r.tunnel.Close()
		r.stack.Drain(shutdownDrain)
		err1 := r.stack.Close()
		err3 := r.dns.Close()
		var err4 error
		if t := r.tor.tor; t != nil {
			err4 = t.Close()
		}
		r.closeErr = errors.Join(err1, err2, err3, err4)
	})
	return r.closeErr
}
