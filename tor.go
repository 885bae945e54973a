package torgate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/torgate/torgate/internal/assign"
	"github.com/torgate/torgate/internal/gate"
	"github.com/torgate/torgate/internal/torctl"
	"github.com/torgate/torgate/internal/upstream"
	"github.com/torgate/torgate/socks"
)

// This file ties Tor to the router: the upstream choice (a managed Tor,
// an attached Tor or plain SOCKS), readiness, ending every flow when Tor
// goes away, new identities, and Tor's metrics. torctl does the talking
// to Tor; the policy is here so that every embedder gets it, not only
// cmd/torgate.

// ManagedTor configures a tor process the Router starts, supervises
// (restarting it when it exits) and stops on Close.
type ManagedTor struct {
	// DataDir is tor's DataDirectory (required). Its sockets, cookie and
	// generated torrc live beside it in DataDir+"-run".
	DataDir string
	// TorPath is the tor binary; empty: tor from $PATH, /usr/sbin, /usr/bin.
	TorPath string
	// TorrcFile and TorrcLines are extra torrc lines (bridges, pluggable
	// transports). The router's own SocksPort, ControlSocket,
	// DataDirectory and CookieAuthentication override theirs.
	TorrcFile  string
	TorrcLines []string
	// User runs tor as this account (needs CAP_SETUID/CAP_SETGID at every
	// start, CAP_KILL to stop it). Empty: torgate's own user.
	User string
	// RestartBackoff is the first wait before restarting a tor that exits
	// again soon after a restart. Zero: 1s.
	RestartBackoff time.Duration
	// Instances is how many tor processes to run (docs/operations.md,
	// "Several Tor instances"); 0 or 1: one. Each workstation is served
	// by one instance for good (Router.TorInstance): its flows, DNS, SOCKS
	// ports and control-port answers all go through it. An instance that
	// dies or hangs fails closed for its own workstations only (their
	// flows get RSTs, their DNS SERVFAIL) until it is back; they are never
	// moved to another instance. Instance 0 keeps DataDir; instance k > 0
	// uses DataDir-k. Every instance gets the same torrc lines, so they
	// must not name fixed ports beyond those torgate sets. At most
	// MaxTorInstances.
	Instances int
}

// AttachedTor configures the use of a Tor that runs already, through its
// control port.
type AttachedTor struct {
	// ControlAddr is the control port: "IP:port", "/path" or "unix:/path".
	ControlAddr string
	// ControlPassword is for HashedControlPassword; empty uses the cookie
	// Tor names (SAFECOOKIE) or no authentication.
	ControlPassword string
	// SocksAddr is the SocksPort to use instead of asking Tor for it.
	// Optional.
	SocksAddr string
}

// Modes, as Router.Mode names them.
const (
	ModeManaged = "managed"
	ModeAttach  = "attach"
	ModeSocks   = "socks"
)

// MaxTorInstances bounds ManagedTor.Instances: each tor process costs
// tens of MB and its own circuits, and the readiness gate holds two parts
// per instance.
const MaxTorInstances = 16

// instances is how many Tors cfg runs: ManagedTor.Instances, else one
// (an attached Tor, or plain SOCKS).
func (c *Config) instances() int {
	if c.ManagedTor != nil && c.ManagedTor.Instances > 1 {
		return c.ManagedTor.Instances
	}
	return 1
}

// torConfig maps the upstream choice onto torctl's Config for instance k;
// nil for plain SOCKS. Instance 0 keeps DataDir, so that a deployment
// that grows to several instances keeps its tor's state (guards,
// consensus); instance k > 0 lives in DataDir-k (its sockets in
// DataDir-k-run).
func (c *Config) torConfig(k int) *torctl.Config {
	switch {
	case c.ManagedTor != nil:
		m := c.ManagedTor
		dir := m.DataDir
		if k > 0 {
			dir = fmt.Sprintf("%s-%d", strings.TrimRight(dir, "/"), k)
		}
		return &torctl.Config{DataDir: dir, TorPath: m.TorPath, TorrcFile: m.TorrcFile,
			TorrcLines: m.TorrcLines, User: m.User, RestartBackoff: m.RestartBackoff}
	case c.AttachedTor != nil:
		a := c.AttachedTor
		return &torctl.Config{ControlAddr: a.ControlAddr, ControlPassword: a.ControlPassword, SocksAddr: a.SocksAddr}
	}
	return nil
}

