package netstack

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/internal/vnet"
)

// The tests of the gVisor assumptions fenced in gvisor.go, one per
// assumption (G1-G9). Each failure names the assumption it found broken,
// so that a gVisor upgrade that changes one says which. They play the
// workstation at the packet level: segments go in through inbound (as
// the read loop's) and everything gVisor sends comes out through the link
// endpoint's direct-write hook, the one the offload path uses.

// gvWait bounds every wait for gVisor; generous, for a loaded machine.
const gvWait = 20 * time.Second

var gvNames = map[string]string{
	"G1": "TIME_WAIT reclaim (abortTimeWait)",
	"G2": "Abort sends a RST, then Close releases (abortEndpoint)",
	"G3": "our queueing discipline is in force (createNIC)",
	"G4": "GRO driven by hand delivers to the NIC (initGRO)",
	"G5": "NIC-level checksum trust (rxChecksumOffload)",
	"G6": "host GSO options (vnetGSOHeader)",
	"G7": "packet views (packetViews, CopyPacket)",
	"G8": "forwarder's in-flight table (forwardSYN)",
	"G9": "handshake wait ends on a writable event (createEndpoint)",
}

// broken fails the test, naming the gVisor assumption.
func broken(t *testing.T, id, format string, args ...any) {
	t.Helper()
	t.Fatalf("gVisor assumption %s, %s, no longer holds (see netstack/gvisor.go): %s", id, gvNames[id], fmt.Sprintf(format, args...))
}

// gvOut is one packet gVisor sent: its bytes and what gVisor attached.
type gvOut struct {
	b       []byte
	gso     stack.GSO
	hdrSize int
	vnet    [vnetHdrLen]byte
}

// seg is a parsed outbound TCP segment.
type seg struct {
	flags    header.TCPFlags
	seq, ack uint32
	sport    uint16
	dport    uint16
	payload  []byte
	out      gvOut
}

// gvHarness is a Stack (never started: the test is its read loop) whose
// outbound packets are captured.
type gvHarness struct {
	s   *Stack
	out chan gvOut
}

// How a harness takes gVisor's packets.
type linkMode int

const (
	// direct: copied as WritePacket is called (the offload path's hook).
	direct linkMode = iota
	// hostGSO: direct, and the endpoint offers host GSO.
	hostGSO
	// ring: queued by reference on the endpoint's ring and copied later
	// by a drain goroutine, as writeLoop does.
	ring
)

// tcpFunc makes a test's handler of *TCPRequest a TCPHandler.
func tcpFunc(f func(*TCPRequest)) TCPHandler {
	return TCPHandlerFunc(func(r flow.Request) { f(r.(*TCPRequest)) })
}

// newGVHarness builds a Stack with handle as its TCP handler.
func newGVHarness(t *testing.T, handle func(*TCPRequest), mode linkMode) *gvHarness {
	t.Helper()
	s, err := New(Config{Device: newScriptDev(), TCP: tcpFunc(handle)})
	if err != nil {
		t.Fatal(err)
	}
	h := &gvHarness{s: s, out: make(chan gvOut, 4096)}
	if mode == ring {
		var wg sync.WaitGroup
		wg.Go(func() {
			pkts := make([]*stack.PacketBuffer, 64)
			for {
				k := s.ep.dequeue(s.ctx, pkts)
				if k == 0 {
					return
				}
				for _, pkt := range pkts[:k] {
					o := gvOut{b: make([]byte, pkt.Size())}
					CopyPacket(o.b, pkt)
					pkt.DecRef()
					select {
					case h.out <- o:
					default:
					}
				}
			}
		})
		t.Cleanup(func() { s.Close(); wg.Wait() })
		return h
	}
	if mode == hostGSO {
		s.ep.gsoMax = vnetDefaultGSOMaxLen
	}
	s.ep.writeDirect = func(pkt *stack.PacketBuffer) bool {
		o := gvOut{b: make([]byte, pkt.Size()), gso: pkt.GSOOptions, hdrSize: pkt.HeaderSize()}
		CopyPacket(o.b, pkt)
		vnetGSOHeader(&o.vnet, pkt)
		select {
		case h.out <- o:
			return true
		default:
			return false
		}
	}
	t.Cleanup(func() { s.Close() })
	return h
}

func parseSeg(o gvOut) (seg, bool) {
	b := o.b
	var l3 int
	switch {
	case len(b) >= header.IPv4MinimumSize && b[0]>>4 == 4:
		if header.IPv4(b).Protocol() != protoTCP {
			return seg{}, false
		}
		l3 = int(header.IPv4(b).HeaderLength())
	case len(b) >= header.IPv6MinimumSize && b[0]>>4 == 6:
		if header.IPv6(b).NextHeader() != protoTCP {
			return seg{}, false
		}
		l3 = header.IPv6MinimumSize
	default:
		return seg{}, false
	}
	if len(b) < l3+header.TCPMinimumSize {
		return seg{}, false
	}
	th := header.TCP(b[l3:])
	return seg{flags: th.Flags(), seq: th.SequenceNumber(), ack: th.AckNumber(), sport: th.SourcePort(),
		dport: th.DestinationPort(), payload: th[th.DataOffset():], out: o}, true
}

