package netstack

import (
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/torgate/torgate/internal/vnet"
)

// This file fences in every place where torgate relies on a gVisor
// behaviour that gVisor's API does not promise: what a function does
// beyond its doc comment, or a type used outside the role gVisor built it
// for. A gVisor upgrade that changes one of them compiles and then fails
// silently, so each one lives here, says what it assumes and where in
// gVisor that comes from (paths under gvisor.dev/gvisor/pkg/tcpip at the
// version go.mod pins; doc.go records it), and has a test in
// gvisor_test.go whose failure names the assumption:
//
//	G1 TIME_WAIT reclaim              abortTimeWait        TestGVisorTimeWaitReclaim
//	                                                       (TestGVisorTimeWaitStillDropped fails once it is no longer needed)
//	G2 Abort sends a RST, then Close  abortEndpoint        TestGVisorAbortSendsRST
//	G3 our queueing discipline        createNIC            TestGVisorQDiscInForce, TestGVisorQueuedPacketsUnchanged
//	G4 GRO driven by hand             initGRO              TestGVisorGRODispatch
//	G5 NIC-level checksum trust       rxChecksumOffload    TestGVisorChecksumTrust
//	G6 host GSO options               vnetGSOHeader        TestGVisorGSORoundTrip
//	G7 packet views                   packetViews          TestGVisorPacketViews
//	G8 forwarder's in-flight table    forwardSYN           TestGVisorForwarderInFlight
//	G9 handshake wait ends on notify  createEndpoint       TestGVisorHandshakeTimeout
//
// What stays outside: gVisor's exported API used as documented (stack
// and TCP options, header encoders, tcpip.Endpoint Read, Write and
// Shutdown, waiter queues, stack.Stats), where a change breaks the build
// rather than behaviour. bench/workstation.go, the test workstation, also
// replaces its NIC's queueing discipline (G3) and flattens packets with
// CopyPacket (G7), the one export here, so that G7 has one home.

// G1. abortTimeWait aborts the endpoint that owns id if it is in
// TIME_WAIT, and reports whether it did.
//
// Assumptions:
//   - gVisor hands a SYN that hits a TIME_WAIT endpoint on only to a
//     listening endpoint (transport/tcp/connect.go,
//     handleTimeWaitSegments: it looks up a *tcp.Endpoint in StateListen).
//     The forwarder is no endpoint, so without this the SYN vanishes.
//   - stack.FindTransportEndpoint returns the TIME_WAIT endpoint for its
//     4-tuple (it stays registered in the demuxer until the TIME_WAIT timer
//     fires), as a *tcp.Endpoint.
//   - tcp.Endpoint.Abort on a TIME_WAIT endpoint (StateTimeWait counts as
//     connected, transport/tcp/endpoint.go Abort) resets and unregisters
//     it before returning, so the SYN delivered right after reaches the
//     stack's default handler, the forwarder. The RST it emits carries the
//     old connection's numbers; a client in SYN-SENT discards it (RFC 9293
//     3.10.7.3).
func abortTimeWait(st *stack.Stack, netProto tcpip.NetworkProtocolNumber, id stack.TransportEndpointID) bool {
	ep := st.FindTransportEndpoint(netProto, tcp.ProtocolNumber, id, nicID)
	if ep == nil {
		return false
	}
	te, ok := ep.(*tcp.Endpoint)
	if !ok || tcp.EndpointState(te.State()) != tcp.StateTimeWait {
		return false
	}
	te.Abort()
	return true
}

// G2. abortEndpoint ends a connection with a RST and releases it.
//
// Assumptions (transport/tcp/endpoint.go, Abort and Close):
//   - Abort on a connected endpoint, including one whose FIN was already
//     sent (FIN_WAIT_1/2, CLOSING, LAST_ACK), sends a RST with the next
//     sequence number the peer expects (snd.nxt) and the ACK of what was
//     received, so the peer accepts it; it discards both buffers.
//   - Abort does not free the endpoint: Close still must be called, and
//     after Abort it sends nothing more.
func abortEndpoint(ep tcpip.Endpoint) {
	ep.Abort()
	ep.Close()
}