// torSide is the Tor part of a Router: its Tor instances, and which
// workstation uses which (pick).
type torSide struct {
	mode   string
	inst   []*torInstance         // one per Tor; one with an attached Tor or plain SOCKS
	tor    *torctl.Tor            // inst[0]'s: onion services, TorSwitchesUser; nil with plain SOCKS
	picker *assign.Picker         // nil with one instance
	newnym *prometheus.CounterVec // new identities carried out, by scope

	doneOnce sync.Once
	anyDone  chan struct{} // set by doneOnce: closed when any instance's supervisor stopped
}

// torInstance is one Tor and the way to it: its SOCKS port behind its own
// liveness watch, and its two parts of the readiness gate. Its
// workstations are served while mask (the router's shared parts and its
// own) is ready, whatever the other instances do.
type torInstance struct {
	k      int
	tor    *torctl.Tor                             // nil with plain SOCKS
	dial   func(context.Context) (net.Conn, error) // its SOCKS port
	watch  *upstream.Watch                         // set by buildUpstream
	dialer *socks.Dialer                           // set by buildUpstream; every flow and lookup of its workstations leaves through it
	part   gate.Part                               // its Tor's readiness; part+1 its SOCKS port's
	mask   gate.Mask                               // what its workstations need
	downs  prometheus.Counter                      // times its Tor went away
}

// partNames are the readiness gate's part names for n instances, in
// Part order: the shared parts, then each instance's Tor and SOCKS port
// (plain "tor" and "upstream" with one instance, as before there were
// several).
func partNames(n int) []string {
	names := []string{"router", "lan"}
	if n == 1 {
		return append(names, "tor", "upstream")
	}
	for k := range n {
		names = append(names, fmt.Sprintf("tor %d", k), fmt.Sprintf("upstream %d", k))
	}
	return names
}

// newTorSide builds (but does not start) the Tors of cfg. onDown(k) ends
// instance k's flows; it runs on torctl's goroutine after k's Ready
// turned false. onConnect runs on every new control connection of
// instance 0 (onion services).
func newTorSide(cfg *Config, onProgress func(int, torctl.Bootstrap), onDown func(int), onConnect func(context.Context, *torctl.Conn) error) (*torSide, error) {
	s := &torSide{mode: ModeSocks}
	s.newnym = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "new_identity_total", Help: "New identities carried out, by scope (source or all).",
	}, []string{"scope"})
	s.newnym.WithLabelValues("source")
	s.newnym.WithLabelValues("all")
	n := cfg.instances()
	for k := range n {
		in := &torInstance{k: k, part: partTor + gate.Part(2*k), dial: cfg.Upstream}
		in.mask = gate.MaskOf(partRouter, partLAN, in.part, in.part+1)
		in.downs = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tor_down_total", Help: "Times Tor went away (process exited, control connection lost, or hung): each time every open flow of its workstations was ended.",
		})
		s.inst = append(s.inst, in)
		tc := cfg.torConfig(k)
		if tc == nil {
			continue
		}
		s.mode = ModeManaged
		if tc.ControlAddr != "" {
			s.mode = ModeAttach
		}
		tc.Logger = cfg.Logger.With("component", "torctl")
		if n > 1 {
			tc.Logger = tc.Logger.With("tor_instance", k)
		}
		if onProgress != nil {
			tc.OnProgress = func(b torctl.Bootstrap) { onProgress(k, b) }
		}
		if k == 0 {
			tc.OnConnect = onConnect
		}
		tc.OnDown = func() {
			in.downs.Inc()
			onDown(k)
		}
		t, err := torctl.New(*tc)
		if err != nil {
			for _, done := range s.inst[:k] {
				done.tor.Close()
			}
			if n > 1 {
				return nil, fmt.Errorf("tor instance %d: %w", k, err)
			}
			return nil, err
		}
		in.tor, in.dial = t, t.DialSocks
	}
	s.tor = s.inst[0].tor
	if n > 1 {
		key, err := assign.Key(cfg.StateDir, cfg.IsolationSecret)
		if err != nil {
			for _, in := range s.inst {
				in.tor.Close()
			}
			return nil, err
		}
		s.picker = assign.New(key, n)
	}
	return s, nil
}

// done is closed once any instance's Tor supervisor stopped on its own;
// nil with plain SOCKS (never closed).
func (s *torSide) done() <-chan struct{} {
	if s.tor == nil {
		return nil
	}
	if len(s.inst) == 1 {
		return s.tor.Done()
	}
	s.doneOnce.Do(func() {
		s.anyDone = make(chan struct{})
		var once sync.Once
		for _, in := range s.inst {
			// Each watcher ends with its Tor: Close stops every supervisor.
			go func() {
				<-in.tor.Done()
				once.Do(func() { close(s.anyDone) })
			}()
		}
	})
	return s.anyDone
}

