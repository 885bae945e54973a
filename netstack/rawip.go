package netstack

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Packets torgate writes itself, outside gVisor's endpoints: DNS answers
// over UDP (dns.go) and the pokes after a reset (poke.go). Both are rare
// next to the forwarded traffic, so they allocate.

// rawPacket allocates an IPv4 (or, with v6, IPv6) packet from src to dst
// whose payload is l4Len bytes of transport protocol tp, with the IP
// header written. The transport header starts at off; srcA and dstA are
// the addresses for its pseudo-header checksum.
func rawPacket(v6 bool, src, dst netip.Addr, tp tcpip.TransportProtocolNumber, l4Len int) (b []byte, off int, proto tcpip.NetworkProtocolNumber, srcA, dstA tcpip.Address) {
	srcA = tcpip.AddrFromSlice(src.AsSlice())
	dstA = tcpip.AddrFromSlice(dst.AsSlice())
	if !v6 {
		off = header.IPv4MinimumSize
		b = make([]byte, off+l4Len)
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)),
			TTL:         64,
			Protocol:    uint8(tp),
			SrcAddr:     srcA,
			DstAddr:     dstA,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		return b, off, header.IPv4ProtocolNumber, srcA, dstA
	}
	off = header.IPv6MinimumSize
	b = make([]byte, off+l4Len)
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(l4Len),
		TransportProtocol: tp,
		HopLimit:          64,
		SrcAddr:           srcA,
		DstAddr:           dstA,
	})
	return b, off, header.IPv6ProtocolNumber, srcA, dstA
}

// queueRaw hands one packet built by rawPacket to the link, as gVisor's
// own packets go; a full queue is a drop the link counts. data says
// whether the packet carries transport payload: a DNS answer does and
// queues like data; a poke (a bare ACK) does not and, like gVisor's RSTs
// and FINs, may use the room kept for control segments. Ending 8,000 flows
// at once queues 16,000 pokes beside their RSTs: counted as data, they
// overflowed the 4,096 data packets the queue holds (TestMassCloseLosesNoFIN
// under GOMAXPROCS=1, 1 run in 6, 2026-12-06).
func (s *Stack) queueRaw(b []byte, proto tcpip.NetworkProtocolNumber, data bool) {
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	pkb.NetworkProtocolNumber = proto
	s.ep.enqueue(pkb, data)
	pkb.DecRef()
}