// next returns the next segment gVisor sends that match accepts, failing
// after gvWait.
func (h *gvHarness) next(t *testing.T, what string, match func(seg) bool) seg {
	t.Helper()
	timeout := time.After(gvWait)
	for {
		select {
		case o := <-h.out:
			if sg, ok := parseSeg(o); ok && match(sg) {
				return sg
			}
		case <-timeout:
			t.Fatalf("no %s from gVisor within %v", what, gvWait)
		}
	}
}

// quiet reports the first segment matching match within d, if any.
func (h *gvHarness) quiet(d time.Duration, match func(seg) bool) (seg, bool) {
	timeout := time.After(d)
	for {
		select {
		case o := <-h.out:
			if sg, ok := parseSeg(o); ok && match(sg) {
				return sg, true
			}
		case <-timeout:
			return seg{}, false
		}
	}
}

// buildTCP encodes an IPv4 or IPv6 TCP segment with valid checksums.
func buildTCP(src, dst netip.AddrPort, seq, ack uint32, flags header.TCPFlags, opts, payload []byte) []byte {
	l3 := header.IPv4MinimumSize
	if src.Addr().Is6() {
		l3 = header.IPv6MinimumSize
	}
	tl := header.TCPMinimumSize + len(opts)
	b := make([]byte, l3+tl+len(payload))
	srcA, dstA := tcpip.AddrFromSlice(src.Addr().AsSlice()), tcpip.AddrFromSlice(dst.Addr().AsSlice())
	if l3 == header.IPv4MinimumSize {
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: protoTCP, SrcAddr: srcA, DstAddr: dstA})
		ip.SetChecksum(^ip.CalculateChecksum())
	} else {
		header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(tl + len(payload)), TransportProtocol: header.TCPProtocolNumber,
			HopLimit: 64, SrcAddr: srcA, DstAddr: dstA})
	}
	th := header.TCP(b[l3:])
	th.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack,
		DataOffset: uint8(tl), Flags: flags, WindowSize: 65535})
	copy(th[header.TCPMinimumSize:], opts)
	copy(th[tl:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, srcA, dstA, uint16(len(th)))
	xsum = checksum.Checksum(payload, xsum)
	th.SetChecksum(^th.CalculateChecksum(xsum))
	return b
}

// synOpts: MSS 1460, NOP, window scale 7; so the window allows bursts.
var synOpts = []byte{2, 4, 0x05, 0xb4, 1, 3, 3, 7}

// wsFlow is the workstation's side of one TCP connection.
type wsFlow struct {
	h        *gvHarness
	src, dst netip.AddrPort
	seq, ack uint32 // next sequence number to send, next one expected
}

func (f *wsFlow) send(flags header.TCPFlags, payload []byte) {
	f.h.s.inbound(buildTCP(f.src, f.dst, f.seq, f.ack, flags, nil, payload), false)
}

func (f *wsFlow) mine(sg seg) bool { return sg.dport == f.src.Port() && sg.sport == f.dst.Port() }

// syn sends a SYN with sequence number iss, not yet expecting an answer.
func (f *wsFlow) syn(iss uint32) {
	f.seq = iss
	f.h.s.inbound(buildTCP(f.src, f.dst, iss, 0, header.TCPFlagSyn, synOpts, nil), false)
}

// handshake sends a SYN, waits for the SYN-ACK and acknowledges it.
func (f *wsFlow) handshake(t *testing.T, iss uint32) {
	t.Helper()
	f.syn(iss)
	sa := f.h.next(t, "SYN-ACK", func(sg seg) bool { return f.mine(sg) && sg.flags == header.TCPFlagSyn|header.TCPFlagAck })
	if sa.ack != iss+1 {
		t.Fatalf("SYN-ACK acknowledges %d, want %d", sa.ack, iss+1)
	}
	f.seq, f.ack = iss+1, sa.seq+1
	f.send(header.TCPFlagAck, nil)
}

type family struct {
	name     string
	src, dst netip.Addr
}

var families = []family{
	{name: "ipv4", src: netip.MustParseAddr("10.152.152.11"), dst: netip.MustParseAddr("192.0.2.1")},
	{name: "ipv6", src: netip.MustParseAddr("fd19:7a2b::11"), dst: netip.MustParseAddr("2001:db8::1")},
}

func netProtoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// acceptAll returns a TCP handler func that accepts every request and hands the
// connection over.
func acceptAll() (func(*TCPRequest), chan net.Conn) {
	conns := make(chan net.Conn, 16)
	return func(r *TCPRequest) {
		c, err := r.Accept()
		if err == nil {
			conns <- c
		}
	}, conns
}

