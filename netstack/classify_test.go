package netstack

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Packet builders on gVisor's header package.

func ipv4Packet(proto uint8, src, dst netip.Addr, flagsFrag uint16, l4 []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(l4))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    proto,
		SrcAddr:     tcpip.AddrFrom4(src.As4()),
		DstAddr:     tcpip.AddrFrom4(dst.As4()),
	})
	binary.BigEndian.PutUint16(b[6:8], flagsFrag)
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], l4)
	return b
}

func ipv6Packet(next uint8, src, dst netip.Addr, l4 []byte) []byte {
	b := make([]byte, header.IPv6MinimumSize+len(l4))
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(l4)),
		TransportProtocol: tcpip.TransportProtocolNumber(next),
		HopLimit:          64,
		SrcAddr:           tcpip.AddrFrom16(src.As16()),
		DstAddr:           tcpip.AddrFrom16(dst.As16()),
	})
	copy(b[header.IPv6MinimumSize:], l4)
	return b
}

func tcpSegment(sport, dport uint16, flags uint8) []byte {
	b := make([]byte, header.TCPMinimumSize)
	header.TCP(b).Encode(&header.TCPFields{SrcPort: sport, DstPort: dport, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlags(flags), WindowSize: 65535})
	return b
}

func udpDatagram(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(b).Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(len(b))})
	copy(b[header.UDPMinimumSize:], payload)
	return b
}

var (
	src4 = netip.MustParseAddr("10.152.152.11")
	dst4 = netip.MustParseAddr("192.0.2.1")
	src6 = netip.MustParseAddr("fd00::11")
	dst6 = netip.MustParseAddr("2001:db8::1")
)

func TestClassify(t *testing.T) {
	frag6 := append([]byte{protoTCP, 0, 0, 1, 0, 0, 0, 1}, tcpSegment(1, 80, tcpFlagSyn)...)
	hopByHop := append([]byte{protoTCP, 0, 0, 0, 0, 0, 0, 0}, tcpSegment(1, 80, tcpFlagSyn)...)
	tests := []struct {
		name    string
		pkt     []byte
		verdict Verdict
		reason  Reason
		dst     netip.AddrPort
	}{
		{name: "tcp4 syn", pkt: ipv4Packet(protoTCP, src4, dst4, 0, tcpSegment(40000, 443, tcpFlagSyn)), verdict: VerdictTCP, dst: netip.AddrPortFrom(dst4, 443)},
		{name: "tcp6 syn", pkt: ipv6Packet(protoTCP, src6, dst6, tcpSegment(40000, 80, tcpFlagSyn)), verdict: VerdictTCP, dst: netip.AddrPortFrom(dst6, 80)},
		{name: "tcp6 after hop-by-hop", pkt: ipv6Packet(0, src6, dst6, hopByHop), verdict: VerdictTCP, dst: netip.AddrPortFrom(dst6, 80)},
		{name: "dns4", pkt: ipv4Packet(protoUDP, src4, dst4, 0, udpDatagram(5353, 53, []byte{1, 2})), verdict: VerdictDNS, dst: netip.AddrPortFrom(dst4, 53)},
		{name: "dns6", pkt: ipv6Packet(protoUDP, src6, dst6, udpDatagram(5353, 53, nil)), verdict: VerdictDNS, dst: netip.AddrPortFrom(dst6, 53)},
		{name: "udp other port", pkt: ipv4Packet(protoUDP, src4, dst4, 0, udpDatagram(5353, 443, nil)), verdict: VerdictDrop, reason: ReasonUDP},
		{name: "icmp4", pkt: ipv4Packet(protoICMP, src4, dst4, 0, make([]byte, 8)), verdict: VerdictDrop, reason: ReasonICMP},
		{name: "icmp6", pkt: ipv6Packet(protoICMPv6, src6, dst6, make([]byte, 8)), verdict: VerdictDrop, reason: ReasonICMP},
		{name: "ipv4 more fragments", pkt: ipv4Packet(protoTCP, src4, dst4, 0x2000, tcpSegment(1, 80, tcpFlagSyn)), verdict: VerdictDrop, reason: ReasonFragment},
		{name: "ipv4 fragment offset", pkt: ipv4Packet(protoUDP, src4, dst4, 0x0010, udpDatagram(1, 53, nil)), verdict: VerdictDrop, reason: ReasonFragment},
		{name: "ipv6 fragment header", pkt: ipv6Packet(protoFrag6, src6, dst6, frag6), verdict: VerdictDrop, reason: ReasonFragment},
		{name: "gre", pkt: ipv4Packet(47, src4, dst4, 0, make([]byte, 8)), verdict: VerdictDrop, reason: ReasonProtocol},
		{name: "empty", pkt: nil, verdict: VerdictDrop, reason: ReasonMalformed},
		{name: "version 5", pkt: []byte{0x50, 0, 0, 0}, verdict: VerdictDrop, reason: ReasonMalformed},
		{name: "truncated tcp", pkt: ipv4Packet(protoTCP, src4, dst4, 0, make([]byte, 10)), verdict: VerdictDrop, reason: ReasonMalformed},
		{name: "udp length lies", pkt: ipv4Packet(protoUDP, src4, dst4, 0, []byte{0, 1, 0, 53, 0xff, 0xff, 0, 0}), verdict: VerdictDrop, reason: ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Classify(tt.pkt)
			if p.Verdict != tt.verdict || p.Reason != tt.reason {
				t.Fatalf("got verdict %d reason %v, want %d %v", p.Verdict, p.Reason, tt.verdict, tt.reason)
			}
			if tt.dst.IsValid() && p.Dst != tt.dst {
				t.Fatalf("dst %v, want %v", p.Dst, tt.dst)
			}
		})
	}
}

