// Package tunnel is the per-flow policy between netstack and the SOCKS
// upstream: readiness gate, virtual-address lookup, isolation credentials,
// limits per source and in all, the SOCKS dial, and the relay with
// half-close and idle timeouts.
//
// The relay is driven by readiness, not by a goroutine per direction: the
// workstation's side announces data through gVisor's waiter queue, the
// upstream socket through an epoll set of the tunnel's own (Linux; other
// systems park a goroutine per waiting direction), and a pump copies
// until the source is drained and gives its goroutine and buffer back. An
// idle flow costs its connections' memory and nothing else.
//
// The upstream is the only way out. Tunnel is given an Upstream (in
// production a *socks.Dialer bound to Tor's SocksPort) and has no other
// means to open a connection, so no code path can reach a workstation's
// destination directly.
//
// This is a component of torgate, not a public contract: its API changes
// with torgate's needs. Embedders use package github.com/torgate/torgate.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/torgate/torgate/internal/defaults"
	"github.com/torgate/torgate/internal/dest"
	"github.com/torgate/torgate/internal/fair"
	handoff "github.com/torgate/torgate/internal/flow" // tunnel has a flow type of its own
	"github.com/torgate/torgate/socks"
)

// Upstream opens streams through Tor. *socks.Dialer implements it.
type Upstream interface {
	Connect(ctx context.Context, dst socks.Addr, auth socks.Auth) (net.Conn, error)
	Resolve(ctx context.Context, name string, auth socks.Auth) (netip.Addr, error)
	ResolvePTR(ctx context.Context, ip netip.Addr, auth socks.Auth) (string, error)
}

// Names maps virtual addresses handed out by the DNS automapper back to
// host names. *dns.Server implements it.
type Names interface {
	// Acquire pins the mapping of ip, as handed to the workstation src,
	// while a flow uses it. virtual reports whether ip lies in a virtual
	// pool; ok whether it is mapped for src (a mapping another source
	// looked up is not: each workstation sees only its own names).
	Acquire(src, ip netip.Addr) (name string, release func(), virtual, ok bool)
}

// Flow is one TCP connection attempt held at the SYN. *netstack.TCPRequest
// implements it.
type Flow interface {
	// Accept completes the client's handshake and returns the connection,
	// which must implement CloseWrite.
	Accept() (net.Conn, error)
	// Reject answers with a RST.
	Reject()
}

// Lane is one way out: an upstream with its own readiness and state, as
// Config.Upstream, Config.Ready, Config.UpstreamState and
// Config.UpstreamConfirm describe them.
// Several lanes are several Tor instances, each serving its own
// workstations (Config.Lanes).
type Lane struct {
	Upstream        Upstream
	Ready           func() bool
	UpstreamState   func() (gone, known bool)
	UpstreamConfirm func(done func(alive bool))
}