func recvConn(t *testing.T, conns chan net.Conn) *Conn {
	t.Helper()
	select {
	case c := <-conns:
		t.Cleanup(func() { c.Close() })
		return c.(*Conn)
	case <-time.After(gvWait):
		t.Fatal("handler got no connection")
		return nil
	}
}

func endpointID(f *wsFlow) stack.TransportEndpointID {
	return stack.TransportEndpointID{
		LocalPort: f.dst.Port(), LocalAddress: tcpip.AddrFromSlice(f.dst.Addr().AsSlice()),
		RemotePort: f.src.Port(), RemoteAddress: tcpip.AddrFromSlice(f.src.Addr().AsSlice()),
	}
}

// enterTimeWait opens a flow and closes it from the router's side first,
// which leaves the router's endpoint in TIME_WAIT. It returns the flow and
// the TIME_WAIT endpoint.
func enterTimeWait(t *testing.T, h *gvHarness, conns chan net.Conn, fam family, port uint16) (*wsFlow, *tcp.Endpoint) {
	t.Helper()
	f := &wsFlow{h: h, src: netip.AddrPortFrom(fam.src, port), dst: netip.AddrPortFrom(fam.dst, 443)}
	f.handshake(t, 1000)
	c := recvConn(t, conns)
	c.Close()
	fin := h.next(t, "FIN", func(sg seg) bool { return f.mine(sg) && sg.flags&header.TCPFlagFin != 0 })
	f.ack = fin.seq + 1
	f.send(header.TCPFlagAck|header.TCPFlagFin, nil)
	f.seq++
	h.next(t, "ACK of our FIN", func(sg seg) bool { return f.mine(sg) && sg.ack == f.seq })
	id := endpointID(f)
	deadline := time.Now().Add(gvWait)
	for {
		ep := h.s.stack.FindTransportEndpoint(netProtoOf(fam.src), tcp.ProtocolNumber, id, nicID)
		if te, ok := ep.(*tcp.Endpoint); ok && tcp.EndpointState(te.State()) == tcp.StateTimeWait {
			return f, te
		}
		if time.Now().After(deadline) {
			broken(t, "G1", "FindTransportEndpoint returned %T (%v) for a 4-tuple in TIME_WAIT, want a *tcp.Endpoint in StateTimeWait", ep, stateOf(ep))
		}
		time.Sleep(time.Millisecond)
	}
}

func stateOf(ep stack.TransportEndpoint) any {
	if te, ok := ep.(*tcp.Endpoint); ok {
		return tcp.EndpointState(te.State())
	}
	return nil
}

// TestGVisorTimeWaitReclaim (G1): a SYN that reuses the 4-tuple of an
// endpoint in TIME_WAIT becomes a new flow, at once.
func TestGVisorTimeWaitReclaim(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			handle, conns := acceptAll()
			h := newGVHarness(t, handle, direct)
			// A TIME_WAIT that outlasts a stalled test machine.
			h.s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, ptr(tcpip.TCPTimeWaitTimeoutOption(time.Minute)))
			f, _ := enterTimeWait(t, h, conns, fam, 40001)

			f2 := &wsFlow{h: h, src: f.src, dst: f.dst}
			iss := f.seq + 1<<20
			f2.syn(iss)
			if got := h.s.stats.TimeWaitReclaimed.Load(); got != 1 {
				broken(t, "G1", "TimeWaitReclaimed = %d after a SYN on a TIME_WAIT 4-tuple, want 1", got)
			}
			if ep := h.s.stack.FindTransportEndpoint(netProtoOf(fam.src), tcp.ProtocolNumber, endpointID(f), nicID); ep != nil && stateOf(ep) == tcp.StateTimeWait {
				broken(t, "G1", "Abort left the TIME_WAIT endpoint registered")
			}
			sa, ok := h.quiet(gvWait, func(sg seg) bool { return f2.mine(sg) && sg.flags == header.TCPFlagSyn|header.TCPFlagAck })
			if !ok || sa.ack != iss+1 {
				broken(t, "G1", "the SYN after the reclaim got no SYN-ACK for it (got %v, ack %d, want %d)", ok, sa.ack, iss+1)
			}
			f2.seq, f2.ack = iss+1, sa.seq+1
			f2.send(header.TCPFlagAck, nil)
			c := recvConn(t, conns)
			if c.RemoteAddr().String() != net.TCPAddrFromAddrPort(f.src).String() {
				t.Fatalf("new flow from %v, want %v", c.RemoteAddr(), f.src)
			}
		})
	}
}

