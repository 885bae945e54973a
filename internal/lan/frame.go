package lan

import (
	"encoding/binary"
	"net/netip"
)

// Wire constants of Ethernet, ARP, IPv4, IPv6 and ICMPv6 neighbour
// discovery (RFC 826, RFC 4861) that the link layer speaks.
const (
	ethHeaderLen = 14
	ethTypeIPv4  = 0x0800
	ethTypeARP   = 0x0806
	ethTypeIPv6  = 0x86dd
	ethTypeVLAN  = 0x8100 // 802.1Q
	ethTypeQinQ  = 0x88a8 // 802.1ad
	ethTypeQinQ2 = 0x9100 // pre-standard QinQ

	arpLen        = 28 // Ethernet/IPv4 ARP payload
	arpOpRequest  = 1
	arpOpReply    = 2
	ipv4MinHeader = 20
	ipv6HeaderLen = 40
	maxIPPacket   = ipv6HeaderLen + 65535 // the largest IPv6 packet without a jumbogram; IPv4's is smaller

	protoICMPv6 = 58
	protoHopOpt = 0

	icmp6RS       = 133
	icmp6RA       = 134
	icmp6NS       = 135
	icmp6NA       = 136
	icmp6Redirect = 137
	icmp6MLDQuery = 130
	icmp6MLDv1Rep = 131
	icmp6MLDv1Don = 132
	icmp6MLDv2Rep = 143

	ndpMsgLen    = 24 // type, code, checksum, flags/reserved, target
	ndpOptSLLA   = 1
	ndpOptTLLA   = 2
	ndpHopLimit  = 255 // RFC 4861 7.1.1: anything else came through a router
	naFlagRouter = 0x80
	naFlagSolic  = 0x40
	naFlagOverr  = 0x20
)

// mac is an Ethernet address.
type mac [6]byte

var broadcastMAC = mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func (m mac) isMulticast() bool { return m[0]&1 != 0 } // includes broadcast
func (m mac) isZero() bool      { return m == mac{} }

// frameKind is what parseFrame made of an inbound frame.
type frameKind uint8

const (
	kindDrop frameKind = iota // reason says why
	kindARP
	kindNDP  // a neighbour solicitation or advertisement, checked
	kindIPv4 // l3 is the IPv4 packet, trimmed to its total length
	kindIPv6 // l3 is the IPv6 packet, trimmed to its length
)

// frame is one parsed inbound Ethernet frame. Slices alias the buffer.
type frame struct {
	kind   frameKind
	reason reason // for kindDrop
	dst    mac
	src    mac
	l3     []byte

	// kindARP
	arpOp     uint16
	arpSHA    mac
	arpSPA    netip.Addr
	arpTHA    mac
	arpTPA    netip.Addr
	ip6Src    netip.Addr // kindIPv4/kindIPv6/kindNDP: the IP source
	ip6Dst    netip.Addr // kindIPv4/kindIPv6/kindNDP: the IP destination
	ndpType   uint8      // icmp6NS or icmp6NA
	ndpFlags  uint8      // NA flags
	ndpTarget netip.Addr
	ndpLLA    mac // source (NS) or target (NA) link-layer option
	ndpHasLLA bool
}

// parseFrame decodes an inbound frame without allocating. It checks
// everything the link layer relies on: lengths, ARP for Ethernet/IPv4,
// NDP's hop limit, code, checksum and options (RFC 4861 7.1). Whether a
// frame is for us (destination MAC, addresses) is the caller's business.
func parseFrame(b []byte, f *frame) {
	if len(b) < ethHeaderLen {
		*f = frame{reason: reasonMalformed}
		return
	}
	parseSplit(b[:ethHeaderLen], b[ethHeaderLen:], f)
}

// parseSplit is parseFrame for a frame read in two pieces (Device.ReadVnet
// reads the Ethernet header apart from the rest, so that the IP packet
// lands where netstack wants it): eth is the Ethernet header, exactly
// ethHeaderLen bytes, p the rest.
func parseSplit(eth, p []byte, f *frame) {
	*f = frame{}
	copy(f.dst[:], eth[0:6])
	copy(f.src[:], eth[6:12])
	et := binary.BigEndian.Uint16(eth[12:14])
	switch et {
	case ethTypeVLAN, ethTypeQinQ, ethTypeQinQ2:
		f.reason = reasonVLAN
	case ethTypeARP:
		parseARP(p, f)
	case ethTypeIPv4:
		parseIPv4(p, f)
	case ethTypeIPv6:
		parseIPv6(p, f)
	default:
		f.reason = reasonEtherType
	}
}