// Config configures a Tunnel. Zero values take the documented defaults.
type Config struct {
	// Upstream is the SOCKS endpoint (Tor). Required unless Lanes is
	// set; the only way out.
	Upstream Upstream
	// Lanes, if set, replace Upstream, Ready and UpstreamState (which must
	// then be unset): one upstream per Tor instance. A workstation's
	// flows, lookups and SOCKS-port streams go out on its lane only
	// (LaneOf), gated by that lane's Ready, and EndLaneBecause ends one
	// lane's flows only: a dead instance fails closed for its own
	// workstations and nobody else's.
	Lanes []Lane
	// LaneOf maps a workstation to its lane, 0 to len(Lanes)-1. Required
	// with Lanes; it must be stable (a workstation's circuits and names
	// must never move) and cheap (it runs per flow).
	LaneOf func(who netip.Addr) int
	// Isolator derives SOCKS credentials. Required.
	Isolator *Isolator
	// Names resolves virtual addresses; nil means no automapping.
	Names Names
	// Ready reports whether Tor can carry traffic. While false, new flows
	// get a RST. Nil means always ready.
	Ready func() bool
	// When Tor dies, the kernel closes its sockets and the relay reads a
	// clean end of stream, indistinguishable from one the exit ended:
	// passed on as a FIN, it would make a download that the end of the
	// connection delimits (HTTP/1.0, no Content-Length) look complete.
	// UpstreamState, UpstreamConfirm and EOFGrace tell the two apart;
	// with none set, an end of stream from the upstream is passed on at
	// once, as a FIN if Ready holds and a RST if not.
	//
	// UpstreamState, if set, is asked at each end of stream from the
	// upstream whether the upstream is dying or gone, and whether it knows
	// (torctl.Tor.ProcessState: Tor's process). Known and gone: the flow
	// is reset at once; known and alive: the end passes at once unless
	// UpstreamConfirm is set; not known: UpstreamConfirm, else EOFGrace,
	// decides. It must be cheap and must not block.
	UpstreamState func() (gone, known bool)
	// UpstreamConfirm, if set, is asked at each end of stream from the
	// upstream that UpstreamState does not show gone, and the end waits
	// for its answer: alive, a FIN (if Ready holds); not alive, a RST.
	// It must answer only from evidence gathered after the call
	// (torctl.Tor.Confirm: Tor's main loop answered a control command
	// sent after it), since a Tor that exits on SIGTERM closes its
	// streams itself while its process still looks alive. It must not
	// block; done may run on any goroutine. With it set, EOFGrace is not
	// used.
	UpstreamConfirm func(done func(alive bool))
	// EOFGrace holds an end of stream from the upstream, when
	// UpstreamState does not know and UpstreamConfirm is not set, this
	// long before passing it on, so that Ready can fall first when the
	// upstream died and readiness learns of it within that time. It
	// delays the FIN of every such stream by this much, and nothing else.
	EOFGrace time.Duration
	// DialTimeout bounds the SOCKS handshake including Tor building a
	// circuit, which takes seconds and, for onion services, tens of
	// seconds. Default 90s (the client's SYN retries run about 2 min).
	DialTimeout time.Duration
	// IdleTimeout ends a flow with no data either way for this long.
	// Default 1h: Tor keeps streams open as long as the circuit lives, and
	// interactive sessions idle for long; keepalive catches dead peers.
	IdleTimeout time.Duration
	// HalfCloseTimeout ends a flow once one direction has finished and the
	// other has made no progress for this long. Default 2m.
	HalfCloseTimeout time.Duration
	// MaxFlows caps open flows (including dials in progress). Default 16384.
	MaxFlows int
	// MaxFlowsPerSource caps one source's open flows so that it cannot
	// starve others. Default 1024. The last quarter of MaxFlows is a
	// reserve: once the rest is taken, only sources holding fewer than
	// MaxFlows/128 flows get a new one, so a few sources at their cap
	// leave every other one its share (internal/fair). Spoofed sources
	// never get that far: netstack's pending-handshake pool holds them.
	MaxFlowsPerSource int
	// MaxDialsPerSource caps one source's SOCKS dials in progress, which
	// hold circuits being built. Default 128. All dials together are
	// bounded by netstack's pending handshakes (each dial holds one), whose
	// pool keeps a reserve for proven sources.
	MaxDialsPerSource int
	// Policy decides which destinations no flow may reach: the router's
	// one policy (built-in rules, the gateway's own networks and
	// addresses, the DNS virtual pools), shared with the DNS server. A
	// flow to a forbidden destination, given as an address or as a
	// virtual address whose name is an address literal, gets a RST
	// (flows_refused_total{reason="forbidden"}). Nil: the built-in rules.
	Policy *dest.Policy
	// FreeMemory, if set, is called (on its own goroutine, at most once a
	// minute) 5 s after open flows fell by half and by at least 1,000
	// since their peak: in production debug.FreeOSMemory, so that the memory of
	// a peak goes back to the system instead of waiting for the
	// background scavenger (docs/limits.md).
	FreeMemory func()
	// LogDestinations logs destinations in debug logs. Off by default:
	// where a workstation goes is private.
	LogDestinations bool
	// Logger; nil discards.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultDialTimeout       = 90 * time.Second
	DefaultIdleTimeout       = time.Hour
	DefaultHalfCloseTimeout  = 2 * time.Minute
	DefaultMaxFlows          = 16384
	DefaultMaxFlowsPerSource = 1024
	DefaultMaxDialsPerSource = 128
)

