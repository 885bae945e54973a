package lan

import (
	"net/netip"
	"time"

	"github.com/torgate/torgate/internal/vnet"
)

// Neighbour resolution, per link (Linux's neighbour state machine, cut to
// what a gateway that only ever answers needs), and the one thing that
// binds an address to a machine:
//
//	incomplete: solicited up to maxProbes times probeInterval apart,
//	            holding up to queuePerNeighbour packets each way; no
//	            answer -> failed
//	reachable:  bound: the MAC answered our own solicitation (an ARP
//	            reply to our request, a solicited NA to our MAC) within
//	            staleAfter; used as is
//	probing:    still bound and used, but confirmation is older than
//	            staleAfter and packets went to it since, or another MAC
//	            claimed the address: unicast probes, maxProbes
//	            unanswered -> failed
//	failed:     packets dropped (no_neighbour) for failedHold, then the
//	            entry goes and the next packet resolves again; a packet
//	            from the address starts a new resolution at once
//
// An address is bound to a MAC only by torgate's own resolution, never by
// what a station announces (a request, a gratuitous ARP, an unsolicited
// NA): an announcement from another MAC only makes torgate probe the MAC
// it has, and the address moves only when that one stops answering. A
// packet from an address that is not bound waits (inbound queue, bounded)
// until its resolution answers from the packet's own MAC: nothing reaches
// the stack, let alone Tor, from a source that has not shown it receives
// our frames. A packet from an address bound to another MAC is a counted
// drop (spoofed_source).
//
// Bounds: at most maxPending incomplete entries (a new one pushes out the
// oldest, so a flood of made-up senders holds each slot for moments while
// a real station answers in a LAN round trip), at most maxNeighbours
// bound ones, which only an entry idle for protectedIdle makes room for
// (a flood never evicts a machine that worked in the last hour), and at
// most maxAddrsPerMachine bound addresses per MAC (a machine answering
// for hundreds of addresses recycles its own).
const (
	probeInterval      = time.Second
	maxProbes          = 3
	staleAfter         = 30 * time.Second
	failedHold         = 20 * time.Second
	idleExpiry         = time.Hour // unused bound entries go
	protectedIdle      = time.Hour // a bound entry used more recently is never evicted
	queuePerNeighbour  = 3         // Linux unres_qlen_bytes ~ 3 packets
	maxQueuedTotal     = 1024      // all links, MTU-sized: ~1.5 MiB
	heldPerNeighbour   = 4         // inbound packets waiting for their source's proof
	maxHeldTotal       = 256       // all links: ~400 KiB
	maxNeighbours      = 4096      // bound entries, per link
	maxPending         = 512       // incomplete entries, per link
	maxAddrsPerMachine = 32        // bound addresses of one MAC (v4, v6, temporary v6)
	// New machines (a MAC with no bound address) a link admits: a burst
	// of newMachineBurst, then one per newMachineEvery. A station that
	// forges MACs and answers for each can otherwise be any number of
	// workstations, each with its own circuits and shares; at this rate
	// it makes at most 60 new circuits' worth of identities a minute, and
	// machines already admitted never wait for it.
	newMachineBurst = 64
	newMachineEvery = time.Second
	tickInterval    = 250 * time.Millisecond
)

type neighState uint8

const (
	stateIncomplete neighState = iota
	stateReachable
	stateProbing
	stateFailed
	numStates
)

var stateNames = [numStates]string{"incomplete", "reachable", "probing", "failed"}

type neigh struct {
	state     neighState
	mac       mac       // bound MAC (reachable, probing)
	seq       uint64    // incomplete: which resolution of the link this is (pendingQ)
	confirmed time.Time // last confirmation
	used      time.Time // last packet sent to or accepted from it
	probes    int       // solicitations sent in this state
	next      time.Time // next probe (incomplete, probing) or expiry (failed)
	queue     []queued  // incomplete: frames waiting for the MAC
	held      []held    // incomplete: inbound packets waiting for proof
}

// queued is an outbound frame waiting for its destination's MAC: its
// virtio-net header (zero on a link without one) and the frame, flat.
type queued struct {
	hdr   [vnet.HdrLen]byte
	frame []byte
}

// held is an inbound packet from a source being resolved, and the MAC it
// came from: it goes to the stack only if that MAC is the one that answers.
type held struct {
	pk  *inPacket
	mac mac
}

func (e *neigh) bound() bool { return e.state == stateReachable || e.state == stateProbing }

// lookupLocked returns the neighbour entry for a, or nil.
// p.mu must be held.
func (p *port) lookupLocked(a netip.Addr) *neigh { return p.neigh[a] }