// TestGVisorTimeWaitStillDropped is the probe that keeps G1 honest:
// gVisor itself drops a SYN for a 4-tuple in TIME_WAIT when nothing
// listens (no SYN-ACK, no forwarder request), which is why
// reclaimTimeWait exists. It fails the day gVisor handles such a SYN on
// its own, telling whoever upgrades gVisor to remove the workaround.
func TestGVisorTimeWaitStillDropped(t *testing.T) {
	accept, conns := acceptAll()
	var reqs atomic.Int32
	h := newGVHarness(t, func(r *TCPRequest) { reqs.Add(1); accept(r) }, direct)
	h.s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, ptr(tcpip.TCPTimeWaitTimeoutOption(time.Minute)))
	f, _ := enterTimeWait(t, h, conns, families[0], 40002)
	before := reqs.Load()
	iss := f.seq + 1<<20
	p := buildTCP(f.src, f.dst, iss, 0, header.TCPFlagSyn, synOpts, nil)
	pk := Classify(p)
	h.s.deliver(&pk, p) // past reclaimTimeWait
	// Dropping leaves no trace to wait for: give an answer the time a
	// handshake takes here many times over.
	sa, answered := h.quiet(2*time.Second, func(sg seg) bool { return f.mine(sg) && sg.flags == header.TCPFlagSyn|header.TCPFlagAck })
	if answered || reqs.Load() != before {
		t.Fatalf("gVisor now handles a SYN on a TIME_WAIT 4-tuple without a listener (SYN-ACK %v, ack %d; forwarder requests %d): "+
			"G1 is no longer needed: remove reclaimTimeWait, its TimeWaitReclaimed counter and G1 from netstack/gvisor.go, and this test",
			answered, sa.ack, reqs.Load()-before)
	}
	if got := h.s.stats.TimeWaitReclaimed.Load(); got != 0 {
		t.Fatalf("TimeWaitReclaimed = %d: the SYN went through reclaimTimeWait, so the probe did not test gVisor alone", got)
	}
}

// TestGVisorAbortSendsRST (G2): Abort sends a RST the workstation
// accepts (sequence number snd.nxt, acknowledging what it received), also
// after our FIN, and releases the endpoint with Close.
func TestGVisorAbortSendsRST(t *testing.T) {
	for _, fam := range families {
		for _, afterFIN := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/afterFIN=%v", fam.name, afterFIN), func(t *testing.T) {
				handle, conns := acceptAll()
				h := newGVHarness(t, handle, direct)
				f := &wsFlow{h: h, src: netip.AddrPortFrom(fam.src, 40003), dst: netip.AddrPortFrom(fam.dst, 443)}
				f.handshake(t, 5000)
				c := recvConn(t, conns)
				// Data both ways, none of ours acknowledged yet.
				f.send(header.TCPFlagAck|header.TCPFlagPsh, []byte("request"))
				f.seq += 7
				// Read, so the segment was processed before the Abort.
				c.SetReadDeadline(time.Now().Add(gvWait))
				if _, err := readFull(c, make([]byte, 7)); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write(make([]byte, 100)); err != nil {
					t.Fatal(err)
				}
				d := h.next(t, "data", func(sg seg) bool { return f.mine(sg) && len(sg.payload) > 0 })
				sndNxt := d.seq + uint32(len(d.payload))
				if afterFIN {
					if err := c.CloseWrite(); err != nil {
						t.Fatal(err)
					}
					fin := h.next(t, "FIN", func(sg seg) bool { return f.mine(sg) && sg.flags&header.TCPFlagFin != 0 })
					sndNxt = fin.seq + 1
				}
				c.Abort()
				rst, ok := h.quiet(gvWait, func(sg seg) bool { return f.mine(sg) && sg.flags&header.TCPFlagRst != 0 })
				if !ok {
					broken(t, "G2", "no RST after Abort")
				}
				if rst.seq != sndNxt {
					broken(t, "G2", "RST sequence number %d, want snd.nxt %d (the workstation would ignore it)", rst.seq, sndNxt)
				}
				if rst.flags&header.TCPFlagAck == 0 || rst.ack != f.seq {
					broken(t, "G2", "RST flags %v ack %d, want ACK of %d", rst.flags, rst.ack, f.seq)
				}
				if ep := h.s.stack.FindTransportEndpoint(netProtoOf(fam.src), tcp.ProtocolNumber, endpointID(f), nicID); ep != nil {
					broken(t, "G2", "endpoint still registered (state %v) after Abort and Close", stateOf(ep))
				}
				// The workstation keeps talking: the 4-tuple is gone, and
				// whatever answers is no data from the old endpoint.
				if sg, ok := h.quiet(200*time.Millisecond, func(sg seg) bool { return f.mine(sg) && len(sg.payload) > 0 }); ok {
					broken(t, "G2", "data sent after Abort: %d bytes at %d", len(sg.payload), sg.seq)
				}
			})
		}
	}
}

// recordingNIC is the Stack's link endpoint with its entry points
// counted.
type recordingNIC struct {
	*linkEndpoint
	packet, packets atomic.Int32
}