// Reasons a flow is refused, as metric labels.
const (
	refuseNotReady = "not_ready"
	refuseLimit    = "limit"
	refuseUnmapped = "unmapped_virtual"
	refuseHandshk  = "handshake"
	refuseForbid   = "forbidden"
)

// Tunnel forwards flows to the upstream.
type Tunnel struct {
	cfg Config
	log *slog.Logger

	lanes []*lane // Config.Lanes, or the one lane of Config.Upstream

	mu      sync.Mutex
	sources map[netip.Addr]*sourceState // guarded by mu
	total   int                         // guarded by mu

	shut       bool          // guarded by mu; set by Close: no flow joins wg after it
	flows      *flow         // guarded by mu; open flows, a list through flow.next
	sweep      *time.Timer   // guarded by mu; the idle sweep, while flows are open
	sweepEvery time.Duration // idle sweep period
	flowShare  fair.Limits   // MaxFlows and its per-source shares
	peak       int           // guarded by mu; most flows open since the last FreeMemory
	lastFree   time.Time     // guarded by mu

	wg    sync.WaitGroup // open flows
	pumps pumpPool

	pollOnce sync.Once
	poll     *poller // set by pollOnce; nil if unavailable

	flowsTotal   prometheus.Counter
	flowsActive  prometheus.Gauge
	refused      *prometheus.CounterVec
	socksErrors  *prometheus.CounterVec
	setupSeconds prometheus.Histogram
	bytes        *prometheus.CounterVec
	endedVec     *prometheus.CounterVec
	overflow     prometheus.CounterFunc
	ended        [numEndHow]prometheus.Counter // endedVec's, resolved once
	closed       atomic.Bool
}

type sourceState struct {
	open, dialing int
}

// lane is a Lane with its generation of flows.
type lane struct {
	Lane
	gen     context.Context    // guarded by Tunnel.mu; cancelled by EndAll and EndLane
	genStop context.CancelFunc // guarded by Tunnel.mu
	lastEnd endHow             // guarded by Tunnel.mu; why gen was last cancelled
}

// New validates cfg and returns a Tunnel.
func New(cfg Config) (*Tunnel, error) {
	lanes := cfg.Lanes
	switch {
	case len(lanes) == 0 && cfg.Upstream == nil:
		return nil, errors.New("tunnel: nil Upstream")
	case len(lanes) == 0:
		lanes = []Lane{{Upstream: cfg.Upstream, Ready: cfg.Ready, UpstreamState: cfg.UpstreamState, UpstreamConfirm: cfg.UpstreamConfirm}}
	case cfg.Upstream != nil || cfg.Ready != nil || cfg.UpstreamState != nil || cfg.UpstreamConfirm != nil:
		return nil, errors.New("tunnel: Lanes replace Upstream, Ready, UpstreamState and UpstreamConfirm")
	case cfg.LaneOf == nil:
		return nil, errors.New("tunnel: Lanes need LaneOf")
	}
	for _, l := range lanes {
		if l.Upstream == nil {
			return nil, errors.New("tunnel: nil Upstream")
		}
	}
	if cfg.Isolator == nil {
		return nil, errors.New("tunnel: nil Isolator")
	}
	for _, d := range []*time.Duration{&cfg.DialTimeout, &cfg.IdleTimeout, &cfg.HalfCloseTimeout, &cfg.EOFGrace} {
		if *d < 0 {
			return nil, errors.New("tunnel: negative timeout")
		}
	}
	for _, n := range []*int{&cfg.MaxFlows, &cfg.MaxFlowsPerSource, &cfg.MaxDialsPerSource} {
		if *n < 0 {
			return nil, errors.New("tunnel: negative limit")
		}
	}
	defaults.Set(&cfg.DialTimeout, DefaultDialTimeout)
	defaults.Set(&cfg.IdleTimeout, DefaultIdleTimeout)
	defaults.Set(&cfg.HalfCloseTimeout, DefaultHalfCloseTimeout)
	defaults.Set(&cfg.MaxFlows, DefaultMaxFlows)
	defaults.Set(&cfg.MaxFlowsPerSource, DefaultMaxFlowsPerSource)
	defaults.Set(&cfg.MaxDialsPerSource, DefaultMaxDialsPerSource)
	if cfg.MaxFlowsPerSource > cfg.MaxFlows {
		return nil, fmt.Errorf("tunnel: MaxFlowsPerSource %d above MaxFlows %d", cfg.MaxFlowsPerSource, cfg.MaxFlows)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tunnel{
		cfg:     cfg,
		log:     log,
		sources: make(map[netip.Addr]*sourceState),
		flowsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flows_total", Help: "TCP flows forwarded through the upstream.",
		}),
		flowsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flows_active", Help: "TCP flows open or dialing.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flows_refused_total", Help: "TCP flows refused, by reason: answered with a RST, or on a SOCKS port with a failure reply (lookups too).",
		}, []string{"reason"}),
		socksErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socks_failures_total", Help: "SOCKS requests that failed, by reply code (or handshake/timeout).",
		}, []string{"reply"}),
		setupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flow_setup_seconds",
			Help:    "Time from SYN (on a SOCKS port: from the request) to the upstream accepting the stream.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12),
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flow_bytes_total", Help: "Bytes relayed, by direction.",
		}, []string{"direction"}),
	}
	for _, r := range []string{refuseNotReady, refuseLimit, refuseUnmapped, refuseHandshk, refuseForbid} {
		t.refused.WithLabelValues(r)
	}
	iso := cfg.Isolator
	t.overflow = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "isolation_overflow_total",
		Help: "Flows and lookups beyond a workstation's budget of new circuits (new hosts in per-destination isolation, new client credentials on a SOCKS port), sent on that workstation's overflow credentials.",
	}, func() float64 { return float64(iso.Overflow()) })
	t.endedVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flows_ended_total",
		Help: "Relayed flows ended, by how: fin (both peers finished) or the reason torgate reset the workstation's connection.",
	}, []string{"how"})
	for i, l := range endHowLabels {
		t.ended[i] = t.endedVec.WithLabelValues(l)
	}
	t.flowShare = fair.Default(cfg.MaxFlows, cfg.MaxFlowsPerSource)
	for _, l := range lanes {
		ln := &lane{Lane: l}
		ln.gen, ln.genStop = context.WithCancel(context.Background())
		t.lanes = append(t.lanes, ln)
	}
	t.sweepEvery = sweepInterval(cfg.IdleTimeout, cfg.HalfCloseTimeout)
	t.pumps = newPumpPool()
	return t, nil
}