func parseARP(p []byte, f *frame) {
	// htype Ethernet, ptype IPv4, hlen 6, plen 4.
	if len(p) < arpLen || binary.BigEndian.Uint16(p[0:2]) != 1 || binary.BigEndian.Uint16(p[2:4]) != ethTypeIPv4 || p[4] != 6 || p[5] != 4 {
		f.reason = reasonMalformed
		return
	}
	f.arpOp = binary.BigEndian.Uint16(p[6:8])
	if f.arpOp != arpOpRequest && f.arpOp != arpOpReply {
		f.reason = reasonARPIgnored
		return
	}
	copy(f.arpSHA[:], p[8:14])
	f.arpSPA = netip.AddrFrom4([4]byte(p[14:18]))
	copy(f.arpTHA[:], p[18:24])
	f.arpTPA = netip.AddrFrom4([4]byte(p[24:28]))
	f.kind = kindARP
}

func parseIPv4(p []byte, f *frame) {
	if len(p) < ipv4MinHeader || p[0]>>4 != 4 {
		f.reason = reasonMalformed
		return
	}
	ihl := int(p[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	// Ethernet pads short frames to 60 bytes: trim to the IP length.
	if ihl < ipv4MinHeader || total < ihl || total > len(p) {
		f.reason = reasonMalformed
		return
	}
	f.l3 = p[:total]
	f.ip6Src = netip.AddrFrom4([4]byte(p[12:16]))
	f.ip6Dst = netip.AddrFrom4([4]byte(p[16:20]))
	f.kind = kindIPv4
}

func parseIPv6(p []byte, f *frame) {
	if len(p) < ipv6HeaderLen || p[0]>>4 != 6 {
		f.reason = reasonMalformed
		return
	}
	total := ipv6HeaderLen + int(binary.BigEndian.Uint16(p[4:6]))
	if total > len(p) {
		f.reason = reasonMalformed
		return
	}
	p = p[:total]
	f.l3 = p
	f.ip6Src = netip.AddrFrom16([16]byte(p[8:24]))
	f.ip6Dst = netip.AddrFrom16([16]byte(p[24:40]))
	f.kind = kindIPv6
	next, hop, body := p[6], p[7], p[ipv6HeaderLen:]
	if next == protoHopOpt && len(body) >= 8 {
		// MLD comes behind a hop-by-hop header (router alert); look past
		// it only to recognise and count it.
		n := 8 + int(body[1])*8
		if n > len(body) {
			f.kind, f.reason = kindDrop, reasonMalformed
			return
		}
		next, body = body[0], body[n:]
		if next == protoICMPv6 && len(body) > 0 && isMLD(body[0]) {
			f.kind, f.reason = kindDrop, reasonNDPIgnored
		}
		return
	}
	if next != protoICMPv6 || len(body) < 4 {
		return
	}
	switch t := body[0]; {
	case t == icmp6NS || t == icmp6NA:
		parseNDP(p, body, hop, f)
	case t == icmp6RS || t == icmp6RA || t == icmp6Redirect || isMLD(t):
		f.kind, f.reason = kindDrop, reasonNDPIgnored
	}
}

func isMLD(t uint8) bool {
	return t == icmp6MLDQuery || t == icmp6MLDv1Rep || t == icmp6MLDv1Don || t == icmp6MLDv2Rep
}

// parseNDP validates an NS or NA (RFC 4861 7.1.1, 7.1.2); ip is the whole
// IPv6 packet, m its ICMPv6 message.
func parseNDP(ip, m []byte, hop uint8, f *frame) {
	f.kind, f.reason = kindDrop, reasonNDPInvalid
	if hop != ndpHopLimit || m[1] != 0 || len(m) < ndpMsgLen {
		return
	}
	if icmp6Checksum(ip[8:24], ip[24:40], m) != 0 {
		return
	}
	target := netip.AddrFrom16([16]byte(m[8:24]))
	if target.IsMulticast() {
		return
	}
	f.ndpType = m[0]
	f.ndpFlags = m[4]
	f.ndpTarget = target
	want := uint8(ndpOptSLLA)
	if f.ndpType == icmp6NA {
		want = ndpOptTLLA
	}
	for opts := m[ndpMsgLen:]; len(opts) > 0; {
		if len(opts) < 2 || opts[1] == 0 || int(opts[1])*8 > len(opts) {
			return // RFC 4861 7.1: an option of length 0 invalidates
		}
		n := int(opts[1]) * 8
		if opts[0] == want && n >= 8 {
			copy(f.ndpLLA[:], opts[2:8])
			f.ndpHasLLA = true
		}
		opts = opts[n:]
	}
	if f.ndpType == icmp6NS && f.ip6Src.IsUnspecified() {
		// DAD probe: must go to a solicited-node group, without SLLA.
		if !isSolicitedNode(f.ip6Dst) || f.ndpHasLLA {
			return
		}
	}
	if f.ndpType == icmp6NA && f.ip6Dst.IsMulticast() && f.ndpFlags&naFlagSolic != 0 {
		return // 7.1.2: a solicited NA is never multicast
	}
	f.kind, f.reason = kindNDP, 0
}

func isSolicitedNode(a netip.Addr) bool {
	b := a.As16()
	return a.Is6() && b[0] == 0xff && b[1] == 0x02 && b[11] == 0x01 && b[12] == 0xff &&
		b[2]|b[3]|b[4]|b[5]|b[6]|b[7]|b[8]|b[9]|b[10] == 0
}

// solicitedNode returns ff02::1:ffXX:XXXX for a.
func solicitedNode(a netip.Addr) netip.Addr {
	t := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 0x01, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]})
}

