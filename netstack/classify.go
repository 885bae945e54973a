package netstack

import (
	"encoding/binary"
	"net/netip"
)

// Verdict says what the packet loop does with one packet read from the TUN.
type Verdict uint8

const (
	// VerdictTCP goes to gVisor, which terminates the flow.
	VerdictTCP Verdict = iota
	// VerdictDNS is a UDP datagram to port 53: answered by the DNS hook.
	VerdictDNS
	// VerdictDrop is dropped; Reason says why.
	VerdictDrop
)

// Reason is a drop reason. Each one is a metric label, so the set is closed.
type Reason uint8

// Drop reasons, in the order of the checks in Classify.
const (
	ReasonNone            Reason = iota
	ReasonMalformed              // too short, bad version, lengths that do not add up
	ReasonFragment               // IPv4 MF/offset or an IPv6 Fragment header
	ReasonUDP                    // UDP to any port but 53
	ReasonICMP                   // ICMPv4 and ICMPv6, echo included: no fake ping replies
	ReasonProtocol               // any other transport protocol (SCTP, GRE, ...)
	ReasonMartian                // loopback, multicast or unspecified source or destination
	ReasonNoHandler              // DNS with no DNS hook configured
	ReasonOverload               // outbound queue full, or a write to the TUN failed
	ReasonTooManySegments        // tun.ErrTooManySegments from the device
	ReasonShare                  // SYN over its source's share of pending handshakes
	ReasonUnidentified           // SYN or DNS from a source Config.Identify knows no workstation for
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone:            "none",
	ReasonMalformed:       "malformed",
	ReasonFragment:        "fragment",
	ReasonUDP:             "udp",
	ReasonICMP:            "icmp",
	ReasonProtocol:        "protocol",
	ReasonMartian:         "martian",
	ReasonNoHandler:       "no_dns_handler",
	ReasonOverload:        "overload",
	ReasonTooManySegments: "too_many_segments",
	ReasonShare:           "source_share",
	ReasonUnidentified:    "unidentified_source",
}

// String returns the reason as a stable metric label.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every drop reason, for metrics that pre-create their series.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := ReasonMalformed; r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// Packet is what Classify learned about one IP packet. It holds no
// references into the packet buffer.
type Packet struct {
	Verdict Verdict
	Reason  Reason
	// Version is 4 or 6.
	Version uint8
	// Proto is the transport protocol number (after IPv6 extension headers).
	Proto uint8
	// L4 is the offset of the transport header.
	L4 int
	// Len is the IP packet's own length (the buffer may be longer).
	Len int
	// Src, Dst are the transport endpoints (ports are zero for non TCP/UDP).
	Src, Dst netip.AddrPort
	// TCPFlags is the TCP flags byte (TCP only).
	TCPFlags uint8
}

// IANA protocol numbers used by the classifier.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoFrag6  = 44
	protoNone6  = 59
	tcpFlagSyn  = 0x02
	tcpFlagAck  = 0x10
)

// Classify parses the IP and transport headers of pkt and decides its fate.
// It never panics and never allocates; the fuzz test holds it to that.
// It checks no checksum: the stack's inbound path does (checksumsValid,
// once per packet, for TCP and the UDP it answers), since gVisor is told
// the link verified them.
func Classify(pkt []byte) Packet {
	var p Packet
	p.Verdict = VerdictDrop
	if len(pkt) < 1 {
		p.Reason = ReasonMalformed
		return p
	}
	switch pkt[0] >> 4 {
	case 4:
		p.Version = 4
		if len(pkt) < 20 {
			p.Reason = ReasonMalformed
			return p
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < 20 || total < ihl || total > len(pkt) {
			p.Reason = ReasonMalformed
			return p
		}
		p.Len = total
		// More-fragments flag or a non-zero offset: a fragment. gVisor
		// would reassemble them, but reassembly is memory an attacker
		// controls, and no sane workstation fragments TCP to a gateway.
		if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 {
			p.Reason = ReasonFragment
			return p
		}
		p.Proto = pkt[9]
		p.L4 = ihl
		src := netip.AddrFrom4([4]byte(pkt[12:16]))
		dst := netip.AddrFrom4([4]byte(pkt[16:20]))
		return classifyL4(p, pkt[:total], src, dst)
	case 6:
		p.Version = 6
		if len(pkt) < 40 {
			p.Reason = ReasonMalformed
			return p
		}
		total := 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		if total > len(pkt) {
			p.Reason = ReasonMalformed
			return p
		}
		p.Len = total
		next := pkt[6]
		off := 40
		// Walk the extension headers that may precede the transport
		// header. A bounded number of steps keeps hostile chains cheap.
		for range 8 {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if off+8 > total {
					p.Reason = ReasonMalformed
					return p
				}
				next = pkt[off]
				off += 8 + int(pkt[off+1])*8
				continue
			case protoFrag6:
				p.Reason = ReasonFragment
				return p
			}
			break
		}
		if off > total {
			p.Reason = ReasonMalformed
			return p
		}
		p.Proto = next
		p.L4 = off
		src := netip.AddrFrom16([16]byte(pkt[8:24]))
		dst := netip.AddrFrom16([16]byte(pkt[24:40]))
		return classifyL4(p, pkt[:total], src, dst)
	default:
		p.Reason = ReasonMalformed
		return p
	}
}

func classifyL4(p Packet, pkt []byte, src, dst netip.Addr) Packet {
	// A workstation has no business sending to or from these through a
	// gateway; the router must never treat them as a destination.
	if martian(src) || martian(dst) {
		p.Reason = ReasonMartian
		return p
	}
	l4 := pkt[p.L4:]
	switch p.Proto {
	case protoTCP:
		if len(l4) < 20 || int(l4[12]>>4)*4 < 20 || int(l4[12]>>4)*4 > len(l4) {
			p.Reason = ReasonMalformed
			return p
		}
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2]))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))
		p.TCPFlags = l4[13]
		p.Verdict = VerdictTCP
		return p
	case protoUDP:
		if len(l4) < 8 {
			p.Reason = ReasonMalformed
			return p
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:6]))
		if ulen < 8 || ulen > len(l4) {
			p.Reason = ReasonMalformed
			return p
		}
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2]))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))
		if p.Dst.Port() != 53 {
			p.Reason = ReasonUDP
			return p
		}
		p.Verdict = VerdictDNS
		return p
	case protoICMP, protoICMPv6:
		p.Src = netip.AddrPortFrom(src, 0)
		p.Dst = netip.AddrPortFrom(dst, 0)
		p.Reason = ReasonICMP
		return p
	default:
		p.Src = netip.AddrPortFrom(src, 0)
		p.Dst = netip.AddrPortFrom(dst, 0)
		p.Reason = ReasonProtocol
		return p
	}
}

func martian(a netip.Addr) bool {
	return a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a.Is4In6()
}
