// Package fair shares a bounded pool among workstations that may be
// hostile, so that no one of them, and no crowd of spoofed ones, can take
// all of it.
//
// The rule (Admit) has three parts:
//
//   - a per-source cap: one address holds at most PerSource slots;
//   - a reserve: the last Reserve slots of the pool go only to sources
//     holding fewer than MinShare slots;
//   - proof: of those, only to sources that have recently completed a TCP
//     handshake with us (Proof), which a spoofed address cannot do.
//
// Why not per-/24 (v4) or per-/64 (v6) aggregation: the workstations of a
// gateway share one LAN prefix (Whonix: 10.152.152.0/18), so an aggregate
// bucket would put the hostile workstation and its neighbours in the same
// bucket. Why not a dynamic fair share (pool/active sources): a spoofer
// makes the number of active sources whatever it likes, driving every
// share to the minimum while holding the pool with its crowd. What a
// spoofer cannot do on a switched LAN is receive our SYN-ACK for an
// address it does not own, so a completed handshake is the one thing
// that tells a real workstation from a forged one. Spoofed sources (any
// number) therefore hold at most the bulk of the pool (Global-Reserve);
// a single real hostile source at most PerSource; and every proven
// workstation can still get MinShare slots unless Reserve/MinShare
// proven hostile addresses hold theirs. A workstation never seen before
// competes with spoofers for the bulk until its first handshake
// completes: that is the degradation we accept.
package fair

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Limits configures a Pool.
type Limits struct {
	// Global caps the slots held by all sources together.
	Global int
	// PerSource caps one address's slots.
	PerSource int
	// Reserve is how many of the Global slots only proven sources below
	// MinShare may take.
	Reserve int
	// MinShare is what every proven source can get from the reserve.
	MinShare int
}

// Check reports whether l is consistent.
func (l Limits) Check() error {
	switch {
	case l.Global <= 0 || l.PerSource <= 0:
		return fmt.Errorf("fair: global %d and per-source %d must be positive", l.Global, l.PerSource)
	case l.PerSource > l.Global:
		return fmt.Errorf("fair: per-source %d above global %d", l.PerSource, l.Global)
	case l.Reserve < 0 || l.Reserve >= l.Global:
		return fmt.Errorf("fair: reserve %d outside 0..%d", l.Reserve, l.Global-1)
	case l.MinShare < 0 || l.MinShare > l.PerSource:
		return fmt.Errorf("fair: min share %d outside 0..%d", l.MinShare, l.PerSource)
	}
	return nil
}

// Default derives the reserve and min share from a global and per-source
// cap: a quarter of the pool in reserve, a 32nd of that (at least 1) per
// proven source, so that 32 proven workstations fit in the reserve alone.
func Default(global, perSource int) Limits {
	l := Limits{Global: global, PerSource: min(perSource, global)}
	l.Reserve = global / 4
	l.MinShare = max(1, min(l.Reserve/32, l.PerSource))
	if l.Reserve == 0 {
		l.MinShare = 0
	}
	return l
}

// Admit reports whether a source holding held slots may take one more
// from a pool with total slots held.
func (l Limits) Admit(total, held int, proven bool) bool {
	if total >= l.Global || held >= l.PerSource {
		return false
	}
	if total < l.Global-l.Reserve {
		return true
	}
	return proven && held < l.MinShare
}

// Pool counts slots per source under Limits. The zero Pool is not usable;
// make one with NewPool. Safe for concurrent use.
type Pool struct {
	lim    Limits
	proven func(src netip.Addr) bool // nil: no source is proven

	mu    sync.Mutex
	held  map[netip.Addr]int // guarded by mu; no zero entries
	total int                // guarded by mu
}

// NewPool returns a pool under lim. proven tells the sources the reserve
// is for (a Proof's Has, or what else shows a source is real, such as a
// LAN's own neighbour binding); it is called on every Acquire, outside
// the pool's lock. nil: no source is proven, and the reserve stays unused.
func NewPool(lim Limits, proven func(src netip.Addr) bool) (*Pool, error) {
	if err := lim.Check(); err != nil {
		return nil, err
	}
	return &Pool{lim: lim, proven: proven, held: make(map[netip.Addr]int)}, nil
}

// Limits returns the pool's limits.
func (p *Pool) Limits() Limits { return p.lim }

// Acquire takes a slot for src, or reports false.
func (p *Pool) Acquire(src netip.Addr) bool {
	ok, _ := p.Take(src)
	return ok
}

// Take is Acquire that also says why it refused: atShare when src held
// its PerSource slots already, else the pool (or all of it but the
// reserve src may not take) was full. Both come from one look under the
// lock, so a slot released meanwhile cannot blur them.
func (p *Pool) Take(src netip.Addr) (ok, atShare bool) {
	src = src.Unmap()
	proven := p.proven != nil && p.proven(src)
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.held[src]
	if !p.lim.Admit(p.total, h, proven) {
		return false, h >= p.lim.PerSource
	}
	p.held[src] = h + 1
	p.total++
	return true, false
}

// Release gives back a slot src acquired.
func (p *Pool) Release(src netip.Addr) {
	src = src.Unmap()
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.held[src]
	if h <= 1 {
		delete(p.held, src)
	} else {
		p.held[src] = h - 1
	}
	if h > 0 {
		p.total--
	}
}

// Held returns the slots src holds and the pool's total.
func (p *Pool) Held(src netip.Addr) (held, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[src.Unmap()], p.total
}

// Proof remembers sources that completed a TCP handshake recently. It is
// bounded: past Max entries the stalest is forgotten (a crowd of real
// addresses, which a hostile host could only claim by answering for each,
// pushes out the oldest proof, never grows memory).
type Proof struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu   sync.Mutex
	seen map[netip.Addr]time.Time // guarded by mu
}

// NewProof remembers a source for ttl after its last handshake, at most
// max sources. now is the clock (time.Now if nil).
func NewProof(ttl time.Duration, max int, now func() time.Time) *Proof {
	if now == nil {
		now = time.Now
	}
	return &Proof{ttl: ttl, max: max, now: now, seen: make(map[netip.Addr]time.Time)}
}

// Mark records a completed handshake from src.
func (p *Proof) Mark(src netip.Addr) {
	if p == nil {
		return
	}
	src = src.Unmap()
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.seen[src]; !ok && len(p.seen) >= p.max {
		p.evictLocked(now)
	}
	p.seen[src] = now
}

// evictLocked drops expired entries, or failing that the oldest one. It
// walks the map: it runs only when the map is full, which takes max real
// hosts.
func (p *Proof) evictLocked(now time.Time) {
	var oldest netip.Addr
	var oldestT time.Time
	for a, t := range p.seen {
		if now.Sub(t) > p.ttl {
			delete(p.seen, a)
			continue
		}
		if oldestT.IsZero() || t.Before(oldestT) {
			oldest, oldestT = a, t
		}
	}
	if len(p.seen) >= p.max {
		delete(p.seen, oldest)
	}
}

// Has reports whether src completed a handshake within the TTL.
func (p *Proof) Has(src netip.Addr) bool {
	if p == nil {
		return false
	}
	src = src.Unmap()
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.seen[src]
	if ok && now.Sub(t) > p.ttl {
		delete(p.seen, src)
		return false
	}
	return ok
}
