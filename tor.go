package torgate

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/torgate/torgate/internal/torctl"
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

// torConfig maps the upstream choice onto torctl's Config; nil for plain
// SOCKS.
func (c *Config) torConfig() *torctl.Config {
	switch {
	case c.ManagedTor != nil:
		m := c.ManagedTor
		return &torctl.Config{DataDir: m.DataDir, TorPath: m.TorPath, TorrcFile: m.TorrcFile,
			TorrcLines: m.TorrcLines, User: m.User, RestartBackoff: m.RestartBackoff}
	case c.AttachedTor != nil:
		a := c.AttachedTor
		return &torctl.Config{ControlAddr: a.ControlAddr, ControlPassword: a.ControlPassword, SocksAddr: a.SocksAddr}
	}
	return nil
}

// torSide is the Tor part of a Router. tor is nil with plain SOCKS.
type torSide struct {
	tor    *torctl.Tor
	mode   string
	newnym *prometheus.CounterVec // new identities carried out, by scope
	downs  prometheus.Counter     // times Tor went away
}

// newTorSide builds (but does not start) the Tor of cfg. onDown ends the
// flows; it runs on torctl's goroutine after Ready turned false.
// onConnect runs on every new control connection (onion services).
func newTorSide(cfg *Config, onProgress func(torctl.Bootstrap), onDown func(), onConnect func(context.Context, *torctl.Conn) error) (*torSide, error) {
	s := &torSide{mode: ModeSocks}
	s.newnym = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "new_identity_total", Help: "New identities carried out, by scope (source or all).",
	}, []string{"scope"})
	s.newnym.WithLabelValues("source")
	s.newnym.WithLabelValues("all")
	s.downs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tor_down_total", Help: "Times Tor went away (process exited, control connection lost, or hung): each time every open flow was ended.",
	})
	tc := cfg.torConfig()
	if tc == nil {
		return s, nil
	}
	s.mode = ModeManaged
	if tc.ControlAddr != "" {
		s.mode = ModeAttach
	}
	tc.Logger = cfg.Logger.With("component", "torctl")
	tc.OnProgress = onProgress
	tc.OnConnect = onConnect
	tc.OnDown = func() {
		s.downs.Inc()
		onDown()
	}
	t, err := torctl.New(*tc)
	if err != nil {
		return nil, err
	}
	s.tor = t
	cfg.Upstream = t.DialSocks
	return s, nil
}

// metrics returns Tor's collectors; ready is the router's readiness.
func (s *torSide) metrics(ready func() error) []prometheus.Collector {
	progress := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tor_bootstrap_progress", Help: "Tor's bootstrap progress in percent (100 with a plain SOCKS upstream).",
	}, func() float64 {
		if s.tor == nil {
			return 100
		}
		return float64(s.tor.Status().Bootstrap.Progress)
	})
	readyGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ready", Help: "1 when torgate forwards: Tor bootstrapped with a live circuit and the TUN up; 0 while it refuses.",
	}, func() float64 {
		if ready() != nil {
			return 0
		}
		return 1
	})
	hangs := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tor_unresponsive_total", Help: "Times Tor left a control-port poll unanswered past the probe deadline (stopped or hung).",
	}, func() float64 {
		if s.tor == nil {
			return 0
		}
		return float64(s.tor.Hangs())
	})
	return []prometheus.Collector{progress, readyGauge, hangs, s.newnym, s.downs}
}

// TorSwitchesUser reports whether the managed Tor runs as another user
// (ManagedTor.User): whoever drops torgate's privileges must then keep
// CAP_SETUID and CAP_SETGID (to restart it) and CAP_KILL (to stop it).
func (r *Router) TorSwitchesUser() bool { return r.tor.tor != nil && r.tor.tor.SwitchesUser() }

// Mode names how the router reaches Tor: ModeManaged, ModeAttach or
// ModeSocks.
func (r *Router) Mode() string { return r.tor.mode }

// Ready is nil when the router forwards: the packet loop runs, every LAN
// interface is up, Tor is bootstrapped with a live circuit (plain SOCKS:
// the SOCKS port answers) and Config.Ready, if set, agrees. Otherwise it
// says why; new flows then get a RST and DNS a SERVFAIL. It is the one
// readiness gate's answer, the same that flows and DNS read.
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
	if t := r.tor.tor; t != nil {
		if d := t.Diagnosis(); d != "" {
			return d
		}
		if err := t.ReadyErr(); err != nil {
			return err.Error()
		}
	}
	if err := r.UpstreamErr(); err != nil {
		return err.Error()
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
// port, sends Tor NEWNYM (new circuits, DNS cache cleared). Within Tor's
// NEWNYM rate limit (one per NewNymInterval) it does neither and returns
// a *RateLimitError (errors.Is ErrRateLimited), so that a retry does
// both.
func (r *Router) NewIdentityAll(ctx context.Context) error {
	t := r.tor.tor
	if t != nil {
		if w := t.NewNymWait(); w > 0 {
			return &RateLimitError{Wait: w}
		}
	}
	r.iso.NewIdentityAll()
	r.tor.newnym.WithLabelValues("all").Inc()
	if t == nil {
		return nil
	}
	if err := t.NewNym(ctx); err != nil {
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
