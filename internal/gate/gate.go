// Package gate is a router's one readiness gate. Every part that must
// work for the router to forward (the packet loop, the LAN links, Tor,
// the SOCKS upstream) reports into it when its state changes; everything
// that must fail closed reads one answer from it: a new flow's RST, DNS's
// SERVFAIL, Ready, /readyz and WaitReady. Nothing polls: a change wakes
// the waiters through Changed.
package gate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Part is one reporting part of a Gate, in the order New was given them.
type Part int

// Gate holds every part's state. The zero value is not usable; New
// returns one with every part not ready ("not reported yet").
type Gate struct {
	names []string
	extra func() error // a condition only a caller can evaluate, read per decision

	down atomic.Uint64 // bit p set: part p not ready; read per flow and per query

	mu      sync.Mutex
	why     []error       // guarded by mu; nil: the part is ready
	changed chan struct{} // guarded by mu; closed and replaced on every change
}

// ErrNotReported is the state of a part before its first report.
var ErrNotReported = errors.New("not reported yet")

// New returns a gate of the named parts, none of them ready yet. extra,
// if not nil, is one more condition that cannot report changes (an
// embedder's callback): Ready and Err evaluate it on each call, so it
// must be cheap.
// At most MaxParts parts.
func New(extra func() error, parts ...string) *Gate {
	if len(parts) > MaxParts {
		panic("gate: more than MaxParts parts")
	}
	g := &Gate{names: parts, extra: extra, why: make([]error, len(parts)), changed: make(chan struct{})}
	for i := range g.why {
		g.why[i] = ErrNotReported
	}
	g.down.Store(allParts(len(parts)))
	return g
}

// MaxParts bounds a gate's parts: their states are the bits of one
// atomic word, so that a subset is read with one load.
const MaxParts = 64

// Mask is a set of parts, for ReadyOf and ErrOf.
type Mask uint64

// MaskOf is the set of parts ps.
func MaskOf(ps ...Part) Mask {
	var m Mask
	for _, p := range ps {
		m |= 1 << p
	}
	return m
}

// allParts is the bit set of the first n parts (n = 64: every bit).
func allParts(n int) uint64 { return uint64(1)<<n - 1 }

// Set reports part's state: nil when it can carry traffic, else why not.
// Waiters wake only when readiness or the reason changes.
func (g *Gate) Set(p Part, why error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.why[p]
	if old == why || (old != nil && why != nil && old.Error() == why.Error()) {
		return
	}
	g.why[p] = why
	if why == nil {
		g.down.And(^(uint64(1) << p))
	} else {
		g.down.Or(uint64(1) << p)
	}
	close(g.changed)
	g.changed = make(chan struct{})
}

// Ready reports whether every part is ready (and extra agrees): one
// atomic load while a part is not.
func (g *Gate) Ready() bool {
	return g.down.Load() == 0 && (g.extra == nil || g.extra() == nil)
}

// ReadyOf reports whether the parts in m are ready (and extra agrees):
// what one Tor instance's workstations need, while another instance's
// parts may be down. One atomic load while a part is not.
func (g *Gate) ReadyOf(m Mask) bool {
	return g.down.Load()&uint64(m) == 0 && (g.extra == nil || g.extra() == nil)
}

// Err is nil when Ready, else why not: the first part not ready, by name.
func (g *Gate) Err() error { return g.ErrOf(Mask(allParts(len(g.names)))) }

// ErrOf is nil when ReadyOf(m), else why not: the first part of m not
// ready, by name.
func (g *Gate) ErrOf(m Mask) error {
	g.mu.Lock()
	for i, e := range g.why {
		if e != nil && m&(1<<i) != 0 {
			g.mu.Unlock()
			return &NotReadyError{Part: g.names[i], Err: e}
		}
	}
	g.mu.Unlock()
	if g.extra != nil {
		return g.extra()
	}
	return nil
}

// PartErr is part p's last report.
func (g *Gate) PartErr(p Part) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.why[p]
}

// Changed returns a channel closed at the next change of any part.
func (g *Gate) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

// Wait blocks until the parts are ready or ctx is done (then it returns
// ctx's error joined with the reason). extra is not waited for: it
// reports no changes.
func (g *Gate) Wait(ctx context.Context) error {
	for {
		ch := g.Changed()
		if g.down.Load() == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ctx.Err(), g.Err())
		}
	}
}

// NotReadyError names the part that is not ready.
type NotReadyError struct {
	Part string
	Err  error
}

func (e *NotReadyError) Error() string { return e.Part + ": " + e.Err.Error() }
func (e *NotReadyError) Unwrap() error { return e.Err }
