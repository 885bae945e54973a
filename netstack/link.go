package netstack

import (
	"context"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// linkEndpoint is the NIC gVisor sends through. It replaces
// link/channel.Endpoint, which clones every outbound packet and hands it
// over through a channel: here a packet is either written to the TUN on
// the sending goroutine (writeDirect, the offload path: one writev per
// packet, no hand-off) or queued by reference (IncRef, no clone) on a
// bounded ring that writeLoop drains a batch at a time.
type linkEndpoint struct {
	mtu  uint32
	caps stack.LinkEndpointCapabilities
	// gsoMax is the largest packet gVisor may hand us when the TUN
	// segments for it (host GSO); 0 means no GSO.
	gsoMax uint32
	// writeDirect, if set, writes one packet to the TUN; it reports false
	// if the packet was dropped.
	writeDirect func(*stack.PacketBuffer) bool
	// drops count packets dropped on the way out (queue full, write
	// failed): the stack's overload reason and its outbound counter.
	drops [2]*atomic.Uint64
	// dataCap bounds queued packets that carry payload; segments without
	// payload (ACK, FIN, RST) may fill the rest of the ring. A burst of
	// data can so never crowd out the FINs and RSTs that end flows.
	dataCap int

	dispatcher atomic.Pointer[stack.NetworkDispatcher]

	mu     sync.Mutex
	ring   []*stack.PacketBuffer // guarded by mu
	head   int                   // guarded by mu; index of the oldest packet
	n      int                   // guarded by mu; packets queued
	closed bool                  // guarded by mu
	notify chan struct{}         // a token when the ring becomes non-empty
	// watch, if not nil, is closed at the next change of the queue (a
	// packet queued, the queue emptied) and cleared: Drain's wake-up,
	// which costs the packet path one nil check while nobody drains.
	watch chan struct{} // guarded by mu
}

var (
	_ stack.LinkEndpoint       = (*linkEndpoint)(nil)
	_ stack.GSOEndpoint        = (*linkEndpoint)(nil)
	_ stack.QueueingDiscipline = (*linkEndpoint)(nil)
)

// newLinkEndpoint queues up to queueLen packets with payload and up to
// queueLen+controlLen packets in all.
func newLinkEndpoint(mtu, queueLen, controlLen int, drops [2]*atomic.Uint64) *linkEndpoint {
	return &linkEndpoint{
		mtu:     uint32(mtu),
		drops:   drops,
		dataCap: queueLen,
		ring:    make([]*stack.PacketBuffer, queueLen+controlLen),
		notify:  make(chan struct{}, 1),
	}
}

// deliver hands one inbound packet to the stack. The caller keeps its
// reference and releases it after the call.
func (e *linkEndpoint) deliver(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if d := e.dispatcher.Load(); d != nil && *d != nil {
		(*d).DeliverNetworkPacket(proto, pkt)
	}
}

// WritePacket implements stack.QueueingDiscipline. The endpoint is its own
// queueing discipline: gVisor's default one wraps every packet in a
// one-element PacketBufferList, an allocation per packet. gVisor calls it
// from many goroutines at once. gVisor's own segments keep their headers
// out of Data, so Data's size is the payload.
func (e *linkEndpoint) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	return e.enqueue(pkt, pkt.Data().Size() > 0)
}

// enqueue writes or queues pkt; data says whether it carries payload
// (and so counts against dataCap). A packet torgate builds itself holds
// its headers in Data too, so its sender says (queueRaw).
func (e *linkEndpoint) enqueue(pkt *stack.PacketBuffer, data bool) tcpip.Error {
	if e.writeDirect != nil {
		e.writeDirect(pkt)
		return nil
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return &tcpip.ErrClosedForSend{}
	}
	if e.n == len(e.ring) || e.n >= e.dataCap && data {
		e.mu.Unlock()
		e.dropped()
		return &tcpip.ErrNoBufferSpace{}
	}
	wasEmpty := e.n == 0
	e.ring[(e.head+e.n)%len(e.ring)] = pkt.IncRef()
	e.n++
	e.changedLocked()
	e.mu.Unlock()
	if wasEmpty {
		select {
		case e.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

// WritePackets implements stack.LinkWriter, for callers that bypass the
// queueing discipline (none of gVisor's TCP paths do).
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if err := e.WritePacket(pkt); err != nil {
			if n == 0 {
				return 0, err
			}
			break
		}
		n++
	}
	return n, nil
}

func (e *linkEndpoint) dropped() {
	for _, d := range e.drops {
		d.Add(1)
	}
}

// dequeue moves up to len(out) queued packets into out, waiting for at
// least one. It returns 0 when ctx is done or the endpoint closed. The
// caller owns one reference to each packet.
func (e *linkEndpoint) dequeue(ctx context.Context, out []*stack.PacketBuffer) int {
	for {
		e.mu.Lock()
		if e.n > 0 {
			k := min(e.n, len(out))
			for i := range k {
				j := (e.head + i) % len(e.ring)
				out[i] = e.ring[j]
				e.ring[j] = nil
			}
			e.head = (e.head + k) % len(e.ring)
			e.n -= k
			if e.n == 0 {
				e.changedLocked()
			}
			e.mu.Unlock()
			return k
		}
		closed := e.closed
		e.mu.Unlock()
		if closed {
			return 0
		}
		select {
		case <-e.notify:
		case <-ctx.Done():
			return 0
		}
	}
}

// changedLocked wakes a Drain waiting for the queue to change.
func (e *linkEndpoint) changedLocked() {
	if e.watch != nil {
		close(e.watch)
		e.watch = nil
	}
}

// changes reports the packets waiting for writeLoop and a channel closed
// at the next change of that number's emptiness.
func (e *linkEndpoint) changes() (queued int, changed <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.watch == nil {
		e.watch = make(chan struct{})
	}
	return e.n, e.watch
}

// MTU implements stack.LinkEndpoint.
func (e *linkEndpoint) MTU() uint32 { return e.mtu }

// SetMTU implements stack.LinkEndpoint. The MTU is fixed at creation.
func (e *linkEndpoint) SetMTU(uint32) {}

// MaxHeaderLength implements stack.LinkEndpoint: a TUN has no link header.
func (e *linkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint.
func (e *linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (e *linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint.
func (e *linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return e.caps
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *linkEndpoint) GSOMaxSize() uint32 { return e.gsoMax }

// SupportedGSO implements stack.GSOEndpoint.
func (e *linkEndpoint) SupportedGSO() stack.SupportedGSO {
	if e.gsoMax > 0 {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// Attach implements stack.LinkEndpoint.
func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) { e.dispatcher.Store(&d) }

// IsAttached implements stack.LinkEndpoint.
func (e *linkEndpoint) IsAttached() bool {
	d := e.dispatcher.Load()
	return d != nil && *d != nil
}

// Wait implements stack.LinkEndpoint; the loops are the Stack's.
func (e *linkEndpoint) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (e *linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (e *linkEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (e *linkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint: it drops what is queued and wakes
// writeLoop.
func (e *linkEndpoint) Close() {
	e.mu.Lock()
	e.closed = true
	for e.n > 0 {
		e.ring[e.head].DecRef()
		e.ring[e.head] = nil
		e.head = (e.head + 1) % len(e.ring)
		e.n--
	}
	e.changedLocked()
	e.mu.Unlock()
	select {
	case e.notify <- struct{}{}:
	default:
	}
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *linkEndpoint) SetOnCloseAction(func()) {}
