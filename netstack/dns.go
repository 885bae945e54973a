package netstack

import (
	"context"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/torgate/torgate/dns"
)

// dnsUDP answers a UDP/53 datagram to any destination. The answer comes
// from the address the query was sent to, so the workstation's resolver
// accepts it whatever server it thinks it is talking to.
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
	if !s.dnsUDPs.Acquire(who) {
		s.stats.Drops[ReasonShare].Add(1)
		return
	}
	s.stats.DNSQueries.Add(1)
	// pkt belongs to the read loop; the answer may take a Tor round trip.
	query := append([]byte(nil), udp.Payload()[:int(udp.Length())-header.UDPMinimumSize]...)
	src, dst := p.Src, p.Dst
	version := p.Version
	s.wg.Go(func() {
		defer s.dnsUDPs.Release(who)
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DNSTimeout)
		defer cancel()
		resp, err := s.cfg.DNS.Handle(ctx, who, query, true, nil)
		if err != nil || len(resp) < 12 {
			return
		}
		hdr := header.IPv4MinimumSize
		if version == 6 {
			hdr = header.IPv6MinimumSize
		}
		// Too big for one packet: the client retries over TCP.
		resp = dns.Truncate(resp, s.mtu-hdr-header.UDPMinimumSize)
		s.sendUDP(version, dst, src, resp)
	})
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
	s.queueRaw(b, proto)
}

// dnsTCP serves DNS over TCP (dns.ServeTCP) on an intercepted port-53
// connection, answered locally: it never goes to the TCP handler. The
// connection holds a slot of its source's share of the TCP/53 pool, never
// a UDP worker.
func (s *Stack) dnsTCP(req *TCPRequest) {
	if s.cfg.DNS == nil {
		req.Reject()
		return
	}
	src := req.who
	if !s.dnsTCPs.Acquire(src) {
		s.stats.Drops[ReasonShare].Add(1)
		req.Reject()
		return
	}
	defer s.dnsTCPs.Release(src)
	c, err := req.Accept()
	if err != nil {
		return
	}
	conn := c.(*Conn)
	defer conn.Close()
	stop := context.AfterFunc(s.ctx, func() { conn.Close() })
	defer stop()
	// dns frames the messages and bounds the connection (RFC 7766); the
	// stack counts and times each answer.
	dns.ServeTCP(conn, func(query, scratch []byte) ([]byte, error) {
		s.stats.DNSQueries.Add(1)
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DNSTimeout)
		defer cancel()
		return s.cfg.DNS.Handle(ctx, src, query, false, scratch)
	})
}