// Metrics returns the tunnel's collectors for the caller's registry.
func (t *Tunnel) Metrics() []prometheus.Collector {
	return []prometheus.Collector{t.flowsTotal, t.flowsActive, t.refused, t.socksErrors, t.setupSeconds, t.bytes, t.endedVec, t.overflow}
}

// Isolator returns the isolator, for new-identity requests.
func (t *Tunnel) Isolator() *Isolator { return t.cfg.Isolator }

// EndReason says why EndAllBecause cuts flows off. Every reason ends the
// workstations' connections with a RST, never a FIN, so that an
// application reports an error rather than a truncated success.
type EndReason int

const (
	// EndTold: an operator or a new identity asked for it (EndAll).
	EndTold EndReason = iota
	// EndTorDown: Tor went away or stopped answering.
	EndTorDown
	// EndShutdown: torgate is stopping.
	EndShutdown
)

// endHow is how a flow ended: a label of flows_ended_total.
type endHow int

const (
	endFIN           endHow = iota // both ways ended by their peers
	endUpstreamError               // the upstream socket failed
	endClientError                 // the workstation's connection failed
	endIdle                        // IdleTimeout or HalfCloseTimeout
	endTold                        // EndAll
	endTorDown                     // Tor went down or hung
	endShutdown                    // Close
	numEndHow
)

var endHowLabels = [numEndHow]string{"fin", "rst_upstream_error", "rst_client_error", "rst_idle", "rst_told", "rst_tor_down", "rst_shutdown"}

func (r EndReason) how() endHow {
	switch r {
	case EndTorDown:
		return endTorDown
	case EndShutdown:
		return endShutdown
	}
	return endTold
}

// laneOf is who's lane.
func (t *Tunnel) laneOf(who netip.Addr) *lane {
	if len(t.lanes) == 1 {
		return t.lanes[0]
	}
	return t.lanes[t.cfg.LaneOf(who)]
}