// nicEndpoint is a link endpoint that is also its own queueing
// discipline.
type nicEndpoint interface {
	stack.LinkEndpoint
	stack.QueueingDiscipline
}

// G3. createNIC creates the NIC with ep as its own queueing discipline.
//
// Assumptions (stack/nic.go, newNIC and writePacket):
//   - With NICOptions.QDisc set, gVisor sends every outbound packet
//     through QDisc.WritePacket, on the sending goroutine, instead of its
//     default, delegatingQueueingDiscipline, which wraps each packet in a
//     one-element PacketBufferList (an allocation per packet) and calls
//     LinkWriter.WritePackets.
//   - gVisor TCP never calls LinkEndpoint.WritePackets directly.
//   - A packet handed to WritePacket is not modified afterwards, so the
//     endpoint may keep it by reference (IncRef) until writeLoop copies it.
func createNIC(st *stack.Stack, ep nicEndpoint) tcpip.Error {
	return st.CreateNICWithOptions(nicID, ep, stack.NICOptions{QDisc: ep})
}

// G4. initGRO makes g coalesce inbound TCP segments and deliver them to
// d, the NIC's dispatcher (what gVisor passed to the link endpoint's
// Attach).
//
// Assumptions (stack/gro/gro.go):
//   - gro.GRO is driven by the link endpoint, as gVisor's own fdbased
//     endpoint drives it (link/fdbased/packet_dispatchers.go): Init(true)
//     turns it on and its exported Dispatcher field, set directly, is
//     where Enqueue and Flush deliver (handlePacket).
//   - Enqueue takes whole IP packets in pkt.Data() with
//     NetworkProtocolNumber set, merges in-order segments of one flow
//     (same ACK, flags, options) into one packet, and holds its own
//     reference to what it keeps: the caller's DecRef right after Enqueue
//     is safe.
//   - With RXChecksumValidated set, GRO does not check checksums again.
func initGRO(g *gro.GRO, d stack.NetworkDispatcher) {
	g.Init(true)
	g.Dispatcher = d
}

// G5. rxChecksumOffload is the NIC capability under which gVisor checks
// no inbound checksum.
//
// Assumption: gVisor takes a packet's checksum state from the NIC, not
// from the packet (stack/nic.go DeliverNetworkPacket sets
// RXChecksumValidated from CapabilityRXChecksumOffload), and neither IP
// (network/ipv4) nor TCP (transport/tcp/segment.go) verifies a
// checksum then. inbound checks every packet the kernel did not vouch for
// (checksumsValid) before GRO, so each is summed once; and the offload
// path's super-packets, whose TCP checksum holds only the pseudo-header
// sum (virtio NEEDS_CSUM), would otherwise all be dropped.
const rxChecksumOffload = stack.CapabilityRXChecksumOffload

// G6. vnetGSOHeader fills hdr, the virtio-net header in front of a packet
// written to a Linux TUN (include/uapi/linux/virtio_net.h), from the GSO
// state gVisor attached to pkt.
//
// Assumptions, for a link endpoint reporting HostGSOSupported and a
// GSOMaxSize (transport/tcp/connect.go buildTCPHdr, stack/route.go):
//   - gVisor TCP sends segments of up to GSOMaxSize with GSOOptions set:
//     Type GSOTCPv4 or GSOTCPv6 by IP version, MSS the segment size the
//     kernel is to cut at, NeedsCsum with L3HdrLen (the IP header length,
//     virtio csum_start) and CsumOffset (16, where TCP keeps its checksum).
//   - With NeedsCsum the TCP checksum field holds the pseudo-header sum
//     over the whole packet's length (CHECKSUM_PARTIAL): summing the
//     packet from L3HdrLen on completes it.
//   - pkt.HeaderSize() is the IP plus TCP header length (virtio hdr_len).
//
// As gVisor's fdbased endpoint does (link/fdbased/endpoint.go), a packet
// no longer than one MSS goes without a GSO type.
func vnetGSOHeader(hdr *[vnetHdrLen]byte, pkt *stack.PacketBuffer) {
	var h vnet.Header
	gso := pkt.GSOOptions
	if gso.Type != stack.GSONone {
		h.HdrLen = uint16(pkt.HeaderSize())
		if gso.NeedsCsum {
			h.Flags = vnet.FlagNeedsCsum
			h.CsumStart, h.CsumOffset = gso.L3HdrLen, gso.CsumOffset
		}
		if pkt.Data().Size() > int(gso.MSS) {
			switch gso.Type {
			case stack.GSOTCPv4:
				h.GSOType = vnet.GSOTCPv4
			case stack.GSOTCPv6:
				h.GSOType = vnet.GSOTCPv6
			}
			h.GSOSize = gso.MSS
		}
	}
	h.Encode(hdr[:])
}