func (r *recordingNIC) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	r.packet.Add(1)
	return r.linkEndpoint.WritePacket(pkt)
}

func (r *recordingNIC) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	r.packets.Add(1)
	return r.linkEndpoint.WritePackets(pkts)
}

// TestGVisorQDiscInForce (G3): with our endpoint as the NIC's queueing
// discipline, gVisor's TCP sends through its WritePacket on the sending
// goroutine, never through WritePackets.
func TestGVisorQDiscInForce(t *testing.T) {
	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	defer func() { st.Close(); st.Wait() }()
	var drops [2]atomic.Uint64
	ep := &recordingNIC{linkEndpoint: newLinkEndpoint(1500, 16, 16, [2]*atomic.Uint64{&drops[0], &drops[1]})}
	if err := createNIC(st, ep); err != nil {
		t.Fatal(err)
	}
	st.SetPromiscuousMode(nicID, true)
	st.SetSpoofing(nicID, true)
	st.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	// A SYN to a port nobody serves: gVisor answers with a RST, from the
	// delivering goroutine.
	src, dst := netip.MustParseAddrPort("10.152.152.11:40004"), netip.MustParseAddrPort("192.0.2.1:443")
	syn := buildTCP(src, dst, 1, 0, header.TCPFlagSyn, nil, nil)
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(syn)})
	ep.deliver(ipv4.ProtocolNumber, pkb)
	pkb.DecRef()
	if ep.packets.Load() != 0 {
		broken(t, "G3", "gVisor called LinkEndpoint.WritePackets")
	}
	if ep.packet.Load() != 1 {
		broken(t, "G3", "QueueingDiscipline.WritePacket called %d times before the delivery returned, want 1 (the RST)", ep.packet.Load())
	}
	out := make([]*stack.PacketBuffer, 4)
	n := ep.dequeue(context.Background(), out)
	for _, p := range out[:n] {
		p.DecRef()
	}
	if n != 1 {
		t.Fatalf("%d packets queued, want 1", n)
	}
}

// recordingDispatcher keeps a copy of every packet delivered to it.
type recordingDispatcher struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (d *recordingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := pkt.ToBuffer()
	d.pkts = append(d.pkts, b.Flatten())
	b.Release()
}

func (d *recordingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestGVisorGRODispatch (G4): a GRO set up by initGRO merges in-order
// segments of one flow into one packet and delivers it to the dispatcher
// at Flush, holding its own references meanwhile; end to end, the
// merged segment reaches gVisor's TCP as one.
func TestGVisorGRODispatch(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name+"/unit", func(t *testing.T) {
			var g gro.GRO
			d := &recordingDispatcher{}
			initGRO(&g, d)
			src, dst := netip.AddrPortFrom(fam.src, 40005), netip.AddrPortFrom(fam.dst, 443)
			var want []byte
			for i := range 3 {
				payload := bytes.Repeat([]byte{byte('a' + i)}, 1000)
				want = append(want, payload...)
				p := buildTCP(src, dst, 1000+uint32(i*1000), 77, header.TCPFlagAck, nil, payload)
				pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
				pkb.NetworkProtocolNumber = netProtoOf(fam.src)
				pkb.RXChecksumValidated = true
				g.Enqueue(pkb)
				pkb.DecRef() // as deliver does
			}
			if len(d.pkts) != 0 {
				broken(t, "G4", "GRO delivered %d packets before Flush, want 0", len(d.pkts))
			}
			g.Flush()
			if len(d.pkts) != 1 {
				broken(t, "G4", "GRO delivered %d packets for 3 in-order segments, want 1 merged", len(d.pkts))
			}
			sg, ok := parseSeg(gvOut{b: d.pkts[0]})
			if !ok || sg.seq != 1000 || !bytes.Equal(sg.payload, want) {
				broken(t, "G4", "merged packet seq %d, %d payload bytes, want 1000 and the 3000 bytes in order", sg.seq, len(sg.payload))
			}
		})
		t.Run(fam.name+"/stack", func(t *testing.T) {
			handle, conns := acceptAll()
			h := newGVHarness(t, handle, direct)
			initGRO(&h.s.gro, *h.s.ep.dispatcher.Load()) // as Start does
			f := &wsFlow{h: h, src: netip.AddrPortFrom(fam.src, 40006), dst: netip.AddrPortFrom(fam.dst, 443)}
			f.handshake(t, 9000)
			c := recvConn(t, conns)
			before := h.s.stack.Stats().TCP.ValidSegmentsReceived.Value()
			for range 3 {
				f.send(header.TCPFlagAck, make([]byte, 1000))
				f.seq += 1000
			}
			h.s.gro.Flush()
			c.SetReadDeadline(time.Now().Add(gvWait))
			buf := make([]byte, 3000)
			if _, err := readFull(c, buf); err != nil {
				broken(t, "G4", "merged data did not reach the connection: %v", err)
			}
			// gVisor counts a segment as its dispatcher takes it, on the
			// delivering goroutine (transport/tcp/dispatcher.go).
			after := h.s.stack.Stats().TCP.ValidSegmentsReceived.Value()
			if after-before != 1 {
				broken(t, "G4", "gVisor's TCP received %d segments for 3 merged ones, want 1", after-before)
			}
		})
	}
}