// pick is the instance that serves workstation who (its identity: on a
// LAN its machine, on a TUN its address).
func (s *torSide) pick(who netip.Addr) *torInstance {
	if s.picker == nil {
		return s.inst[0]
	}
	return s.inst[s.picker.Pick(who)]
}

// metrics returns Tor's collectors; ready is the router's readiness,
// laneReady an instance's. With several instances the per-instance
// collectors carry instance="0".."N-1".
func (s *torSide) metrics(ready func() error, laneReady func(*torInstance) bool) []prometheus.Collector {
	readyGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ready", Help: "1 when torgate forwards for every workstation: every Tor bootstrapped with a live circuit and the TUN up; 0 while it refuses some.",
	}, func() float64 {
		if ready() != nil {
			return 0
		}
		return 1
	})
	cs := []prometheus.Collector{readyGauge, s.newnym}
	for _, in := range s.inst {
		own := []prometheus.Collector{in.progressGauge(), in.hangsCounter(), in.downs}
		own = append(own, in.watch.Metrics()...)
		if len(s.inst) == 1 {
			cs = append(cs, own...)
			continue
		}
		own = append(own, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tor_ready", Help: "1 while this Tor instance's workstations are served (its Tor bootstrapped with a live circuit, its SOCKS port answering, the router up); 0 while they are refused.",
		}, func() float64 {
			if laneReady(in) {
				return 1
			}
			return 0
		}))
		labels := prometheus.Labels{"instance": strconv.Itoa(in.k)}
		for _, c := range own {
			cs = append(cs, prometheus.WrapCollectorWith(labels, c))
		}
	}
	return cs
}

func (in *torInstance) progressGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tor_bootstrap_progress", Help: "Tor's bootstrap progress in percent (100 with a plain SOCKS upstream).",
	}, func() float64 {
		if in.tor == nil {
			return 100
		}
		return float64(in.tor.Status().Bootstrap.Progress)
	})
}

func (in *torInstance) hangsCounter() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tor_unresponsive_total", Help: "Times Tor left a control-port poll unanswered past the probe deadline (stopped or hung).",
	}, func() float64 {
		if in.tor == nil {
			return 0
		}
		return float64(in.tor.Hangs())
	})
}

// TorSwitchesUser reports whether the managed Tor runs as another user
// (ManagedTor.User): whoever drops torgate's privileges must then keep
// CAP_SETUID and CAP_SETGID (to restart it) and CAP_KILL (to stop it).
// Every instance runs as the same user.
func (r *Router) TorSwitchesUser() bool { return r.tor.tor != nil && r.tor.tor.SwitchesUser() }

// TorInstances is how many Tors the router uses (ManagedTor.Instances;
// one with an attached Tor or plain SOCKS).
func (r *Router) TorInstances() int { return len(r.tor.inst) }

// TorInstance is the Tor instance, 0 to TorInstances()-1, that carries
// every connection, lookup and control-port answer of the workstation
// that uses address src. The assignment is a keyed hash of the
// workstation's identity (on a LAN its machine, so all its addresses;
// on a TUN its address), fixed while the router runs and, with a
// StateDir, across runs. It needs no known workstation.
func (r *Router) TorInstance(src netip.Addr) int {
	return r.tor.pick(r.who(src)).k
}

// who is the workstation identity of address src: on a LAN the machine
// that holds it (src itself if none does), on a TUN src.
func (r *Router) who(src netip.Addr) netip.Addr {
	src = src.Unmap()
	if r.lan != nil {
		if id, ok := r.lan.Identity(src); ok {
			return id
		}
	}
	return src
}

// TorInstanceErr is instance k's readiness: nil while its workstations
// are served, else why not (its Tor, its SOCKS port, or a shared part
// such as the packet loop). Ready is nil when every instance's is.
func (r *Router) TorInstanceErr(k int) error { return r.gate.ErrOf(r.tor.inst[k].mask) }

// Mode names how the router reaches Tor: ModeManaged, ModeAttach or
// ModeSocks.
func (r *Router) Mode() string { return r.tor.mode }

// Ready is nil when the router forwards: the packet loop runs, every LAN
// interface is up, Tor is bootstrapped with a live circuit (plain SOCKS:
// the SOCKS port answers) and Config.Ready, if set, agrees. Otherwise it
// says why; new flows then get a RST and DNS a SERVFAIL. It is the one
// readiness gate's answer, the same that flows and DNS read.
//
// With several Tor instances Ready is nil only while every instance is
// ready: it answers "is every workstation served". One instance down
// makes it say which; that instance's workstations are refused, the
// others' are served (TorInstanceErr says which is which).
func (r *Router) Ready() error { return r.gate.Err() }

