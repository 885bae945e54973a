package torgate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate/dns"
	"github.com/torgate/torgate/internal/dest"
	"github.com/torgate/torgate/internal/fair"
	"github.com/torgate/torgate/internal/gate"
	"github.com/torgate/torgate/internal/lan"
	"github.com/torgate/torgate/internal/ownaddr"
	"github.com/torgate/torgate/internal/torctl"
	"github.com/torgate/torgate/internal/upstream"
	"github.com/torgate/torgate/netstack"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/tunnel"
)

// Router is a running torgate instance.
type Router struct {
	cfg    Config
	log    *slog.Logger
	gate   *gate.Gate
	tor    *torSide
	iso    *tunnel.Isolator
	names  *dns.Map
	dev    tun.Device
	lan    *lan.Device // nil unless Config.LAN
	policy *dest.Policy
	dns    *dns.Server
	tunnel *tunnel.Tunnel
	stack  *netstack.Stack
	proof  *fair.Proof
	proven func(netip.Addr) bool // proof.Has, or on a LAN every machine
	svc    services

	bgCtx  context.Context    // the background goroutines' life
	stopBg context.CancelFunc // ends them; Close calls it
	bg     sync.WaitGroup

	closeOnce  sync.Once
	closeErr   error
	closeStats CloseStats // set by Close, before closeOnce returns
	started    atomic.Bool
	closed     atomic.Bool

	saverMu sync.Mutex
	saver   *time.Timer // guarded by saverMu; nil once closed

	unregister cleanup // the metrics' registrations, undone by Close

	failAt string // a build step that fails (build_test.go)
}

// The readiness gate's parts, in the order Ready names the first that is
// not ready: the shared ones, then two per Tor instance (partNames).
const (
	partRouter gate.Part = iota // started, not closed, packet loop running
	partLAN                     // every LAN link up and readable
	partTor                     // instance 0's Tor: bootstrapped with a live circuit; partTor+1 its SOCKS port answers; then instance 1's two, and so on
)

var (
	errNotStarted = errors.New("router not started")
	errClosed     = errors.New("router closed")
)

// saveState writes the automap table and re-arms itself.
func (r *Router) saveState() {
	if err := r.names.Save(); err != nil {
		r.log.Warn("save dns state failed", "err", err)
	}
	r.saverMu.Lock()
	defer r.saverMu.Unlock()
	if r.saver != nil {
		r.saver.Reset(stateSaveInterval)
	}
}