// endHow is why the last EndAllBecause or EndLaneBecause ended l's
// generation.
func (t *Tunnel) endHow(l *lane) endHow {
	t.mu.Lock()
	defer t.mu.Unlock()
	return l.lastEnd
}

// EndAll ends every open flow with a RST because it was asked to (for
// example a new identity for all). New flows are not affected.
func (t *Tunnel) EndAll() { t.EndAllBecause(EndTold) }

// EndAllBecause ends every open flow with a RST, for reason r (Tor
// restarted or hung, so its streams are gone or stuck; shutdown). New
// flows are not affected.
func (t *Tunnel) EndAllBecause(r EndReason) { t.end(nil, r) }

// EndLaneBecause ends the open flows of lane k's workstations (and their
// dials in progress) with a RST, for reason r: Tor instance k went away
// or hung. Other lanes' flows go on.
func (t *Tunnel) EndLaneBecause(k int, r EndReason) { t.end(t.lanes[k], r) }

// end ends the flows of lane only, or of every lane when nil.
func (t *Tunnel) end(only *lane, r EndReason) {
	t.mu.Lock()
	var stops []context.CancelFunc
	for _, l := range t.lanes {
		if only != nil && l != only {
			continue
		}
		l.lastEnd = r.how()
		stops = append(stops, l.genStop)
		l.gen, l.genStop = context.WithCancel(context.Background())
	}
	var open []*flow
	for f := t.flows; f != nil; f = f.next {
		if only == nil || f.lane == only {
			open = append(open, f)
		}
	}
	// Cancel under mu: a flow that finished dialing in the old generation
	// either listed itself already (and is in open) or sees the
	// cancellation in list.
	for _, stop := range stops {
		stop()
	}
	t.mu.Unlock()
	for _, f := range open {
		f.abort(r.how())
	}
}

// Close ends every flow and waits for their goroutines.
func (t *Tunnel) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	t.mu.Lock()
	t.shut = true
	t.mu.Unlock()
	t.EndAllBecause(EndShutdown)
	t.wg.Wait()
	t.mu.Lock()
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweep = nil
	}
	t.mu.Unlock()
	t.closePoller()
	t.pumps.close()
	return nil
}

// ready reports whether new flows may go out on l.
func (t *Tunnel) ready(l *lane) bool {
	return !t.closed.Load() && (l.Ready == nil || l.Ready())
}

// dest renders a destination for logs: redacted unless configured.
func (t *Tunnel) dest(a socks.Addr) slog.Value {
	if !t.cfg.LogDestinations {
		return slog.StringValue("[redacted]")
	}
	return slog.StringValue(a.String())
}

// target works out what to ask the upstream for. A virtual address becomes
// its host name (as mapped for src), so the exit resolves it on the flow's
// own circuit. refuse is the refusal reason when there is nothing to ask:
// an unmapped virtual address, or a forbidden destination (Config.Policy),
// whether given as an address or as a name that is an address literal.
func (t *Tunnel) target(src netip.Addr, dst netip.AddrPort) (a socks.Addr, host string, release func(), refuse string) {
	if t.cfg.Names != nil {
		name, rel, virtual, mapped := t.cfg.Names.Acquire(src, dst.Addr())
		if virtual {
			if !mapped {
				return socks.Addr{}, "", nil, refuseUnmapped
			}
			// Defence in depth: the DNS server never maps a literal, but
			// a name that reads as an address must go out as that
			// address, and only if it is allowed.
			if ip, lit := dest.ParseLiteral(name); lit {
				if t.cfg.Policy.Forbidden(ip) != dest.ReasonAllowed {
					rel()
					return socks.Addr{}, "", nil, refuseForbid
				}
				ip = ip.Unmap()
				return socks.AddrFromAddrPort(netip.AddrPortFrom(ip, dst.Port())), ip.String(), rel, ""
			}
			return socks.HostPort(name, dst.Port()), name, rel, ""
		}
	}
	ip := dst.Addr().WithZone("").Unmap()
	if t.cfg.Policy.Forbidden(ip) != dest.ReasonAllowed {
		return socks.Addr{}, "", nil, refuseForbid
	}
	a = socks.AddrFromAddrPort(netip.AddrPortFrom(ip, dst.Port()))
	if t.cfg.Isolator.Mode() == IsolateDestination {
		// Only this mode reads the host; the text costs an allocation.
		host = ip.String()
	}
	return a, host, func() {}, ""
}