func readFull(c *Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestGVisorChecksumTrust (G5): on our NIC gVisor checks no checksum, IP
// or TCP: a SYN with broken ones still reaches the forwarder when handed
// to it past inbound's own check, as the offload path's partially summed
// packets are.
func TestGVisorChecksumTrust(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func([]byte)
	}{
		{name: "tcp", corrupt: func(p []byte) { p[header.IPv4MinimumSize+16] ^= 0xff }},
		{name: "ipv4", corrupt: func(p []byte) { p[10] ^= 0xff }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reqs := make(chan *TCPRequest, 1)
			h := newGVHarness(t, func(r *TCPRequest) { reqs <- r; r.Reject() }, direct)
			p := buildTCP(netip.MustParseAddrPort("10.152.152.11:40007"), netip.MustParseAddrPort("192.0.2.1:443"), 1, 0, header.TCPFlagSyn, nil, nil)
			tc.corrupt(p)
			pk := Classify(p)
			h.s.deliver(&pk, p)
			select {
			case <-reqs:
			case <-time.After(gvWait):
				broken(t, "G5", "a SYN with a bad %s checksum on a CapabilityRXChecksumOffload NIC never reached the forwarder: gVisor checks checksums again", tc.name)
			}
		})
	}
}

// receiveStream plays the receiving workstation of a flow whose router
// side writes data: it takes the data segments, checks each with check,
// acknowledges them and returns the bytes reassembled. id names the
// assumption a stall would break.
func receiveStream(t *testing.T, h *gvHarness, f *wsFlow, n int, id string, check func(seg)) []byte {
	t.Helper()
	got := make([]byte, n)
	base := f.ack
	recvd := 0
	for recvd < n {
		sg, ok := h.quiet(gvWait, func(sg seg) bool { return f.mine(sg) && len(sg.payload) > 0 })
		if !ok {
			broken(t, id, "gVisor stopped sending after %d of %d bytes", recvd, n)
		}
		check(sg)
		off := int(sg.seq - base)
		if off < 0 || off+len(sg.payload) > n {
			t.Fatalf("segment at offset %d", off)
		}
		copy(got[off:], sg.payload)
		recvd = max(recvd, off+len(sg.payload))
		f.ack = max(f.ack, sg.seq+uint32(len(sg.payload)))
		f.send(header.TCPFlagAck, nil) // acknowledge all received
	}
	return got
}

func testData(n int) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return data
}

// TestGVisorQueuedPacketsUnchanged (G3): packets the endpoint keeps by
// reference on its ring, drained later as writeLoop does, still hold what
// gVisor sent: valid checksums, and together the bytes written.
func TestGVisorQueuedPacketsUnchanged(t *testing.T) {
	handle, conns := acceptAll()
	h := newGVHarness(t, handle, ring)
	f := &wsFlow{h: h, src: netip.MustParseAddrPort("10.152.152.11:40012"), dst: netip.MustParseAddrPort("192.0.2.1:443")}
	f.handshake(t, 3000)
	c := recvConn(t, conns)
	data := testData(256 << 10)
	go c.Write(data)
	got := receiveStream(t, h, f, len(data), "G3", func(sg seg) {
		if !tcpChecksumValid(sg.out.b, header.IPv4MinimumSize) {
			broken(t, "G3", "a queued packet's checksum no longer matches its bytes: gVisor changed it after WritePacket")
		}
	})
	if !bytes.Equal(got, data) {
		broken(t, "G3", "the queued packets do not hold the bytes written: gVisor changed them after WritePacket")
	}
}

