package netstack

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/torgate/torgate/internal/flow"
)

// dnsUDP hands a UDP/53 datagram to any destination to the DNS hook,
// which answers it (or not) on its own goroutine. The answer comes from
// the address the query was sent to, so the workstation's resolver
// accepts it whatever server it thinks it is talking to. Nothing here
// allocates: a query the hook drops (a flood) costs no garbage.
func (s *Stack) dnsUDP(p *Packet, pkt []byte, csumOK bool) {
	udp := header.UDP(pkt[p.L4:])
	if !csumOK && !udpChecksumOK(p, pkt, udp) {
		s.stats.Drops[ReasonMalformed].Add(1)
		return
	}
	who, ok := s.identify(p.Src.Addr())
	if !ok {
		s.stats.Drops[ReasonUnidentified].Add(1)
		return
	}
	hdr := header.IPv4MinimumSize
	if p.Version == 6 {
		hdr = header.IPv6MinimumSize
	}
	query := udp.Payload()[:int(udp.Length())-header.UDPMinimumSize]
	reply := flow.NewReply((*udpLink)(s), p.Dst, p.Src)
	s.cfg.DNS.ServeDatagram(who, query, s.mtu-hdr-header.UDPMinimumSize, reply)
}

// udpLink is the Stack as a flow.Link, for the DNS hook's replies; a
// type of its own so that sending from any address is no method of Stack.
type udpLink Stack

var _ flow.Link = (*udpLink)(nil)

// SendUDP sends a DNS answer to the workstation that asked.
func (l *udpLink) SendUDP(from, to netip.AddrPort, payload []byte) {
	s := (*Stack)(l)
	// After Close the link is gone: nothing to send, nothing to count.
	if s.ctx.Err() != nil {
		return
	}
	var version uint8 = 4
	if from.Addr().Is6() {
		version = 6
	}
	s.sendUDP(version, from, to, payload)
}

func udpChecksumOK(p *Packet, pkt []byte, udp header.UDP) bool {
	if p.Version == 4 && udp.Checksum() == 0 {
		return true // IPv4 allows no checksum
	}
	src := tcpip.AddrFromSlice(p.Src.Addr().AsSlice())
	dst := tcpip.AddrFromSlice(p.Dst.Addr().AsSlice())
	payload := udp.Payload()[:int(udp.Length())-header.UDPMinimumSize]
	return udp.IsChecksumValid(src, dst, checksum.Checksum(payload, 0))
}

// sendUDP builds an IP/UDP packet from src to dst and queues it for the TUN.
func (s *Stack) sendUDP(version uint8, src, dst netip.AddrPort, payload []byte) {
	b, off, proto, srcA, dstA := rawPacket(version == 6, src.Addr(), dst.Addr(), header.UDPProtocolNumber, header.UDPMinimumSize+len(payload))
	u := header.UDP(b[off:])
	u.Encode(&header.UDPFields{
		SrcPort: src.Port(),
		DstPort: dst.Port(),
		Length:  uint16(header.UDPMinimumSize + len(payload)),
	})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, srcA, dstA, u.Length())
	xsum = checksum.Checksum(payload, xsum)
	u.SetChecksum(^u.CalculateChecksum(xsum))
	s.queueRaw(b, proto, true)
}