// eofGrace is how long an end of stream from a plain SOCKS upstream whose
// readiness the caller reports (Config.Ready) is held before it becomes a
// FIN, so that the caller's Ready can fall first when the upstream died
// and its closed sockets become RSTs. It delays the FIN of every stream
// such an upstream ends. A Tor of torgate's (managed or attached) is
// asked instead (see lanes).
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
// until Tor is bootstrapped (see Ready, WaitReady). Config.Device is the
// Router's from here on: Close closes it, and so does NewContext when it
// fails. A failing NewContext leaves nothing behind: every step it took
// is undone, last first.
func NewContext(ctx context.Context, cfg Config) (_ *Router, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Router{cfg: cfg, log: cfg.Logger, failAt: cfg.failAt}
	var undo cleanup
	defer func() {
		if err != nil {
			if r.names != nil {
				r.names.Discard()
			}
			undo.run()
			if r.dev == nil && cfg.Device != nil {
				cfg.Device.Close() // failed before the device step took it
			}
		}
	}()
	steps := [...]func(*cleanup) error{
		r.buildTor,
		r.buildUpstream,
		r.buildNames,
		r.openDevice,
		r.buildPolicy,
		r.buildDNS,
		r.buildTunnel,
		r.buildServices,
		r.buildStack,
		r.buildOnion,
		r.registerMetrics,
		func(u *cleanup) error { return r.startTor(ctx, u) },
	}
	for i, step := range steps {
		if r.failAt == buildSteps[i] {
			return nil, fmt.Errorf("%w at %s", errInjected, buildSteps[i])
		}
		if err := step(&undo); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// buildSteps name NewContext's steps, in order, for a test that makes
// each fail (Config.failAt).
var buildSteps = [...]string{"tor", "upstream", "names", "device", "policy", "dns", "tunnel", "services", "stack", "onion", "metrics", "start-tor"}

// errInjected is the failure a test asks a build step for.
var errInjected = errors.New("injected failure")

// cleanup undoes NewContext's steps, last first.
type cleanup []func()

func (c *cleanup) push(f func()) { *c = append(*c, f) }

func (c cleanup) run() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// buildTor builds (but does not start) the managed or attached Tor, and
// the readiness gate every part reports into.
func (r *Router) buildTor(u *cleanup) error {
	var extra func() error
	if ready := r.cfg.Ready; ready != nil {
		extra = func() error {
			if !ready() {
				return errors.New("not ready (Config.Ready)")
			}
			return nil
		}
	}
	r.gate = gate.New(extra, partNames(r.cfg.instances())...)
	r.gate.Set(partRouter, errNotStarted)
	var progress func(int, torctl.Bootstrap)
	if f := r.cfg.OnTorProgress; f != nil {
		var mu sync.Mutex // one call at a time, whichever instance reports
		progress = func(k int, b torctl.Bootstrap) {
			mu.Lock()
			defer mu.Unlock()
			bs := bootstrapOf(b)
			bs.Instance = k
			f(bs)
		}
	}
	ts, err := newTorSide(&r.cfg, progress, r.torDown, r.onConnect)
	if err != nil {
		return err
	}
	r.tor = ts
	for _, in := range ts.inst {
		if in.tor == nil {
			r.gate.Set(in.part, nil)
		}
	}
	r.bgCtx, r.stopBg = context.WithCancel(context.Background())
	u.push(func() { r.stopBg(); r.bg.Wait() })
	return nil
}

// buildUpstream wraps every dial to a SOCKS port in its instance's
// liveness watch.
func (r *Router) buildUpstream(*cleanup) error {
	plain := r.cfg.Ready == nil && r.tor.tor == nil
	for _, in := range r.tor.inst {
		log := r.log.With("component", "upstream")
		if len(r.tor.inst) > 1 {
			log = log.With("tor_instance", in.k)
		}
		in.watch = upstream.New(in.dial, plain, log, func(err error) { r.gate.Set(in.part+1, err) })
		// Pipeline: the upstream is Tor. With isolation (the default)
		// every stream carries credentials that only Tor takes whatever
		// they are, so a server that parses one message per read
		// (microsocks) could not serve torgate anyway; without
		// credentials Pipeline changes nothing. The Dialer pipelines only
		// over a unix socket (a managed Tor's): over TCP it would cost a
		// delayed ACK per stream (socks.Dialer.Pipeline).
		in.dialer = &socks.Dialer{Dial: in.watch.Dial, Pipeline: true}
	}
	iso, err := tunnel.NewIsolator(tunnel.IsolationMode(r.cfg.Isolation), r.cfg.IsolationSecret)
	r.iso = iso
	return err
}

// buildNames builds the automap table, first of the DNS parts: it checks
// the state directory before anything touches a network interface.
func (r *Router) buildNames(u *cleanup) error {
	stateFile, epochFile := "", r.cfg.DNSEpochFile
	if r.cfg.StateDir != "" {
		stateFile = filepath.Join(r.cfg.StateDir, "automap.state")
		epochFile = filepath.Join(r.cfg.StateDir, "automap.epoch")
	}
	// Which workstations are proven: in a TUN, those that completed a
	// TCP handshake recently (the DNS table keeps its room for them); on
	// a LAN every source that reaches the stack was proven by torgate's
	// own ARP/ND and is a machine identity.
	r.proof = netstack.NewProof()
	proven := r.proof.Has
	if len(r.cfg.LAN) > 0 {
		proven = lan.IsMachineID
	}
	r.proven = proven
	m, err := dns.NewMap(dns.Config{
		Proven:    proven,
		Pool4:     r.cfg.DNSPool4,
		Pool6:     r.cfg.DNSPool6,
		StateFile: stateFile,
		EpochFile: epochFile,
		Logger:    r.log.With("component", "dns"),
	})
	if err != nil {
		return err
	}
	r.names = m
	u.push(func() { m.Close() })
	return nil
}

// openDevice opens the TUN or takes the LAN interfaces.
func (r *Router) openDevice(u *cleanup) error {
	dev, err := openTUN(&r.cfg)
	if err != nil {
		return err
	}
	r.dev = dev
	u.push(func() { dev.Close() })
	if ld, ok := dev.(*lan.Device); ok {
		r.lan = ld
		for _, p := range ld.Prefixes() {
			if r.cfg.DNSPool4.Overlaps(p) || r.cfg.DNSPool6.Overlaps(p) {
				return fmt.Errorf("config: LAN prefix %s overlaps a DNS virtual pool (change --dns-pool4/--dns-pool6)", p)
			}
		}
		logLAN(r.log, ld)
	} else {
		r.gate.Set(partLAN, nil)
	}
	return nil
}

// buildPolicy builds the one destination policy of flows and DNS: the
// built-in rules, the virtual pools (a flow to one is its name or a RST),
// the gateway's own networks (its TUN's, its LANs') and its own addresses
// on every interface (its uplink's too), as they are at each decision.
func (r *Router) buildPolicy(*cleanup) error {
	prefixes := []netip.Prefix{r.cfg.DNSPool4, r.cfg.DNSPool6}
	for _, p := range []netip.Prefix{r.cfg.Addr4, r.cfg.Addr6} {
		if p.IsValid() {
			prefixes = append(prefixes, p)
		}
	}
	if r.lan != nil {
		prefixes = append(prefixes, r.lan.Prefixes()...)
	}
	p, err := dest.NewPolicy(prefixes, ownaddr.New().Contains)
	r.policy = p
	return err
}

// buildDNS builds the DNS server on the table, resolving (resolve mode)
// through the upstream with the isolator's credentials.
func (r *Router) buildDNS(u *cleanup) error {
	ds, err := dns.New(dns.Config{
		Mode:            dns.Mode(r.cfg.DNSMode),
		Map:             r.names,
		Resolver:        tunnel.NewLaneResolver(r.lanes(), r.laneOf, r.iso),
		Policy:          r.policy,
		Ready:           r.readyFor,
		LogDestinations: r.cfg.LogDestinations,
		Logger:          r.log.With("component", "dns"),
		// Port 53 is the DNS server's (netstack's hook hands it over).
		Workers:           r.cfg.DNSWorkers,
		WorkersPerSource:  r.cfg.DNSWorkersPerSource,
		TCPConns:          r.cfg.DNSTCPConns,
		TCPConnsPerSource: r.cfg.DNSTCPConnsPerSource,
	})
	if err != nil {
		return err
	}
	r.dns = ds
	u.push(func() { ds.Close() })
	return nil
}

// buildTunnel builds the flow layer.
func (r *Router) buildTunnel(u *cleanup) error {
	cfg := r.cfg
	tcfg := tunnel.Config{
		Lanes:             r.lanes(),
		LaneOf:            r.laneOf,
		Isolator:          r.iso,
		Names:             r.names,
		Policy:            r.policy,
		DialTimeout:       cfg.DialTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		HalfCloseTimeout:  cfg.HalfCloseTimeout,
		MaxFlows:          cfg.MaxFlows,
		MaxFlowsPerSource: cfg.MaxFlowsPerSource,
		MaxDialsPerSource: cfg.MaxDialsPerSource,
		LogDestinations:   cfg.LogDestinations,
		Logger:            r.log.With("component", "tunnel"),
	}
	// An end of stream from Tor is confirmed with Tor itself (see
	// lanes). The caller's Ready needs a moment to report a death, so
	// those ends of stream wait for it. A plain SOCKS upstream offers no
	// evidence a wait could collect in time (its probe runs every 5 s):
	// its ends pass at once.
	if r.tor.mode == ModeSocks && cfg.Ready != nil {
		tcfg.EOFGrace = eofGrace
	}
	if !cfg.KeepMemory {
		tcfg.FreeMemory = debug.FreeOSMemory
	}
	tn, err := tunnel.New(tcfg)
	if err != nil {
		return err
	}
	r.tunnel = tn
	u.push(func() { tn.Close() })
	return nil
}

// lanes are the tunnel's ways out, one per Tor instance: its SOCKS port
// and its workstations' readiness. An end of stream from Tor is a FIN only
// once Tor's main loop has answered a control command sent after it
// (torctl.Tor.Confirm; one command answers every end of stream before
// it): a Tor exiting on SIGTERM closes its streams itself and never
// answers again. A managed Tor's process (torctl.Tor.ProcessState, ~8 µs,
// no allocation; torgate's child) resets at once the streams of a Tor the
// kernel already marks exiting or gone. An attached Tor's process is not
// inspected (ProcessState does not know it): Confirm alone decides its
// ends of stream.
func (r *Router) lanes() []tunnel.Lane {
	lanes := make([]tunnel.Lane, len(r.tor.inst))
	for i, in := range r.tor.inst {
		lanes[i] = tunnel.Lane{Upstream: in.dialer, Ready: func() bool { return r.gate.ReadyOf(in.mask) }}
		if in.tor != nil {
			lanes[i].UpstreamState = in.tor.ProcessState
			lanes[i].UpstreamConfirm = in.tor.Confirm
		}
	}
	return lanes
}

// laneOf is the tunnel's LaneOf: workstation who's Tor instance.
func (r *Router) laneOf(who netip.Addr) int { return r.tor.pick(who).k }

// readyFor reports whether workstation who's Tor instance serves it: DNS's
// readiness, per query.
func (r *Router) readyFor(who netip.Addr) bool {
	return r.gate.ReadyOf(r.tor.pick(who).mask)
}

// buildStack builds the network stack on the device. From here the stack
// owns the device: its Close closes it.
func (r *Router) buildStack(u *cleanup) error {
	cfg := r.cfg
	mtu := cfg.MTU
	var identify func(netip.Addr) (netip.Addr, bool)
	if r.lan != nil {
		identify = r.lan.Identity
		mtu, _ = r.lan.MTU()
	}
	st, err := netstack.New(netstack.Config{
		Device:               r.dev,
		MTU:                  mtu,
		TCP:                  r.svc.mux,
		DNS:                  r.dns,
		Identify:             identify,
		Proof:                r.proof,
		MaxInFlight:          cfg.MaxInFlight,
		MaxInFlightPerSource: cfg.MaxInFlightPerSource,
		ICMPUnreachable:      cfg.ICMPUnreachable,
		Logger:               r.log.With("component", "netstack"),
	})
	if err != nil {
		return err
	}
	r.stack = st
	u.push(func() { st.Close() })
	return nil
}

// registerMetrics registers every collector, or none. Close unregisters
// them, so that a new Router can use the same registry.
func (r *Router) registerMetrics(u *cleanup) error {
	reg := r.cfg.Registerer
	if reg == nil {
		return nil
	}
	for _, c := range r.Metrics() {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
		r.unregister.push(func() { reg.Unregister(c) })
	}
	u.push(r.unregister.run)
	return nil
}

// startTor starts the managed Tor or attaches to the running one, and
// the goroutines that report into the gate. Last: Tor's OnDown may end
// flows from here on.
func (r *Router) startTor(ctx context.Context, u *cleanup) error {
	if r.lan != nil {
		r.report(partLAN, r.lan.Changed, r.lan.Ready)
	}
	for _, in := range r.tor.inst {
		t := in.tor
		if t == nil {
			return nil
		}
		if err := t.Start(ctx); err != nil {
			for _, later := range r.tor.inst[in.k:] {
				later.tor.Close()
			}
			if len(r.tor.inst) > 1 {
				return fmt.Errorf("tor instance %d: %w", in.k, err)
			}
			return err
		}
		u.push(func() { t.Close() })
		r.report(in.part, t.Changed, t.ReadyErr)
		switch {
		case r.tor.mode != ModeManaged:
			r.log.Info("attached to tor", "mode", r.tor.mode, "control", r.cfg.AttachedTor.ControlAddr, "socks", t.SocksAddr())
		case len(r.tor.inst) > 1:
			r.log.Info("starting tor", "mode", r.tor.mode, "tor_instance", in.k, "data_dir", r.cfg.torConfig(in.k).DataDir, "socks", t.SocksAddr())
		default:
			r.log.Info("starting tor", "mode", r.tor.mode, "data_dir", r.cfg.ManagedTor.DataDir, "socks", t.SocksAddr())
		}
	}
	return nil
}

// report keeps part's state in the gate: it reads state and sets the
// part now and at every change, until the router closes.
func (r *Router) report(p gate.Part, changed func() <-chan struct{}, state func() error) {
	r.bg.Go(func() {
		for {
			ch := changed()
			r.gate.Set(p, state())
			select {
			case <-ch:
			case <-r.bgCtx.Done():
				return
			}
		}
	})
}

// torDown is instance k's torctl OnDown: it runs once k's readiness
// already reports false. The gate learns it here, before the flows end,
// so that no new flow slips in between; flows through a Tor that is gone
// cannot continue: they end now (RST) rather than each time out. Only
// instance k's workstations' flows end: the others' Tors are fine.
func (r *Router) torDown(k int) {
	in := r.tor.inst[k]
	if t := in.tor; t != nil {
		if err := t.ReadyErr(); err != nil {
			r.gate.Set(in.part, err)
		}
	}
	if tn := r.tunnel; tn != nil {
		tn.EndLaneBecause(k, tunnel.EndTorDown)
	}
}

// Metrics returns every collector of the router.
func (r *Router) Metrics() []prometheus.Collector {
	cs := r.tunnel.Metrics()
	cs = append(cs, r.dns.Metrics()...)
	kind := "tun"
	if r.lan != nil {
		kind = "lan"
	}
	cs = append(cs, newStackCollector(r.stack, kind))
	cs = append(cs, r.svc.metrics()...)
	cs = append(cs, r.tor.metrics(r.Ready, func(in *torInstance) bool { return r.gate.ReadyOf(in.mask) })...)
	if r.lan != nil {
		cs = append(cs, r.lan.Metrics()...)
	}
	return cs
}

// shutdownDrain bounds how long Close waits for the resets of the flows
// it ended to leave through the TUN.
const shutdownDrain = time.Second

// stateSaveInterval bounds what a crash loses of the automap table.
const stateSaveInterval = 5 * time.Minute

// Healthy reports whether the packet loop runs: nil once started and
// until closed or until the TUN failed.
func (r *Router) Healthy() error { return r.gate.PartErr(partRouter) }

// UpstreamErr is nil while the SOCKS upstream answers (every Tor
// instance's SOCKS port), else why not. In plain SOCKS mode it is all the
// router knows about Tor: a SOCKS port says nothing of Tor's bootstrap.
func (r *Router) UpstreamErr() error {
	for _, in := range r.tor.inst {
		if err := in.watch.Err(); err != nil {
			if len(r.tor.inst) > 1 {
				return fmt.Errorf("tor instance %d: %w", in.k, err)
			}
			return err
		}
	}
	return nil
}

// Start begins forwarding. In plain SOCKS mode it first probes the
// upstream once (at most a second), so that a dead upstream is refused
// from the first flow on.
func (r *Router) Start() {
	if r.started.Swap(true) {
		return
	}
	for _, in := range r.tor.inst {
		in.watch.Start(r.bgCtx)
		r.bg.Go(func() { in.watch.Run(r.bgCtx) })
	}
	r.stack.Start()
	r.gate.Set(partRouter, nil)
	// The packet loop's end (a deleted TUN) is the router's.
	r.bg.Go(func() {
		select {
		case <-r.stack.Done():
			if err := r.stack.Err(); err != nil && !r.closed.Load() {
				r.gate.Set(partRouter, err)
			}
		case <-r.bgCtx.Done():
		}
	})
	if r.cfg.StateDir != "" {
		r.saverMu.Lock()
		r.saver = time.AfterFunc(stateSaveInterval, r.saveState)
		r.saverMu.Unlock()
	}
	r.log.Info("router started", "mtu", r.stack.MTU(), "isolation", r.cfg.Isolation.String(), "dns_mode", r.cfg.DNSMode.String())
}

// Run forwards until ctx is done or a part fails, then closes the
// router. The parts are the packet loop and the Tor supervisor. It
// returns nil after ctx is done, and the failure otherwise (for example
// netstack's "tun read" after the TUN was deleted, or a Tor supervisor
// that stopped): a router that cannot forward must not stay up looking
// healthy.
func (r *Router) Run(ctx context.Context) error {
	r.Start()
	err := r.Wait(ctx)
	return errors.Join(err, r.Close())
}

// Wait blocks until ctx is done (nil) or the started router stops
// forwarding (its error): the packet loop failed or a Tor supervisor
// stopped (of any instance: its workstations would be refused for good).
func (r *Router) Wait(ctx context.Context) error {
	torDone := r.tor.done()
	select {
	case <-ctx.Done():
		return nil
	case <-torDone:
		if r.closed.Load() {
			return nil
		}
		return fmt.Errorf("router: %w", errTorStopped)
	case <-r.stack.Done():
		if r.closed.Load() {
			return nil
		}
		return fmt.Errorf("router: %w", r.stack.Err())
	}
}

// Close stops forwarding, ends all flows, saves DNS state, closes the
// TUN and stops the managed Tor (or leaves the attached one). It is safe
// to call more than once.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		began := time.Now()
		defer func() { r.closeStats.Took = time.Since(began) }()
		r.closed.Store(true)
		r.gate.Set(partRouter, errClosed)
		r.saverMu.Lock()
		if r.saver != nil {
			r.saver.Stop()
			r.saver = nil
		}
		r.saverMu.Unlock()
		r.stopBg()
		r.bg.Wait()
		// Flows first, while the stack can still send their RSTs; then
		// let the RSTs reach the workstations before the TUN closes. DNS
		// last: its table is saved with the proof of every handshake the
		// stack completed (an answer still in flight finds the link gone
		// and sends nothing).
		r.svc.close()
		r.closeStats.FlowsEnded = r.tunnel.OpenFlows()
		err2 := r.tunnel.Close()
		r.stack.Drain(shutdownDrain)
		err1 := r.stack.Close()
		err3 := r.dns.Close()
		var err4 error
		for _, in := range r.tor.inst {
			if in.tor != nil {
				err4 = errors.Join(err4, in.tor.Close())
			}
		}
		r.unregister.run()
		r.closeErr = errors.Join(err1, err2, err3, err4)
	})
	return r.closeErr
}