// TestGVisorGSORoundTrip (G6, G7 on real packets): with host GSO offered,
// gVisor's TCP sends super-packets whose GSO options, turned into a
// virtio-net header, let the kernel finish the checksum and cut MSS-sized
// segments; the bytes so delivered are the bytes written.
func TestGVisorGSORoundTrip(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			handle, conns := acceptAll()
			h := newGVHarness(t, handle, hostGSO)
			f := &wsFlow{h: h, src: netip.AddrPortFrom(fam.src, 40008), dst: netip.AddrPortFrom(fam.dst, 443)}
			f.handshake(t, 7000)
			c := recvConn(t, conns)
			data := testData(64 << 10)
			go c.Write(data)
			l3 := header.IPv4MinimumSize
			wantType := stack.GSOTCPv4
			wantVnet := uint8(vnet.GSOTCPv4)
			if fam.src.Is6() {
				l3, wantType, wantVnet = header.IPv6MinimumSize, stack.GSOTCPv6, vnet.GSOTCPv6
			}
			supers := 0
			got := receiveStream(t, h, f, len(data), "G6", func(sg seg) {
				o := sg.out
				gso := o.gso
				if gso.Type != wantType {
					broken(t, "G6", "GSO type %v, want %v", gso.Type, wantType)
				}
				if !gso.NeedsCsum || int(gso.L3HdrLen) != l3 || gso.CsumOffset != 16 {
					broken(t, "G6", "GSO NeedsCsum %v L3HdrLen %d CsumOffset %d, want true %d 16", gso.NeedsCsum, gso.L3HdrLen, gso.CsumOffset, l3)
				}
				thLen := int(header.TCP(o.b[l3:]).DataOffset())
				if o.hdrSize != l3+thLen {
					broken(t, "G6", "HeaderSize %d, want IP+TCP %d", o.hdrSize, l3+thLen)
				}
				if gso.MSS == 0 || int(gso.MSS) > 1500-l3-header.TCPMinimumSize {
					broken(t, "G6", "GSO MSS %d out of range", gso.MSS)
				}
				// The virtio-net header, as the kernel reads it.
				vh := vnet.Decode(o.vnet[:])
				field := func(i int) int { return int(binary.NativeEndian.Uint16(o.vnet[i:])) }
				if !vh.NeedsCsum() || field(6) != l3 || field(8) != 16 || field(2) != l3+thLen {
					broken(t, "G6", "virtio header %x does not carry the checksum and header positions", o.vnet)
				}
				if len(sg.payload) > int(gso.MSS) {
					supers++
					if vh.GSOType != wantVnet || field(4) != int(gso.MSS) {
						broken(t, "G6", "virtio header %x for a %d-byte super-packet, want type %d size %d", o.vnet, len(sg.payload), wantVnet, gso.MSS)
					}
				} else if vh.GSOType != vnet.GSONone {
					broken(t, "G6", "virtio GSO type %d on a packet within one MSS", vh.GSOType)
				}
				// The kernel completes the checksum from csum_start on.
				p := bytes.Clone(o.b)
				sum := ^checksum.Checksum(p[l3:], 0)
				p[l3+16], p[l3+17] = byte(sum>>8), byte(sum)
				if !tcpChecksumValid(p, l3) {
					broken(t, "G6", "the partial checksum gVisor left does not complete to a valid TCP checksum")
				}
			})
			if !bytes.Equal(got, data) {
				broken(t, "G7", "the bytes gVisor sent are not the bytes written")
			}
			if supers == 0 {
				broken(t, "G6", "no super-packet (longer than one MSS) in %d KiB with host GSO offered", len(data)>>10)
			}
		})
	}
}

// tcpChecksumValid checks a whole IPv4 or IPv6 TCP packet's checksum.
func tcpChecksumValid(p []byte, l3 int) bool {
	var src, dst tcpip.Address
	if l3 == header.IPv4MinimumSize {
		src, dst = header.IPv4(p).SourceAddress(), header.IPv4(p).DestinationAddress()
	} else {
		src, dst = header.IPv6(p).SourceAddress(), header.IPv6(p).DestinationAddress()
	}
	th := header.TCP(p[l3:])
	payload := th[th.DataOffset():]
	return th.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload)))
}

// TestGVisorPacketViews (G7): packetViews and CopyPacket see exactly the
// packet's bytes, for packets built as gVisor's TCP builds them (headers
// pushed into reserved headroom in front of a payload of several views).
func TestGVisorPacketViews(t *testing.T) {
	for _, tc := range []struct {
		name     string
		payloads [][]byte
	}{
		{name: "empty"},
		{name: "one", payloads: [][]byte{bytes.Repeat([]byte{1}, 1448)}},
		{name: "several", payloads: [][]byte{bytes.Repeat([]byte{2}, 100), {}, bytes.Repeat([]byte{3}, 9000), {4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var payload buffer.Buffer
			for _, p := range tc.payloads {
				payload.Append(buffer.NewViewWithData(p))
			}
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
				ReserveHeaderBytes: 128,
				Payload:            payload,
			})
			defer pkt.DecRef()
			copy(pkt.TransportHeader().Push(header.TCPMinimumSize+12), bytes.Repeat([]byte{0xaa}, 32))
			copy(pkt.NetworkHeader().Push(header.IPv6MinimumSize), bytes.Repeat([]byte{0xbb}, 40))
			v := pkt.ToView()
			want := bytes.Clone(v.AsSlice())
			v.Release()
			var got []byte
			it := packetViews(pkt)
			for b := it.next(); b != nil; b = it.next() {
				if len(b) == 0 {
					broken(t, "G7", "an empty run")
				}
				got = append(got, b...)
			}
			if !bytes.Equal(got, want) || len(got) != pkt.Size() {
				broken(t, "G7", "views from AsViewList's offset give %d bytes, want the packet's %d", len(got), pkt.Size())
			}
			flat := make([]byte, pkt.Size())
			CopyPacket(flat, pkt) // the function bench uses too
			if !bytes.Equal(flat, want) {
				broken(t, "G7", "CopyPacket differs from the packet")
			}
		})
	}
}

