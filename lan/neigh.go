package lan

import (
	"net/netip"
	"time"
)

// Neighbour resolution, per link (Linux's neighbour state machine, cut to
// what a gateway that only ever answers needs):
//
//	incomplete: solicited up to maxProbes times probeInterval apart,
//	            holding up to queuePerNeighbour packets; no answer -> failed
//	reachable:  confirmed (an ARP reply or request for us, an NA, an NS)
//	            within staleAfter; used as is
//	probing:    still used, but confirmation is older than staleAfter and
//	            packets went to it since: unicast probes, maxProbes
//	            unanswered -> failed
//	failed:     packets dropped (no_neighbour) for failedHold, then the
//	            entry goes and the next packet resolves again
//
// A workstation that stops answering thus loses its packets, counted;
// they are never sent anywhere else.
const (
	probeInterval     = time.Second
	maxProbes         = 3
	staleAfter        = 30 * time.Second
	failedHold        = 20 * time.Second
	idleExpiry        = 5 * time.Minute // unused reachable entries go
	queuePerNeighbour = 3               // Linux unres_qlen_bytes ~ 3 packets
	maxQueuedTotal    = 1024            // all links, MTU-sized: ~1.5 MiB
	maxNeighbours     = 4096            // per link
	tickInterval      = 250 * time.Millisecond
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
	mac       mac
	confirmed time.Time // last confirmation
	used      time.Time // last packet sent to it
	probes    int       // solicitations sent in this state
	next      time.Time // next probe (incomplete, probing) or expiry (failed)
	queue     [][]byte  // incomplete: frames with room for the Ethernet header
}

// lookupLocked returns the neighbour entry for a, or nil.
// p.mu must be held.
func (p *port) lookupLocked(a netip.Addr) *neigh { return p.neigh[a] }

// newEntryLocked adds an entry for a, evicting a failed one when the
// table is full; nil if there is no room. p.mu must be held.
func (p *port) newEntryLocked(a netip.Addr) *neigh {
	if len(p.neigh) >= maxNeighbours {
		evicted := false
		for k, e := range p.neigh {
			if e.state == stateFailed {
				delete(p.neigh, k)
				evicted = true
				break
			}
		}
		if !evicted {
			return nil
		}
	}
	e := &neigh{}
	p.neigh[a] = e
	return e
}

// confirm records that a is at m. Only creates an entry when create is
// set (the neighbour talked to us); otherwise updates an existing one.
// Queued packets are flushed to the caller's frames.
func (p *port) confirm(a netip.Addr, m mac, create bool) {
	if m.isMulticast() || m.isZero() || !a.IsValid() {
		return
	}
	now := time.Now()
	p.mu.Lock()
	e := p.lookupLocked(a)
	if e == nil {
		if !create {
			p.mu.Unlock()
			return
		}
		if e = p.newEntryLocked(a); e == nil {
			p.mu.Unlock()
			p.dev.drop(reasonTableFull, 1)
			return
		}
	}
	e.state, e.mac, e.confirmed, e.probes = stateReachable, m, now, 0
	q := e.queue
	e.queue = nil
	p.mu.Unlock()
	if len(q) > 0 {
		p.dev.queued.Add(int64(-len(q)))
		for _, fr := range q {
			putEthDst(fr, m)
			p.writeFrame(fr)
		}
	}
}

// update records a MAC change announced by gratuitous ARP for a known
// neighbour: used, but to be confirmed by a probe.
func (p *port) update(a netip.Addr, m mac) {
	if m.isMulticast() || m.isZero() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.lookupLocked(a)
	if e == nil || e.state == stateIncomplete {
		return
	}
	if e.mac != m || e.state == stateFailed {
		e.mac = m
		e.state, e.probes, e.next = stateProbing, 0, time.Now()
	}
}

// resolve sends frame (Ethernet header at frame[:14], destination to be
// filled) to a, or queues it while a resolves.
func (p *port) resolve(a netip.Addr, frame []byte) {
	now := time.Now()
	p.mu.Lock()
	e := p.lookupLocked(a)
	if e == nil {
		if e = p.newEntryLocked(a); e == nil {
			p.mu.Unlock()
			p.dev.drop(reasonTableFull, 1)
			return
		}
		e.state, e.probes, e.next = stateIncomplete, 1, now.Add(probeInterval)
		ok := p.enqueueLocked(e, frame)
		p.mu.Unlock()
		if !ok {
			p.dev.drop(reasonQueueFull, 1)
		}
		p.solicit(a, nil)
		return
	}
	switch e.state {
	case stateIncomplete:
		ok := p.enqueueLocked(e, frame)
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
	putEthDst(frame, m)
	p.writeFrame(frame)
}

// enqueueLocked keeps a copy of frame for e; false if a bound is hit.
func (p *port) enqueueLocked(e *neigh, frame []byte) bool {
	if len(e.queue) >= queuePerNeighbour {
		return false
	}
	if p.dev.queued.Add(1) > maxQueuedTotal {
		p.dev.queued.Add(-1)
		return false
	}
	e.queue = append(e.queue, append([]byte(nil), frame...))
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
	dropped, unqueued := 0, 0
	p.mu.Lock()
	for a, e := range p.neigh {
		switch e.state {
		case stateIncomplete:
			if now.Before(e.next) {
				continue
			}
			if e.probes >= maxProbes {
				dropped += len(e.queue)
				unqueued += len(e.queue)
				e.queue = nil
				e.state, e.next = stateFailed, now.Add(failedHold)
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
					delete(p.neigh, a)
				}
				continue
			}
			e.state, e.probes, e.next = stateProbing, 0, now
			fallthrough
		case stateProbing:
			if now.Before(e.next) {
				continue
			}
			if e.probes >= maxProbes {
				e.state, e.next = stateFailed, now.Add(failedHold)
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
	if unqueued > 0 {
		p.dev.queued.Add(int64(-unqueued))
		p.dev.drop(reasonNoNeighbour, uint64(dropped))
	}
	for _, pr := range probes {
		p.solicit(pr.a, pr.unicast)
	}
}

// countStates adds the table's entries by state to counts.
func (p *port) countStates(counts *[numStates]int) {
	p.mu.Lock()
	for _, e := range p.neigh {
		counts[e.state]++
	}
	p.mu.Unlock()
}

// dropQueues forgets every queued packet (on Close).
func (p *port) dropQueues() {
	p.mu.Lock()
	n := 0
	for _, e := range p.neigh {
		n += len(e.queue)
		e.queue = nil
	}
	p.mu.Unlock()
	p.dev.queued.Add(int64(-n))
}