// newPendingLocked adds an incomplete entry for a, pushing out the oldest
// incomplete one when maxPending are resolving, in constant time per
// entry (a flood of made-up senders must not buy a scan of the table
// each). p.mu must be held.
func (p *port) newPendingLocked(a netip.Addr, now time.Time) *neigh {
	for p.pending >= maxPending && len(p.pendingQ) > 0 {
		// The oldest resolution still in flight. The queue keeps
		// addresses whose resolution ended since (lazy removal): an
		// address counts only if its entry is still the one queued.
		q := p.pendingQ[0]
		p.pendingQ = p.pendingQ[1:]
		if e := p.neigh[q.a]; e != nil && e.state == stateIncomplete && e.seq == q.seq {
			p.removeLocked(q.a, e)
			p.dev.drop(reasonTableFull, 1)
		}
	}
	if len(p.pendingQ) >= 2*maxPending {
		// Mostly finished resolutions: keep the live ones.
		live := p.pendingQ[:0]
		for _, q := range p.pendingQ {
			if e := p.neigh[q.a]; e != nil && e.state == stateIncomplete && e.seq == q.seq {
				live = append(live, q)
			}
		}
		p.pendingQ = append(make([]pendingRef, 0, maxPending), live...)
	}
	p.seq++
	e := &neigh{state: stateIncomplete, seq: p.seq, probes: 1, next: now.Add(probeInterval)}
	p.neigh[a] = e
	p.pending++
	p.pendingQ = append(p.pendingQ, pendingRef{a: a, seq: p.seq})
	return e
}

// pendingRef is a resolution in the order it started.
type pendingRef struct {
	a   netip.Addr
	seq uint64 // neigh.seq of the entry it was queued for
}

// removeLocked deletes a's entry and drops what it holds. p.mu must be held.
func (p *port) removeLocked(a netip.Addr, e *neigh) {
	p.setStateLocked(a, e, stateFailed)
	delete(p.neigh, a)
	p.dropHeldLocked(e)
	if n := len(e.queue); n > 0 {
		p.dev.queued.Add(int64(-n))
		p.dev.drop(reasonNoNeighbour, uint64(n))
		e.queue = nil
	}
}

// setStateLocked moves e to state, keeping the pending and per-machine
// counts. p.mu must be held.
func (p *port) setStateLocked(a netip.Addr, e *neigh, state neighState) {
	if e.state == stateIncomplete && state != stateIncomplete {
		p.pending--
	}
	if state == stateIncomplete && e.state != stateIncomplete {
		p.pending++
	}
	if e.bound() && !(state == stateReachable || state == stateProbing) {
		p.boundN--
		if p.perMAC[e.mac]--; p.perMAC[e.mac] <= 0 {
			delete(p.perMAC, e.mac)
		}
	}
	e.state = state
}

// dropHeldLocked drops e's inbound packets. p.mu must be held.
func (p *port) dropHeldLocked(e *neigh) {
	for _, h := range e.held {
		p.dev.putPacket(h.pk)
	}
	if n := len(e.held); n > 0 {
		p.dev.held.Add(int64(-n))
		p.dev.drop(reasonUnproven, uint64(n))
	}
	e.held = nil
}

// bindLocked binds a to m: e was resolving and m answered. It makes room
// among the bound entries (an idle one, or m's own least recently used
// address) or reports false. p.mu must be held.
func (p *port) bindLocked(a netip.Addr, e *neigh, m mac, now time.Time) bool {
	if p.perMAC[m] == 0 && !p.admitMachineLocked(now) {
		p.dev.drop(reasonMachineBudget, 1)
		return false
	}
	if p.perMAC[m] >= maxAddrsPerMachine {
		var victim netip.Addr
		var lru time.Time
		for k, o := range p.neigh {
			if o.bound() && o.mac == m && (!victim.IsValid() || o.used.Before(lru)) {
				victim, lru = k, o.used
			}
		}
		if victim.IsValid() {
			p.removeLocked(victim, p.neigh[victim])
		}
	}
	if p.boundN >= maxNeighbours {
		var victim netip.Addr
		for k, o := range p.neigh {
			if o.bound() && now.Sub(o.used) >= protectedIdle && now.Sub(o.confirmed) >= protectedIdle {
				victim = k
				break
			}
		}
		if !victim.IsValid() {
			p.dev.drop(reasonTableFull, 1)
			return false
		}
		p.removeLocked(victim, p.neigh[victim])
	}
	p.setStateLocked(a, e, stateReachable)
	e.mac, e.confirmed, e.used, e.probes = m, now, now, 0
	p.boundN++
	p.perMAC[m]++
	return true
}

// admitMachineLocked takes a token for a new machine. p.mu must be held.
func (p *port) admitMachineLocked(now time.Time) bool {
	if p.machineTokensAt.IsZero() {
		p.machineTokens, p.machineTokensAt = newMachineBurst, now
	}
	if add := int(now.Sub(p.machineTokensAt) / newMachineEvery); add > 0 {
		p.machineTokens = min(newMachineBurst, p.machineTokens+add)
		p.machineTokensAt = p.machineTokensAt.Add(time.Duration(add) * newMachineEvery)
	}
	if p.machineTokens == 0 {
		return false
	}
	p.machineTokens--
	return true
}