// TestGVisorForwarderInFlight (G8): the forwarder starts one request per
// 4-tuple on its own goroutine, ignores a retransmitted SYN while it is in
// flight, forgets the 4-tuple on Complete, and leaves segments that are
// not SYNs to gVisor (which resets them).
func TestGVisorForwarderInFlight(t *testing.T) {
	reqs := make(chan *TCPRequest, 4)
	release := make(chan struct{})
	h := newGVHarness(t, func(r *TCPRequest) {
		reqs <- r
		<-release
		r.Reject()
	}, direct)
	f := &wsFlow{h: h, src: netip.MustParseAddrPort("10.152.152.11:40009"), dst: netip.MustParseAddrPort("192.0.2.1:443")}
	done := make(chan struct{})
	go func() { f.syn(100); close(done) }()
	select {
	case <-done:
	case <-time.After(gvWait):
		broken(t, "G8", "HandlePacket did not return while the request's handler ran: no goroutine of its own")
	}
	select {
	case <-reqs:
	case <-time.After(gvWait):
		broken(t, "G8", "a SYN started no request")
	}
	f.syn(100) // retransmitted
	if held, total := h.s.Pending(f.src.Addr()); held != 1 || total != 1 {
		t.Fatalf("pending %d of %d after a retransmitted SYN, want 1 of 1", held, total)
	}
	// Without handleSYN's own entry, the duplicate reaches the forwarder,
	// which must ignore it too. handleSYN takes a second slot and puts its
	// entry back; the slot is returned here.
	h.s.pendingMu.Lock()
	delete(h.s.pendingIDs, endpointID(f))
	h.s.pendingMu.Unlock()
	f.syn(100)
	h.s.pending.Release(f.src.Addr())
	select {
	case <-reqs:
		broken(t, "G8", "the forwarder started a second request for a 4-tuple in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	h.next(t, "RST of the rejected request", func(sg seg) bool { return f.mine(sg) && sg.flags&header.TCPFlagRst != 0 })
	deadline := time.Now().Add(gvWait)
	for {
		if held, _ := h.s.Pending(f.src.Addr()); held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pending handshake never released")
		}
		time.Sleep(time.Millisecond)
	}
	f.syn(100)
	select {
	case <-reqs:
	case <-time.After(gvWait):
		broken(t, "G8", "after Complete, a new SYN for the 4-tuple started no request: the forwarder kept it in flight")
	}
	// Not a SYN, no endpoint: the forwarder declines it, gVisor resets.
	g := &wsFlow{h: h, src: netip.MustParseAddrPort("10.152.152.11:40010"), dst: f.dst, seq: 5, ack: 6}
	g.send(header.TCPFlagAck, nil)
	if _, ok := h.quiet(gvWait, func(sg seg) bool { return g.mine(sg) && sg.flags&header.TCPFlagRst != 0 }); !ok {
		broken(t, "G8", "a stray ACK got no RST: HandlePacket claimed a segment that is not a SYN")
	}
}

// TestGVisorHandshakeTimeout (G9): a workstation that never acknowledges
// our SYN-ACK releases the request once the timeout's writable event
// arrives, long before gVisor's own retransmissions give up.
func TestGVisorHandshakeTimeout(t *testing.T) {
	res := make(chan error, 1)
	h := newGVHarness(t, func(r *TCPRequest) {
		r.done.Store(true)
		var wq waiter.Queue
		ep, err := createEndpoint(r.r, &wq, 100*time.Millisecond)
		var out error
		if ep != nil {
			ep.Close()
		} else {
			out = fmt.Errorf("%s", err)
		}
		r.r.Complete(true)
		r.finish(false)
		// Answer last: the test ends (and TestMain checks gVisor's
		// references) only once the request released its segment.
		res <- out
	}, direct)
	f := &wsFlow{h: h, src: netip.MustParseAddrPort("10.152.152.11:40011"), dst: netip.MustParseAddrPort("192.0.2.1:443")}
	f.syn(100)
	h.next(t, "SYN-ACK", func(sg seg) bool { return f.mine(sg) && sg.flags == header.TCPFlagSyn|header.TCPFlagAck })
	select {
	case err := <-res:
		if err == nil {
			broken(t, "G9", "CreateEndpoint returned an endpoint for a handshake never acknowledged")
		}
	case <-time.After(gvWait):
		broken(t, "G9", "CreateEndpoint still waits %v after the timeout's writable event", gvWait)
	}
}
