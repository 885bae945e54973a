package bench

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// RawPeer is a scripted IPv4 TCP client on the far end of a Link, with no
// TCP/IP stack: it builds each segment itself, keeps sequence numbers, and
// reads the router's segments synchronously on the router's write path.
// Having no stack, it allocates nothing per packet, so the allocations a
// benchmark counts while it runs are the router's (and the SOCKS sink's),
// and opening many idle flows costs the router's memory only (with
// Reserve, the peer's own flow records exist before the flows open).
//
// It is a measuring tool, not a TCP: it sends in order within the router's
// window, falls back to go-back-N when ACKs stall, acknowledges every
// segment it receives in order, and ignores options but MSS and window
// scale.
type RawPeer struct {
	link *Link
	src  netip.Addr
	mss  int

	mu       sync.Mutex
	flows    map[uint16]*RawFlow // by local port; guarded by mu
	nextPort uint16              // guarded by mu
	spare    []*RawFlow          // guarded by mu; made by Reserve
}

// rawWScale is the window scale the peer announces; with a 65535 window it
// offers 8 MiB, so the router's sending is never limited by the peer.
const rawWScale = 7

// NewRawPeer returns a peer with address src (IPv4) whose segments carry
// at most mss payload bytes, and the Link to give the router.
func NewRawPeer(src netip.Addr, mtu, mss int) (*RawPeer, *Link) {
	p := &RawPeer{src: src, mss: mss, flows: make(map[uint16]*RawFlow), nextPort: 20000}
	p.link = NewLink(mtu, p.deliver)
	return p, p.link
}

// Reserve makes the records of the next n flows now, so that a benchmark
// measuring memory across Open calls sees the router's share alone.
func (p *RawPeer) Reserve(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	flows := make(map[uint16]*RawFlow, len(p.flows)+n)
	for k, v := range p.flows {
		flows[k] = v
	}
	p.flows = flows
	for range n {
		p.spare = append(p.spare, newRawFlow(p))
	}
}

func newRawFlow(p *RawPeer) *RawFlow {
	f := &RawFlow{
		peer:        p,
		acked:       make(chan struct{}, 1),
		ended:       make(chan struct{}, 1),
		segs:        make(chan struct{}, linkQueueLen),
		established: make(chan struct{}),
	}
	f.wait = time.NewTimer(time.Hour)
	f.wait.Stop()
	return f
}

// RawFlow is one TCP connection of a RawPeer.
type RawFlow struct {
	peer     *RawPeer
	src, dst netip.AddrPort

	// Sender: only the writing goroutine advances sndNxt; the router's
	// write path reads it for ACKs.
	iss    uint32
	sndNxt atomic.Uint32
	wait   *time.Timer   // the writer's poll timer, reused
	sndUna atomic.Uint32 // highest ACK from the router
	sndWnd atomic.Uint32 // router's window in bytes, scaled
	wscale atomic.Uint32 // router's window scale
	acked  chan struct{} // a token when sndUna advances

	// Receiver.
	rcvNxt  atomic.Uint32
	rcvd    atomic.Uint64 // payload bytes received in order
	segs    chan struct{} // a token per in-order data segment (when Counting)
	counted atomic.Bool

	established chan struct{}
	estOnce     sync.Once
	reset       atomic.Bool
	finRcvd     atomic.Bool
	ended       chan struct{} // a token when a FIN or RST arrives
}

// ErrReset is returned when the router reset the flow.
var ErrReset = errors.New("bench: flow reset by router")