// confirm records that a answered our solicitation from m. An entry
// resolving a is bound to m; a bound entry is confirmed if m is its MAC,
// and another MAC's answer is a conflict that changes nothing (the bound
// MAC still answers). Queued frames go out; held packets from m go to the
// stack, others are dropped.
func (p *port) confirm(a netip.Addr, m mac) {
	if m.isMulticast() || m.isZero() || m == p.mac || !a.IsValid() {
		return
	}
	now := time.Now()
	p.mu.Lock()
	e := p.lookupLocked(a)
	switch {
	case e == nil, e.state == stateFailed:
		p.mu.Unlock()
		return
	case e.bound():
		if e.mac != m {
			p.mu.Unlock()
			p.dev.drop(reasonConflict, 1)
			return
		}
		p.setStateLocked(a, e, stateReachable)
		e.confirmed, e.probes = now, 0
		p.mu.Unlock()
		return
	}
	if !p.bindLocked(a, e, m, now) {
		p.removeLocked(a, e)
		p.mu.Unlock()
		return
	}
	q, hs := e.queue, e.held
	e.queue, e.held = nil, nil
	p.mu.Unlock()
	if len(q) > 0 {
		p.dev.queued.Add(int64(-len(q)))
		for _, o := range q {
			putEthDst(o.frame, m)
			p.writeOut(o.hdr[:], o.frame, nil)
		}
	}
	if len(hs) > 0 {
		p.dev.held.Add(int64(-len(hs)))
		for _, h := range hs {
			if h.mac != m {
				p.dev.putPacket(h.pk)
				p.dev.drop(reasonSpoofedSource, 1)
				continue
			}
			p.dev.deliver(h.pk)
		}
	}
}

// claim handles another station's word that a is at m (a request from a,
// a gratuitous ARP, an unsolicited NA): an unknown address is resolved
// (torgate asks, the owner answers); a bound one is probed if m is not
// its MAC. It never binds.
func (p *port) claim(a netip.Addr, m mac) {
	if m.isMulticast() || m.isZero() || m == p.mac || !a.IsValid() {
		return
	}
	now := time.Now()
	p.mu.Lock()
	e := p.lookupLocked(a)
	switch {
	case e == nil:
		p.newPendingLocked(a, now)
		p.mu.Unlock()
		p.solicit(a, nil)
		return
	case e.bound() && e.mac != m:
		p.contestLocked(a, e, now)
	}
	p.mu.Unlock()
}

// contestLocked starts probing e's MAC now, unless it answered within the
// last probeInterval: another MAC says it has the address. p.mu must be
// held.
func (p *port) contestLocked(a netip.Addr, e *neigh, now time.Time) {
	if e.state == stateReachable && now.Sub(e.confirmed) >= probeInterval {
		p.setStateLocked(a, e, stateProbing)
		e.probes, e.next = 0, now
	}
}

// admit decides an inbound packet from a that came from MAC m: pass (a is
// bound to m), hold (a is resolving: the packet waits, the caller must not
// reuse pk), or drop (bound to another MAC, or no room to wait).
func (p *port) admit(a netip.Addr, m mac, pk *inPacket) (pass, holding bool) {
	now := time.Now()
	p.mu.Lock()
	e := p.lookupLocked(a)
	if e != nil && e.bound() {
		if e.mac == m {
			e.used = now
			p.mu.Unlock()
			return true, false
		}
		p.contestLocked(a, e, now)
		p.mu.Unlock()
		p.dev.drop(reasonSpoofedSource, 1)
		return false, false
	}
	start := false
	if e == nil || e.state == stateFailed {
		if e != nil {
			p.removeLocked(a, e)
		}
		e = p.newPendingLocked(a, now)
		start = true
	}
	ok := len(e.held) < heldPerNeighbour && p.dev.held.Add(1) <= maxHeldTotal
	if ok {
		if pk.view {
			pk = p.dev.own(pk) // rare: a source's first packets
		}
		e.held = append(e.held, held{pk: pk, mac: m})
	} else if len(e.held) < heldPerNeighbour {
		p.dev.held.Add(-1)
	}
	p.mu.Unlock()
	if start {
		p.solicit(a, nil)
	}
	if !ok {
		p.dev.drop(reasonUnproven, 1)
	}
	return false, ok
}

// Identity returns the machine that a is bound to on this link, if any.
func (p *port) identity(a netip.Addr) (mac, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.lookupLocked(a); e != nil && e.bound() {
		return e.mac, true
	}
	return mac{}, false
}