// CloseStats describes what Close did.
type CloseStats struct {
	// FlowsEnded is the number of flows open (or dialling) that Close
	// ended with a reset.
	FlowsEnded int
	// Took is how long Close took, the wait for the resets to leave and
	// for the managed Tor to stop included.
	Took time.Duration
}

// CloseStats reports what Close did; zero before Close returned.
func (r *Router) CloseStats() CloseStats {
	if !r.closed.Load() {
		return CloseStats{}
	}
	r.closeOnce.Do(func() {}) // waits for a Close in progress
	return r.closeStats
}

// logLAN tells the operator what workstations must be configured with:
// the gateway addresses, as default gateway and nameserver.
func logLAN(log *slog.Logger, d *lan.Device) {
	var v4, v6, ll, prefixes []string
	for _, a := range d.Addrs() {
		switch {
		case a.Is4():
			v4 = append(v4, a.String())
		case a.IsLinkLocalUnicast():
			ll = append(ll, a.String())
		default:
			v6 = append(v6, a.String())
		}
	}
	for _, p := range d.Prefixes() {
		prefixes = append(prefixes, p.String())
	}
	log.Info("lan ready",
		"interfaces", strings.Join(d.Interfaces(), ","),
		"gateway_ipv4", strings.Join(v4, ","),
		"gateway_ipv6", strings.Join(v6, ","),
		"gateway_link_local", strings.Join(ll, ","),
		"workstation_prefixes", strings.Join(prefixes, ","),
		"hint", "workstations use the gateway address as default gateway and nameserver")
}