// G7. viewIter walks the bytes of a packet as gVisor holds them, one view
// at a time, without copying or allocating.
//
// Assumption (stack/packet_buffer.go AsViewList): the packet's bytes are
// the views of its buffer from the returned offset on, to the end of the
// list: the offset skips the headroom not yet pushed, and nothing follows
// the packet. A view may be empty.
type viewIter struct {
	v   *buffer.View
	off int
}

func packetViews(pkt *stack.PacketBuffer) viewIter {
	vl, off := pkt.AsViewList()
	return viewIter{v: vl.Front(), off: off}
}

// next returns the next non-empty run of the packet's bytes, or nil at
// the end.
func (it *viewIter) next() []byte {
	for it.v != nil {
		b := it.v.AsSlice()
		it.v = it.v.Next()
		if it.off >= len(b) {
			it.off -= len(b)
			continue
		}
		b = b[it.off:]
		it.off = 0
		return b
	}
	return nil
}

// CopyPacket flattens pkt into dst, which must be pkt.Size() long, without
// allocating. The router's link endpoints use it, and so does bench's
// workstation, a separate simulated host, for what its own stack sends: it
// is the one function of netstack's API that takes a gVisor type, exported
// rather than copied so that G7's assumption lives, and is tested, in one
// place.
func CopyPacket(dst []byte, pkt *stack.PacketBuffer) {
	it := packetViews(pkt)
	for b := it.next(); b != nil && len(dst) > 0; b = it.next() {
		dst = dst[copy(dst, b):]
	}
}

// G8. forwardSYN hands a segment no endpoint owns to gVisor's forwarder.
// handleSYN's per-source accounting of pending handshakes rests on how
// the forwarder keeps its own table (transport/tcp/forwarder.go):
//   - HandlePacket returns false only for what is not a well-formed SYN
//     (its checksum taken as valid under G5); for a SYN it returns true
//     and either starts a request, on a new goroutine, or ignores the SYN
//     because a request for the same 4-tuple is in flight or maxInFlight
//     requests are.
//   - ForwarderRequest.Complete removes the 4-tuple from the forwarder's
//     table before it returns, so once our own entry (removed after
//     Complete) is gone, a new SYN for that 4-tuple starts a new request.
//   - It is called from stack.SetTransportProtocolHandler's default
//     handler, which gVisor runs synchronously on the delivering
//     goroutine (stack/nic.go DeliverTransportPacket), for every segment
//     of a 4-tuple no endpoint owns.
func forwardSYN(f *tcp.Forwarder, id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	return f.HandlePacket(id, pkt)
}

// G9. createEndpoint completes a forwarded handshake: it sends the
// SYN-ACK and waits for the workstation's ACK, for at most timeout.
//
// Assumption (transport/tcp/accept.go performHandshake): CreateEndpoint
// blocks until a writable event on wq, then looks at the endpoint and
// fails (closing it) if it is not connected. gVisor's own wait ends only
// when it gives up retransmitting the SYN-ACK (about two minutes), so a
// spurious writable event after timeout ends it early.
func createEndpoint(r *tcp.ForwarderRequest, wq *waiter.Queue, timeout time.Duration) (tcpip.Endpoint, tcpip.Error) {
	timer := time.AfterFunc(timeout, func() { wq.Notify(waiter.WritableEvents) })
	defer timer.Stop()
	return r.CreateEndpoint(wq)
}