func TestClassifyAllocs(t *testing.T) {
	pkt := ipv4Packet(protoTCP, src4, dst4, 0, tcpSegment(40000, 443, tcpFlagAck))
	if n := testing.AllocsPerRun(1000, func() { Classify(pkt) }); n != 0 {
		t.Fatalf("Classify allocates %v times per packet, want 0", n)
	}
}

// FuzzClassify holds the classifier to its contract on any input: no
// panic, offsets inside the packet, and a verdict consistent with the
// protocol.
func FuzzClassify(f *testing.F) {
	f.Add(ipv4Packet(protoTCP, src4, dst4, 0, tcpSegment(40000, 443, tcpFlagSyn)))
	f.Add(ipv6Packet(protoTCP, src6, dst6, tcpSegment(40000, 80, tcpFlagSyn)))
	f.Add(ipv4Packet(protoUDP, src4, dst4, 0, udpDatagram(5353, 53, []byte{1, 2, 3})))
	f.Add(ipv4Packet(protoTCP, src4, dst4, 0x2000, tcpSegment(1, 80, tcpFlagSyn)))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p := Classify(pkt)
		switch p.Verdict {
		case VerdictTCP, VerdictDNS:
			if p.Reason != ReasonNone {
				t.Fatalf("pass verdict with reason %v", p.Reason)
			}
			if p.Len > len(pkt) || p.L4 >= p.Len {
				t.Fatalf("offsets out of range: L4 %d Len %d buf %d", p.L4, p.Len, len(pkt))
			}
			if p.Verdict == VerdictTCP && p.Proto != protoTCP || p.Verdict == VerdictDNS && (p.Proto != protoUDP || p.Dst.Port() != 53) {
				t.Fatalf("verdict %d for proto %d port %d", p.Verdict, p.Proto, p.Dst.Port())
			}
		case VerdictDrop:
			if p.Reason == ReasonNone || p.Reason >= numReasons {
				t.Fatalf("drop without a reason")
			}
		default:
			t.Fatalf("unknown verdict %d", p.Verdict)
		}
	})
}