// admit reserves a dial slot for src on its lane l, or reports false if
// a cap is hit. The context is l's generation.
func (t *Tunnel) admit(src netip.Addr, l *lane) (context.Context, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.sources[src]
	if st == nil {
		st = &sourceState{}
		t.sources[src] = st
	}
	// Every source counts as proven here: a flow reaches the tunnel only
	// through netstack's pending pool, where spoofed sources are held.
	if !t.flowShare.Admit(t.total, st.open, true) || st.dialing >= t.cfg.MaxDialsPerSource {
		if st.open == 0 && st.dialing == 0 {
			delete(t.sources, src)
		}
		return nil, false
	}
	st.open++
	st.dialing++
	t.total++
	t.peak = max(t.peak, t.total)
	return l.gen, true
}

// openFlows is the number of flows admitted and not yet ended.
func (t *Tunnel) openFlows() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// OpenFlows is the number of flows open or dialling.
func (t *Tunnel) OpenFlows() int { return t.openFlows() }

// HasFlows reports whether src has flows open or dialling.
func (t *Tunnel) HasFlows(src netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sources[src] != nil
}

func (t *Tunnel) dialDone(src netip.Addr) {
	t.mu.Lock()
	t.sources[src].dialing--
	t.mu.Unlock()
}

func (t *Tunnel) release(src netip.Addr) {
	t.mu.Lock()
	st := t.sources[src]
	st.open--
	t.total--
	if st.open == 0 && st.dialing == 0 {
		delete(t.sources, src)
	}
	free := t.cfg.FreeMemory != nil && t.peak-t.total >= freeMemoryDrop && t.total <= t.peak/2 &&
		time.Since(t.lastFree) >= freeMemoryEvery
	if free {
		t.peak, t.lastFree = t.total, time.Now()
	}
	t.mu.Unlock()
	if free {
		// Later, so that the rest of a mass close has ended too.
		time.AfterFunc(freeMemoryDelay, t.cfg.FreeMemory)
	}
}

// After a peak of flows ends, gVisor's endpoints and buffers are garbage,
// but an idle router allocates too little to start a GC soon, and the
// runtime returns freed pages slowly: RSS stayed at 80-118 MiB after a
// 10k-flow peak (measured 2026-12). FreeMemory (a forced GC and scavenge,
// some ms of CPU) runs freeMemoryDelay after open flows fell by
// freeMemoryDrop and by half, at most every freeMemoryEvery.
const (
	freeMemoryDrop  = 1000
	freeMemoryDelay = 5 * time.Second
	freeMemoryEvery = time.Minute
)

// ServeTCP forwards one flow handed over by the network stack, keyed by
// the workstation (f.Who) rather than the packet's address: isolation,
// names and shares follow the workstation (on a LAN, the machine).
func (t *Tunnel) ServeTCP(f handoff.Request) {
	t.HandleTCP(netip.AddrPortFrom(f.Who(), f.Src().Port()), f.Dst(), f)
}

// HandleTCP forwards one flow: dial upstream first, then complete the
// client's handshake, then start the relay. On any failure before the
// relay the client gets a RST, never an accept-then-close. It blocks while
// it dials and returns once the relay runs; the relay needs no goroutine
// while the flow is idle.
func (t *Tunnel) HandleTCP(src, dst netip.AddrPort, f Flow) {
	start := time.Now()
	srcAddr := src.Addr().Unmap()
	l := t.laneOf(srcAddr)
	if !t.ready(l) {
		t.refuse(f, refuseNotReady)
		return
	}
	target, host, releaseName, why := t.target(srcAddr, dst)
	if why != "" {
		t.refuse(f, why)
		return
	}
	gen, ok := t.admit(srcAddr, l)
	if !ok {
		releaseName()
		t.refuse(f, refuseLimit)
		return
	}
	t.flowsActive.Inc()
	relaying := false
	end := func() {
		releaseName()
		t.release(srcAddr)
		t.flowsActive.Dec()
	}
	defer func() {
		if !relaying {
			end()
		}
	}()

	ctx, cancel := context.WithTimeout(gen, t.cfg.DialTimeout)
	up, err := l.Upstream.Connect(ctx, target, t.cfg.Isolator.Auth(srcAddr, host))
	cancel()
	t.dialDone(srcAddr)
	if err != nil {
		t.socksErrors.WithLabelValues(replyLabel(err)).Inc()
		t.log.Debug("upstream refused flow", "src", srcAddr, "dst", t.dest(target), "err", err)
		f.Reject()
		return
	}
	// Tor might have gone down while we dialed: fail closed.
	if !t.ready(l) {
		up.Close()
		t.refuse(f, refuseNotReady)
		return
	}
	conn, err := f.Accept()
	if err != nil {
		up.Close()
		t.refused.WithLabelValues(refuseHandshk).Inc()
		return
	}
	t.setupSeconds.Observe(time.Since(start).Seconds())
	t.flowsTotal.Inc()
	relaying = true
	t.relay(l, gen, conn, up, end)
}