// Open performs the three-way handshake to dst from a fresh local port.
// The router answers only after its SOCKS dial succeeded.
func (p *RawPeer) Open(ctx context.Context, dst netip.AddrPort) (*RawFlow, error) {
	p.mu.Lock()
	port := p.nextPort
	p.nextPort++
	if p.nextPort == 0 {
		p.nextPort = 20000
	}
	var f *RawFlow
	if k := len(p.spare); k > 0 {
		f, p.spare = p.spare[k-1], p.spare[:k-1]
	} else {
		f = newRawFlow(p)
	}
	f.src = netip.AddrPortFrom(p.src, port)
	f.dst = dst
	f.iss = uint32(port) << 16
	f.sndNxt.Store(f.iss + 1)
	f.sndUna.Store(f.iss + 1)
	p.flows[port] = f
	p.mu.Unlock()

	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		f.send(f.iss, 0, header.TCPFlagSyn, nil)
		select {
		case <-f.established:
			if f.reset.Load() {
				return nil, ErrReset
			}
			return f, nil
		case <-t.C: // SYN lost or the dial is slow: retransmit
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Count makes the flow report each in-order data segment it receives on
// Segments.
func (f *RawFlow) Count() { f.counted.Store(true) }

// Segments delivers a token per in-order data segment once Count is on.
func (f *RawFlow) Segments() <-chan struct{} { return f.segs }

// Received returns the payload bytes received in order.
func (f *RawFlow) Received() uint64 { return f.rcvd.Load() }

// Write sends payload as one segment (len(payload) <= MSS), waiting for
// room in the router's window. It does not allocate.
func (f *RawFlow) Write(ctx context.Context, payload []byte) error {
	stall := time.Time{}
	for {
		if f.reset.Load() {
			return ErrReset
		}
		una := f.sndUna.Load()
		inflight := f.sndNxt.Load() - una
		if inflight+uint32(len(payload)) <= f.sndWnd.Load() {
			break
		}
		select {
		case <-f.acked:
			stall = time.Time{}
			continue
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		// No ACK yet: wait briefly; after 200 ms without progress, go back
		// to the first unacknowledged byte (a segment was dropped).
		now := time.Now()
		if stall.IsZero() {
			stall = now
		} else if now.Sub(stall) > 200*time.Millisecond {
			f.sndNxt.Store(f.sndUna.Load())
			stall = time.Time{}
			continue
		}
		f.wait.Reset(10 * time.Millisecond)
		select {
		case <-f.acked:
			stall = time.Time{}
		case <-f.wait.C:
		case <-ctx.Done():
			f.wait.Stop()
			return ctx.Err()
		}
		f.wait.Stop()
	}
	nxt := f.sndNxt.Load()
	for !f.send(nxt, f.rcvNxt.Load(), header.TCPFlagAck|header.TCPFlagPsh, payload) {
		if f.reset.Load() {
			return ErrReset
		}
		runtime.Gosched() // the queue towards the router is full
	}
	f.sndNxt.Store(nxt + uint32(len(payload)))
	return nil
}

// Close sends a FIN and waits until the router's FIN arrives (the peer
// acknowledges it as it does every segment), retransmitting the FIN every
// second; then it forgets the flow. The router closes its side once the
// SOCKS sink has: with the echo sink, right after our FIN reached it.
func (f *RawFlow) Close(ctx context.Context) error {
	fin := f.sndNxt.Load()
	f.sndNxt.Store(fin + 1)
	defer f.forget()
	for {
		f.send(fin, f.rcvNxt.Load(), header.TCPFlagFin|header.TCPFlagAck, nil)
		f.wait.Reset(time.Second)
		select {
		case <-f.ended:
		case <-f.wait.C:
		case <-ctx.Done():
		}
		f.wait.Stop()
		switch {
		case f.reset.Load():
			return ErrReset
		case f.finRcvd.Load():
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
	}
}

// Ended reports whether the router ended the flow (FIN or RST).
func (f *RawFlow) Ended() bool { return f.finRcvd.Load() || f.reset.Load() }

// Reset aborts the flow with a RST.
func (f *RawFlow) Reset() {
	f.send(f.sndNxt.Load(), 0, header.TCPFlagRst, nil)
	f.forget()
}

// forget removes the flow from the peer's table.
func (f *RawFlow) forget() {
	f.peer.mu.Lock()
	delete(f.peer.flows, f.src.Port())
	f.peer.mu.Unlock()
}

// send builds one segment carrying payload in a link buffer and queues it.
// It reports false if the link queue is full.
func (f *RawFlow) send(seq, ack uint32, flags header.TCPFlags, payload []byte) bool {
	buf, idx, ok := f.peer.link.Get()
	if !ok {
		return false
	}
	tcpLen := header.TCPMinimumSize
	if flags&header.TCPFlagSyn != 0 {
		tcpLen += 8 // MSS (4) + NOP + window scale (3)
	}
	total := header.IPv4MinimumSize + tcpLen + len(payload)
	pkt := buf[:total]
	srcA := tcpip.AddrFrom4(f.src.Addr().As4())
	dstA := tcpip.AddrFrom4(f.dst.Addr().As4())
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(total),
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     srcA,
		DstAddr:     dstA,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	t := header.TCP(pkt[header.IPv4MinimumSize:])
	t.Encode(&header.TCPFields{
		SrcPort:    f.src.Port(),
		DstPort:    f.dst.Port(),
		SeqNum:     seq,
		AckNum:     ack,
		DataOffset: uint8(tcpLen),
		Flags:      flags,
		WindowSize: 0xffff,
	})
	if flags&header.TCPFlagSyn != 0 {
		o := t[header.TCPMinimumSize:]
		o[0], o[1] = header.TCPOptionMSS, 4
		o[2], o[3] = byte(f.peer.mss>>8), byte(f.peer.mss)
		o[4] = header.TCPOptionNOP
		o[5], o[6], o[7] = header.TCPOptionWS, 3, rawWScale
	}
	data := pkt[header.IPv4MinimumSize+tcpLen:]
	copy(data, payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, srcA, dstA, uint16(tcpLen+len(payload)))
	xsum = checksum.Checksum(data, xsum)
	t.SetChecksum(^t.CalculateChecksum(xsum))
	f.peer.link.Put(idx, total)
	return true
}

// deliver handles one packet the router wrote. It runs on the router's
// write path and does not allocate.
func (p *RawPeer) deliver(pkt []byte) {
	if len(pkt) < header.IPv4MinimumSize || pkt[0]>>4 != 4 {
		return
	}
	ip := header.IPv4(pkt)
	if ip.Protocol() != uint8(header.TCPProtocolNumber) || int(ip.TotalLength()) > len(pkt) {
		return
	}
	t := header.TCP(pkt[ip.HeaderLength():ip.TotalLength()])
	if len(t) < header.TCPMinimumSize || int(t.DataOffset()) > len(t) {
		return
	}
	p.mu.Lock()
	f := p.flows[t.DestinationPort()]
	p.mu.Unlock()
	if f == nil {
		return
	}
	flags := t.Flags()
	if flags&header.TCPFlagRst != 0 {
		f.reset.Store(true)
		f.estOnce.Do(func() { close(f.established) })
		f.signalEnd()
		return
	}
	if flags&(header.TCPFlagSyn|header.TCPFlagAck) == header.TCPFlagSyn|header.TCPFlagAck {
		opts := header.ParseSynOptions(t.Options(), true)
		if opts.WS > 0 {
			f.wscale.Store(uint32(opts.WS))
		}
		f.rcvNxt.Store(t.SequenceNumber() + 1)
		f.sndUna.Store(t.AckNumber())
		f.sndWnd.Store(uint32(t.WindowSize())) // not scaled in a SYN
		f.send(f.sndNxt.Load(), f.rcvNxt.Load(), header.TCPFlagAck, nil)
		f.estOnce.Do(func() { close(f.established) })
		return
	}
	if flags&header.TCPFlagAck != 0 {
		ack := t.AckNumber()
		una := f.sndUna.Load()
		if int32(ack-una) >= 0 {
			f.sndUna.Store(ack)
			f.sndWnd.Store(uint32(t.WindowSize()) << f.wscale.Load())
			if ack != una {
				select {
				case f.acked <- struct{}{}:
				default:
				}
			}
		}
	}
	n := len(t.Payload())
	fin := flags&header.TCPFlagFin != 0
	if n == 0 && !fin {
		return
	}
	seq := t.SequenceNumber()
	if seq == f.rcvNxt.Load() {
		next := seq + uint32(n)
		if fin {
			next++
			f.finRcvd.Store(true)
		}
		f.rcvNxt.Store(next)
		f.rcvd.Add(uint64(n))
		if n > 0 && f.counted.Load() {
			select {
			case f.segs <- struct{}{}:
			default:
			}
		}
	}
	// Acknowledge every segment, in order or not (a duplicate ACK asks for
	// the missing one).
	f.send(f.sndNxt.Load(), f.rcvNxt.Load(), header.TCPFlagAck, nil)
	if fin {
		f.signalEnd()
	}
}

func (f *RawFlow) signalEnd() {
	select {
	case f.ended <- struct{}{}:
	default:
	}
}