// multicastMAC6 maps an IPv6 multicast address to 33:33:xx:xx:xx:xx.
func multicastMAC6(a netip.Addr) mac {
	t := a.As16()
	return mac{0x33, 0x33, t[12], t[13], t[14], t[15]}
}

// icmp6Checksum returns the folded one's complement sum over the IPv6
// pseudo-header and msg: 0 for a valid message when msg's checksum field
// is filled, or the value to store when that field is zero.
func icmp6Checksum(src, dst, msg []byte) uint16 {
	var s uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			s += uint32(b[0])<<8 | uint32(b[1])
			b = b[2:]
		}
		if len(b) == 1 {
			s += uint32(b[0]) << 8
		}
	}
	add(src)
	add(dst)
	s += uint32(len(msg)) + protoICMPv6
	add(msg)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// putEth writes an Ethernet header into b[:14].
func putEth(b []byte, dst, src mac, et uint16) {
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:14], et)
}

// buildARP returns an ARP frame (request or reply).
func buildARP(op uint16, ethDst, sha mac, spa netip.Addr, tha mac, tpa netip.Addr) []byte {
	b := make([]byte, ethHeaderLen+arpLen)
	putEth(b, ethDst, sha, ethTypeARP)
	p := b[ethHeaderLen:]
	binary.BigEndian.PutUint16(p[0:2], 1)
	binary.BigEndian.PutUint16(p[2:4], ethTypeIPv4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], op)
	copy(p[8:14], sha[:])
	s4, t4 := spa.As4(), tpa.As4()
	copy(p[14:18], s4[:])
	copy(p[18:24], tha[:])
	copy(p[24:28], t4[:])
	return b
}

// buildNDP returns an NS (with source link-layer option) or an NA (with
// target link-layer option) in an Ethernet frame, hop limit 255. An NS
// from the unspecified address (duplicate address detection) carries no
// option (RFC 4861 7.1.1).
func buildNDP(typ uint8, flags uint8, ethDst, ethSrc mac, src, dst, target netip.Addr) []byte {
	msgLen := ndpMsgLen + 8
	if typ == icmp6NS && src.IsUnspecified() {
		msgLen = ndpMsgLen
	}
	b := make([]byte, ethHeaderLen+ipv6HeaderLen+msgLen)
	putEth(b, ethDst, ethSrc, ethTypeIPv6)
	ip := b[ethHeaderLen:]
	ip[0] = 6 << 4
	binary.BigEndian.PutUint16(ip[4:6], uint16(msgLen))
	ip[6], ip[7] = protoICMPv6, ndpHopLimit
	s, d, t := src.As16(), dst.As16(), target.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	m := ip[ipv6HeaderLen:]
	m[0] = typ
	m[4] = flags
	copy(m[8:24], t[:])
	if msgLen > ndpMsgLen {
		m[24] = ndpOptSLLA
		if typ == icmp6NA {
			m[24] = ndpOptTLLA
		}
		m[25] = 1
		copy(m[26:32], ethSrc[:])
	}
	binary.BigEndian.PutUint16(m[2:4], icmp6Checksum(ip[8:24], ip[24:40], m))
	return b
}

// linkLocalFromMAC derives the EUI-64 link-local address (RFC 4291 App. A).
func linkLocalFromMAC(m mac) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: m[0] ^ 0x02, 9: m[1], 10: m[2], 11: 0xff, 12: 0xfe, 13: m[3], 14: m[4], 15: m[5]})
}
