package netstack

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// DNS over TCP limits: a workstation's resolver opens a connection per
// query or pipelines a few; anything longer-lived is holding a slot.
const (
	// dnsTCPIdle closes a connection with no query for this long (RFC
	// 7766 6.2.3 suggests seconds).
	dnsTCPIdle = 10 * time.Second
	// dnsTCPMaxLife closes a connection this long after it opened, however
	// busy: a query every few seconds must not hold a slot for good.
	dnsTCPMaxLife = 2 * time.Minute
	// dnsTCPMaxQueries answered per connection; then the connection ends
	// with a FIN after the last answer.
	dnsTCPMaxQueries = 256
	// dnsTCPLinger bounds how long a closing connection waits for the
	// client to read the last answers and close its side.
	dnsTCPLinger = 5 * time.Second
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
	if !s.dnsUDPs.Acquire(p.Src.Addr()) {
		s.stats.Drops[ReasonShare].Add(1)
		return
	}
	s.stats.DNSQueries.Add(1)
	// pkt belongs to the read loop; the answer may take a Tor round trip.
	query := append([]byte(nil), udp.Payload()[:int(udp.Length())-header.UDPMinimumSize]...)
	src, dst := p.Src, p.Dst
	version := p.Version
	s.wg.Go(func() {
		defer s.dnsUDPs.Release(src.Addr())
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DNSTimeout)
		defer cancel()
		resp, err := s.cfg.DNS.Handle(ctx, src.Addr(), query, true, nil)
		if err != nil || len(resp) < 12 {
			return
		}
		hdr := header.IPv4MinimumSize
		if version == 6 {
			hdr = header.IPv6MinimumSize
		}
		if hdr+header.UDPMinimumSize+len(resp) > s.mtu {
			// Too big for one packet: tell the client to retry over
			// TCP with the header alone, TC set and no sections.
			resp = resp[:12]
			resp[2] |= 0x02
			clear(resp[4:12])
		}
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
	hdr := header.IPv4MinimumSize
	proto := header.IPv4ProtocolNumber
	if version == 6 {
		hdr = header.IPv6MinimumSize
		proto = header.IPv6ProtocolNumber
	}
	total := hdr + header.UDPMinimumSize + len(payload)
	b := make([]byte, total)
	srcA := tcpip.AddrFromSlice(src.Addr().AsSlice())
	dstA := tcpip.AddrFromSlice(dst.Addr().AsSlice())
	if version == 4 {
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(total),
			TTL:         64,
			Protocol:    uint8(header.UDPProtocolNumber),
			SrcAddr:     srcA,
			DstAddr:     dstA,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	} else {
		header.IPv6(b).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(header.UDPMinimumSize + len(payload)),
			TransportProtocol: header.UDPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           srcA,
			DstAddr:           dstA,
		})
	}
	u := header.UDP(b[hdr:])
	u.Encode(&header.UDPFields{
		SrcPort: src.Port(),
		DstPort: dst.Port(),
		Length:  uint16(header.UDPMinimumSize + len(payload)),
	})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, srcA, dstA, u.Length())
	xsum = checksum.Checksum(payload, xsum)
	u.SetChecksum(^u.CalculateChecksum(xsum))

	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	pkb.NetworkProtocolNumber = proto
	var list stack.PacketBufferList
	list.PushBack(pkb)
	if _, err := s.ep.WritePackets(list); err != nil {
		s.stats.Drops[ReasonOverload].Add(1)
	}
	pkb.DecRef()
}

// dnsTCP serves DNS over TCP (RFC 7766 framing) on an intercepted port-53
// connection, answered locally: it never goes to the TCP handler. The
// connection holds a slot of its source's share of the TCP/53 pool, never
// a UDP worker.
func (s *Stack) dnsTCP(req *TCPRequest) {
	if s.cfg.DNS == nil {
		req.Reject()
		return
	}
	src := req.Src.Addr()
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

	msg := make([]byte, 65535)
	scratch := make([]byte, 0, 4096)
	frame := make([]byte, 0, 2+4096)
	end := time.Now().Add(dnsTCPMaxLife)
	for range dnsTCPMaxQueries {
		deadline := time.Now().Add(dnsTCPIdle)
		if deadline.After(end) {
			deadline = end
		}
		conn.SetReadDeadline(deadline)
		if _, err := io.ReadFull(conn, msg[:2]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().After(end) {
				s.finishDNSTCP(conn, msg)
			}
			return
		}
		n := int(binary.BigEndian.Uint16(msg[:2]))
		if _, err := io.ReadFull(conn, msg[:n]); err != nil {
			return
		}
		s.stats.DNSQueries.Add(1)
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DNSTimeout)
		out, err := s.cfg.DNS.Handle(ctx, src, msg[:n], false, scratch[:0])
		cancel()
		if err != nil || len(out) < 12 || len(out) > 65535 {
			s.finishDNSTCP(conn, msg)
			return
		}
		frame = binary.BigEndian.AppendUint16(frame[:0], uint16(len(out)))
		frame = append(frame, out...)
		conn.SetWriteDeadline(time.Now().Add(dnsTCPIdle))
		if _, err := conn.Write(frame); err != nil {
			return
		}
	}
	s.finishDNSTCP(conn, msg)
}

// finishDNSTCP ends a DNS connection that may have unread pipelined
// queries without losing the answers already written: closing a socket
// with unread data sends a RST, and a RST makes the client discard what
// it has not read yet. So: FIN after the last answer, then read and
// discard until the client closes (it resends the unanswered queries on a
// new connection, RFC 7766 6.2.1) or dnsTCPLinger passes; only then close.
func (s *Stack) finishDNSTCP(conn *Conn, buf []byte) {
	conn.CloseWrite()
	conn.SetReadDeadline(time.Now().Add(dnsTCPLinger))
	for {
		if _, err := conn.Read(buf); err != nil {
			return
		}
	}
}