// WaitReady blocks until the started router forwards (Ready is nil) or
// ctx is done: then it returns an error with what is known of why not
// (Tor's last problem, likely causes, next step). It waits on the parts'
// reports, not by polling.
func (r *Router) WaitReady(ctx context.Context) error {
	if err := r.gate.Wait(ctx); err != nil {
		return fmt.Errorf("%w: %s", ctx.Err(), r.Diagnosis())
	}
	return nil
}

// Diagnosis says why Tor is not ready, with hints once its bootstrap
// stalled; "" when ready.
func (r *Router) Diagnosis() string {
	for _, in := range r.tor.inst {
		prefix := ""
		if len(r.tor.inst) > 1 {
			prefix = fmt.Sprintf("tor instance %d: ", in.k)
		}
		if t := in.tor; t != nil {
			if d := t.Diagnosis(); d != "" {
				return prefix + d
			}
			if err := t.ReadyErr(); err != nil {
				return prefix + err.Error()
			}
		}
		if err := in.watch.Err(); err != nil {
			return prefix + err.Error()
		}
	}
	if err := r.gate.Err(); err != nil {
		return err.Error()
	}
	return ""
}

// NewIdentity gives the workstation that uses address src new circuits:
// its next flows use new isolation credentials; other workstations keep
// theirs, and open flows their circuit. On a LAN the workstation is the
// machine src is bound to (all its addresses get new circuits), and an
// address no machine holds is ErrUnknownWorkstation. On a TUN a known
// workstation is a source that completed a TCP handshake with the router
// within the last hour (the proof that gives it its reserved shares,
// netstack.NewProof) or has a flow open; any other address is
// ErrUnknownWorkstation (a typo would otherwise report success and renew
// nothing).
func (r *Router) NewIdentity(src netip.Addr) error {
	who := src.Unmap()
	if r.lan != nil {
		id, ok := r.lan.Identity(who)
		if !ok {
			return fmt.Errorf("%w: no machine on the LAN holds %s", ErrUnknownWorkstation, src)
		}
		who = id
	} else if !r.proof.Has(who) && !r.tunnel.HasFlows(who) {
		return fmt.Errorf("%w: %s has opened no connection through torgate in the last hour", ErrUnknownWorkstation, src)
	}
	r.iso.NewIdentity(who)
	r.tor.newnym.WithLabelValues("source").Inc()
	return nil
}

// ErrUnknownWorkstation means no workstation uses the address named.
var ErrUnknownWorkstation = errors.New("unknown workstation")

// NewIdentityAll gives every source new credentials and, with a control
// port, sends Tor NEWNYM (new circuits, DNS cache cleared): every Tor
// instance. Within Tor's NEWNYM rate limit (one per NewNymInterval) of
// any instance it does neither and returns a *RateLimitError (errors.Is
// ErrRateLimited), so that a retry does both.
func (r *Router) NewIdentityAll(ctx context.Context) error {
	var wait time.Duration
	for _, in := range r.tor.inst {
		if in.tor != nil {
			wait = max(wait, in.tor.NewNymWait())
		}
	}
	if wait > 0 {
		return &RateLimitError{Wait: wait}
	}
	r.iso.NewIdentityAll()
	r.tor.newnym.WithLabelValues("all").Inc()
	var errs []error
	for _, in := range r.tor.inst {
		if in.tor == nil {
			continue
		}
		if err := in.tor.NewNym(ctx); err != nil {
			if len(r.tor.inst) > 1 {
				err = fmt.Errorf("tor instance %d: %w", in.k, err)
			}
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("new flows use new circuits, but NEWNYM was not sent: %w", err)
	}
	return nil
}

// NewNymInterval is Tor's NEWNYM rate limit: one per this long. Tor
// answers an early NEWNYM with OK and delays it silently, so the router
// keeps the window itself.
const NewNymInterval = 10 * time.Second

// ErrRateLimited is the error NewIdentityAll returns within Tor's NEWNYM
// rate limit (errors.Is); errors.As gives the *RateLimitError.
var ErrRateLimited = errors.New("tor rate-limits NEWNYM")

// RateLimitError says how long until Tor accepts the next NEWNYM.
type RateLimitError struct {
	Wait time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("tor rate-limits NEWNYM to one per %v: retry in %v", NewNymInterval, e.Wait.Round(100*time.Millisecond))
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// errTorStopped ends Run when Tor's supervisor stops on its own.
var errTorStopped = errors.New("tor supervisor stopped")