func (t *Tunnel) refuse(f Flow, reason string) {
	t.refused.WithLabelValues(reason).Inc()
	f.Reject()
}

// replyLabel maps a dial error to a bounded label set.
func replyLabel(err error) string {
	var re *socks.ReplyError
	switch {
	case errors.As(err, &re):
		return re.Reply.String()
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "connect_error"
	}
}

// Resolver is DNS resolve mode's way to Tor: lookups go through the
// upstream's RESOLVE extensions with the asking workstation's isolation
// credentials, so that a workstation's DNS and TCP share circuits. It is
// built from the isolator and the upstream the tunnel uses, not from the
// tunnel, so that the DNS server and the tunnel need nothing of each other.
type Resolver struct {
	lanes  []Lane
	laneOf func(netip.Addr) int
	iso    *Isolator
}

// NewResolver returns the resolver of up with iso's credentials. While
// ready (nil: always) reports false, lookups fail at once.
func NewResolver(up Upstream, iso *Isolator, ready func() bool) *Resolver {
	return &Resolver{lanes: []Lane{{Upstream: up, Ready: ready}}, iso: iso}
}

// NewLaneResolver is NewResolver with several lanes, as Config.Lanes and
// Config.LaneOf: a workstation's lookups go out on its lane only, and
// fail at once while that lane is not ready.
func NewLaneResolver(lanes []Lane, laneOf func(netip.Addr) int, iso *Isolator) *Resolver {
	return &Resolver{lanes: lanes, laneOf: laneOf, iso: iso}
}

// lane is src's lane, nil while it is not ready.
func (r *Resolver) lane(src netip.Addr) *Lane {
	l := &r.lanes[0]
	if r.laneOf != nil {
		l = &r.lanes[r.laneOf(src)]
	}
	if l.Ready != nil && !l.Ready() {
		return nil
	}
	return l
}

// Resolve implements dns.Resolver.
func (r *Resolver) Resolve(ctx context.Context, src netip.Addr, name string) (netip.Addr, error) {
	src = src.Unmap()
	l := r.lane(src)
	if l == nil {
		return netip.Addr{}, errNotReady
	}
	a, err := l.Upstream.Resolve(ctx, name, r.iso.Auth(src, name))
	return a, classifyResolveErr(err)
}

// ResolvePTR implements dns.Resolver.
func (r *Resolver) ResolvePTR(ctx context.Context, src netip.Addr, ip netip.Addr) (string, error) {
	src = src.Unmap()
	l := r.lane(src)
	if l == nil {
		return "", errNotReady
	}
	name, err := l.Upstream.ResolvePTR(ctx, ip, r.iso.Auth(src, ip.String()))
	return name, classifyResolveErr(err)
}

// notFound marks a resolve failure that means "no such name" (Tor answers
// RESOLVE for a name that does not exist with host unreachable), so the
// DNS layer answers NXDOMAIN rather than SERVFAIL.
type notFound struct{ err error }

func (e notFound) Error() string  { return e.err.Error() }
func (e notFound) Unwrap() error  { return e.err }
func (e notFound) NotFound() bool { return true }

func classifyResolveErr(err error) error {
	var re *socks.ReplyError
	if errors.As(err, &re) && re.Reply == socks.ReplyHostUnreachable {
		return notFound{err}
	}
	return err
}

var errNotReady = errors.New("tunnel: tor not ready")