// resolve sends a frame to a, or queues a copy of it while a resolves:
// hdr is its virtio-net header (nil: a zero one), head starts with its
// Ethernet header (destination to be filled), and tail is the rest of the
// frame (see writeOut).
func (p *port) resolve(a netip.Addr, hdr, head []byte, tail [][]byte) {
	now := time.Now()
	p.mu.Lock()
	e := p.lookupLocked(a)
	if e == nil {
		e = p.newPendingLocked(a, now)
		ok := p.enqueueLocked(e, hdr, head, tail)
		p.mu.Unlock()
		if !ok {
			p.dev.drop(reasonQueueFull, 1)
		}
		p.solicit(a, nil)
		return
	}
	switch e.state {
	case stateIncomplete:
		ok := p.enqueueLocked(e, hdr, head, tail)
		p.mu.Unlock()
		if !ok {
			p.dev.drop(reasonQueueFull, 1)
		}
		return
	case stateFailed:
		p.mu.Unlock()
		p.dev.drop(reasonNoNeighbour, 1)
		return
	}
	e.used = now
	m := e.mac
	p.mu.Unlock()
	putEthDst(head, m)
	p.writeOut(hdr, head, tail)
}

// enqueueLocked keeps a copy of a frame for e; false if a bound is hit.
// A super-frame (offload path, up to 64 KiB) is never queued: the bounds
// count MTU-sized frames, and TCP sends it again once the neighbour
// answers, a LAN round trip later.
func (p *port) enqueueLocked(e *neigh, hdr, head []byte, tail [][]byte) bool {
	size := len(head)
	for _, b := range tail {
		size += len(b)
	}
	if len(e.queue) >= queuePerNeighbour || size > ethHeaderLen+p.mtu {
		return false
	}
	if p.dev.queued.Add(1) > maxQueuedTotal {
		p.dev.queued.Add(-1)
		return false
	}
	var q queued
	copy(q.hdr[:], hdr)
	q.frame = append([]byte(nil), head...)
	for _, b := range tail {
		q.frame = append(q.frame, b...)
	}
	e.queue = append(e.queue, q)
	return true
}

// tick advances every entry's timers: resends solicitations, starts and
// repeats probes, fails and expires entries.
func (p *port) tick(now time.Time) {
	type probe struct {
		a       netip.Addr
		unicast *mac
	}
	var probes []probe
	p.mu.Lock()
	for a, e := range p.neigh {
		switch e.state {
		case stateIncomplete:
			if now.Before(e.next) {
				continue
			}
			if e.probes >= maxProbes {
				p.failLocked(a, e, now)
				continue
			}
			e.probes++
			e.next = now.Add(probeInterval)
			probes = append(probes, probe{a: a})
		case stateReachable:
			if now.Sub(e.confirmed) < staleAfter {
				continue
			}
			if !e.used.After(e.confirmed) {
				// Unused since confirmed: nothing to probe for.
				if now.Sub(e.confirmed) >= idleExpiry {
					p.removeLocked(a, e)
				}
				continue
			}
			p.setStateLocked(a, e, stateProbing)
			e.probes, e.next = 0, now
			fallthrough
		case stateProbing:
			if now.Before(e.next) {
				continue
			}
			if e.probes >= maxProbes {
				p.failLocked(a, e, now)
				continue
			}
			e.probes++
			e.next = now.Add(probeInterval)
			m := e.mac
			probes = append(probes, probe{a: a, unicast: &m})
		case stateFailed:
			if !now.Before(e.next) {
				delete(p.neigh, a)
			}
		}
	}
	p.mu.Unlock()
	for _, pr := range probes {
		p.solicit(pr.a, pr.unicast)
	}
}

// failLocked marks e failed: its queued and held packets are dropped, and
// the address is bound to nobody. p.mu must be held.
func (p *port) failLocked(a netip.Addr, e *neigh, now time.Time) {
	if n := len(e.queue); n > 0 {
		p.dev.queued.Add(int64(-n))
		p.dev.drop(reasonNoNeighbour, uint64(n))
		e.queue = nil
	}
	p.dropHeldLocked(e)
	p.setStateLocked(a, e, stateFailed)
	e.next = now.Add(failedHold)
}

// countStates adds the table's entries by state to counts.
func (p *port) countStates(counts *[numStates]int) {
	p.mu.Lock()
	for _, e := range p.neigh {
		counts[e.state]++
	}
	p.mu.Unlock()
}

// dropQueues forgets every queued and held packet (on Close).
func (p *port) dropQueues() {
	p.mu.Lock()
	n := 0
	for _, e := range p.neigh {
		n += len(e.queue)
		e.queue = nil
		p.dropHeldLocked(e)
	}
	p.mu.Unlock()
	p.dev.queued.Add(int64(-n))
}
