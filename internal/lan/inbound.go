package lan

import (
	"net"
	"net/netip"
	"time"

	"github.com/torgate/torgate/internal/vnet"
)

// inbound handles one parsed frame in pk: answers and learns from ARP and
// NDP, and returns the L3 packet to hand to netstack, or nil. holding
// reports that pk waits for its source's proof and is no longer the
// caller's.
//
// h is the frame's virtio-net header (zero on a link without one), with
// offsets counted from the frame; pk.off is where the frame starts in
// pk.buf, or, for a view (ReadVnet's direct read), pk.buf is the frame's
// payload, f.l3 its head.
func (p *port) inbound(f *frame, h vnet.Header, pk *inPacket) (l3 []byte, holding bool) {
	d := p.dev
	if f.kind == kindDrop {
		d.drop(f.reason, 1)
		return nil, false
	}
	// IFACE is promiscuous (passthru): unicast frames between two
	// workstations show up here too.
	if !f.dst.isMulticast() && f.dst != p.mac {
		d.drop(reasonNotForUs, 1)
		return nil, false
	}
	if !p.checkOffload(f, &h) {
		d.drop(reasonBadOffload, 1)
		return nil, false
	}
	switch f.kind {
	case kindARP:
		p.arp(f)
		return nil, false
	case kindNDP:
		p.ndp(f)
		return nil, false
	}
	if f.dst.isMulticast() {
		d.drop(reasonMulticastIP, 1)
		return nil, false
	}
	if !p.validSource(f.ip6Src) {
		d.drop(reasonSpoofedSource, 1)
		return nil, false
	}
	if len(f.l3) > p.mtu && !h.GSO() {
		d.drop(reasonTooBig, 1)
		return nil, false
	}
	if !pk.view {
		pk.off += ethHeaderLen // pk.buf holds the frame; a view, its payload
	}
	pk.len, pk.vh = len(f.l3), h
	pass, holding := p.admit(f.ip6Src, f.src, pk)
	if !pass {
		return nil, holding
	}
	return f.l3, false
}

// checkOffload checks the virtio-net header of an inbound frame and makes
// its offsets count from the IP header. The kernel sets GSO or a partial
// checksum only once EnableOffload asked for them, and only on TCP/IP
// (vnet.Header.Check); any other header but DATA_VALID is forged or
// broken.
func (p *port) checkOffload(f *frame, h *vnet.Header) bool {
	if !h.GSO() && !h.NeedsCsum() {
		return h.Flags&^vnet.FlagDataValid == 0
	}
	if !p.dev.offload.Load() || f.kind != kindIPv4 && f.kind != kindIPv6 {
		return false
	}
	if h.NeedsCsum() && h.CsumStart < ethHeaderLen {
		return false
	}
	h.Shift(-ethHeaderLen)
	return h.Check(f.l3) == nil
}

// validSource reports whether a workstation may send from a: inside one of
// the LAN's prefixes (or IPv6 link-local), and not the gateway's own or
// the subnet's broadcast address.
func (p *port) validSource(a netip.Addr) bool {
	if p.isOurs(a) {
		return false
	}
	if a.Is4() {
		return p.in4(a) && !p.isBroadcast4(a)
	}
	if a.IsLinkLocalUnicast() {
		return true
	}
	for _, pr := range p.v6 {
		if pr.Contains(a) {
			return !a.IsMulticast()
		}
	}
	return false
}

func (p *port) in4(a netip.Addr) bool {
	for _, pr := range p.v4 {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// isBroadcast4 reports a network or directed-broadcast address of one of
// the IPv4 prefixes (for prefixes shorter than /31).
func (p *port) isBroadcast4(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	for _, pr := range p.v4 {
		if pr.Bits() >= 31 || !pr.Contains(a) {
			continue
		}
		if a == pr.Masked().Addr() {
			return true
		}
		b := a.As4()
		host := 32 - pr.Bits()
		all := true
		for i := 31; i >= 32-host; i-- {
			if b[i/8]&(1<<(7-uint(i%8))) == 0 {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// isOurs reports one of the gateway's addresses on this link.
func (p *port) isOurs(a netip.Addr) bool {
	if a == p.ll {
		return true
	}
	for _, pr := range p.v4 {
		if pr.Addr() == a {
			return true
		}
	}
	for _, pr := range p.v6 {
		if pr.Addr() == a {
			return true
		}
	}
	return false
}

// source4 returns our IPv4 address on the prefix holding a.
func (p *port) source4(a netip.Addr) (netip.Addr, bool) {
	for _, pr := range p.v4 {
		if pr.Contains(a) {
			return pr.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// source6 returns our IPv6 address to solicit a from: the one on a's
// prefix, else the link-local.
func (p *port) source6(a netip.Addr) netip.Addr {
	for _, pr := range p.v6 {
		if pr.Contains(a) {
			return pr.Addr()
		}
	}
	return p.ll
}

// arp answers requests for our addresses. What a station says about its
// own address never binds it (neigh.go): a request makes torgate resolve
// the sender itself, a gratuitous announcement for a bound address makes
// it probe the MAC it has; only a reply to torgate's own request binds.
func (p *port) arp(f *frame) {
	d := p.dev
	forUs := p.isOurs(f.arpTPA) && f.arpTPA.Is4()
	senderOK := p.in4(f.arpSPA) && !p.isOurs(f.arpSPA) && !p.isBroadcast4(f.arpSPA) && !f.arpSHA.isMulticast() && !f.arpSHA.isZero()
	if p.isOurs(f.arpSPA) && f.arpSHA != p.mac {
		// Another station claims the gateway's address.
		p.conflict(f.arpSPA, f.arpSHA)
		return
	}
	switch {
	case f.arpOp == arpOpRequest && forUs:
		if f.arpSPA.IsUnspecified() {
			// An ARP probe (RFC 5227) for our address: defend it, to the
			// whole LAN as the RFC's conflict detection expects.
			p.writeARPReply(broadcastMAC, f.arpTPA, f.arpSHA, f.arpSPA)
			return
		}
		if !senderOK {
			d.drop(reasonARPIgnored, 1)
			return
		}
		p.writeARPReply(f.arpSHA, f.arpTPA, f.arpSHA, f.arpSPA)
		p.claim(f.arpSPA, f.arpSHA)
	case f.arpOp == arpOpReply && forUs && f.arpTHA == p.mac && senderOK:
		p.confirm(f.arpSPA, f.arpSHA)
	case f.arpSPA == f.arpTPA && senderOK:
		// Gratuitous ARP: never binds.
		p.claim(f.arpSPA, f.arpSHA)
	default:
		d.drop(reasonARPIgnored, 1)
	}
}

// conflictLogEvery rate-limits the log line for address conflicts.
const conflictLogEvery = time.Minute

// conflict counts and logs another station's claim to our address a, and
// answers it at once with an announcement to the whole LAN, so the
// workstations' caches, which took the claim, point back at the gateway
// (a gratuitous announcement overrides a fresh entry, where a plain reply
// would wait out Linux's one-second locktime). RFC 5227 2.4 (c) defends
// once per 10 s, to stop two hosts that both want an address from
// flooding the LAN; a gateway under a hostile claim must answer every
// claim, and a second torgate on the LAN refuses to start
// (CheckAddresses), so the only bound is defendEvery against a flood, and
// a claim inside that bound gets one announcement at its end.
func (p *port) conflict(a netip.Addr, m mac) {
	d := p.dev
	d.drop(reasonConflict, 1)
	d.conflictMAC.Store(&m)
	now := time.Now().UnixNano()
	if last := d.lastConflictLog.Load(); now-last >= int64(conflictLogEvery) && d.lastConflictLog.CompareAndSwap(last, now) {
		d.log.Warn("another station claims the gateway's LAN address (another gateway on this LAN, or a hostile workstation)",
			"interface", p.link.Name, "address", a.String(), "mac", net.HardwareAddr(m[:]).String())
	}
	p.defendMu.Lock()
	if wait := p.lastDefend[a] + int64(defendEvery) - now; wait > 0 {
		// Within the bound: this claim is not answered now, but the last
		// word must be the gateway's, or a claim that came in the same
		// window as its predecessor's answer (three frames at once) leaves
		// the workstations pointing at the claimant until their caches
		// time out (seconds: a hostile LAN test saw a fetch time out).
		// One trailing announcement per address, at the window's end.
		if !p.trailing[a] {
			p.trailing[a] = true
			time.AfterFunc(time.Duration(wait), func() {
				select {
				case <-d.closed:
					return // nothing to write to: not a drop
				default:
				}
				p.defendMu.Lock()
				p.trailing[a] = false
				p.lastDefend[a] = time.Now().UnixNano()
				p.defendMu.Unlock()
				p.announce(a)
			})
		}
		p.defendMu.Unlock()
		return
	}
	p.lastDefend[a] = now
	p.defendMu.Unlock()
	p.announce(a)
}

// announce tells the whole LAN that a is the gateway's.
func (p *port) announce(a netip.Addr) {
	if a.Is4() {
		// Gratuitous in Linux's sense (arp_is_garp), which overrides an
		// entry within its locktime: a request with sender = target, and
		// a reply whose target MAC is its sender MAC. A reply to the
		// broadcast MAC would wait out the second A's claim started.
		p.dev.stats.Sent[sentARPRequest].Add(1)
		p.writeFrame(buildARP(arpOpRequest, broadcastMAC, p.mac, a, mac{}, a))
		p.dev.stats.Sent[sentARPReply].Add(1)
		p.writeFrame(buildARP(arpOpReply, broadcastMAC, p.mac, a, p.mac, a))
		return
	}
	all := netip.MustParseAddr("ff02::1")
	p.writeNA(multicastMAC6(all), all, a, naFlagRouter|naFlagOverr)
}

// defendEvery bounds the gateway's announcements under a flood of claims
// to ten a second per link.
const defendEvery = 100 * time.Millisecond

func (p *port) writeARPReply(ethDst mac, ours netip.Addr, tha mac, tpa netip.Addr) {
	p.dev.stats.Sent[sentARPReply].Add(1)
	p.writeFrame(buildARP(arpOpReply, ethDst, p.mac, ours, tha, tpa))
}

// ndp handles a validated NS or NA.
func (p *port) ndp(f *frame) {
	d := p.dev
	src := f.ip6Src
	srcOK := !src.IsUnspecified() && p.validSource(src)
	switch f.ndpType {
	case icmp6NS:
		if !p.isOurs(f.ndpTarget) || f.ndpTarget.Is4() {
			d.drop(reasonNDPIgnored, 1)
			return
		}
		// Multicast NS must go to the target's solicited-node group.
		if f.ip6Dst.IsMulticast() && f.ip6Dst != solicitedNode(f.ndpTarget) {
			d.drop(reasonNDPInvalid, 1)
			return
		}
		if src.IsUnspecified() {
			// DAD for our address: defend it to all nodes (RFC 4861 7.2.4).
			all := netip.MustParseAddr("ff02::1")
			p.writeNA(multicastMAC6(all), all, f.ndpTarget, naFlagRouter|naFlagOverr)
			return
		}
		if !srcOK {
			d.drop(reasonSpoofedSource, 1)
			return
		}
		to := f.src
		if f.ndpHasLLA {
			to = f.ndpLLA
		}
		if to.isMulticast() {
			d.drop(reasonNDPInvalid, 1)
			return
		}
		p.writeNA(to, src, f.ndpTarget, naFlagRouter|naFlagSolic|naFlagOverr)
		p.claim(src, to)
	case icmp6NA:
		t := f.ndpTarget
		m := f.src
		if f.ndpHasLLA {
			m = f.ndpLLA
		}
		if p.isOurs(t) && m != p.mac {
			p.conflict(t, m)
			return
		}
		if !t.IsLinkLocalUnicast() && !p.validSource(t) {
			d.drop(reasonNDPIgnored, 1)
			return
		}
		if f.ndpFlags&naFlagSolic != 0 && f.dst == p.mac {
			// The answer to our solicitation or probe.
			p.confirm(t, m)
		} else {
			// Unsolicited: never binds.
			p.claim(t, m)
		}
	}
}

func (p *port) writeNA(ethDst mac, dst, target netip.Addr, flags uint8) {
	p.dev.stats.Sent[sentNA].Add(1)
	p.writeFrame(buildNDP(icmp6NA, flags, ethDst, p.mac, target, dst, target))
}

// solicit asks for a's MAC: broadcast ARP / multicast NS when unicast is
// nil, else a unicast probe to the MAC we have.
func (p *port) solicit(a netip.Addr, unicast *mac) {
	if a.Is4() {
		src, ok := p.source4(a)
		if !ok {
			return
		}
		dst := broadcastMAC
		if unicast != nil {
			dst = *unicast
		}
		p.dev.stats.Sent[sentARPRequest].Add(1)
		p.writeFrame(buildARP(arpOpRequest, dst, p.mac, src, mac{}, a))
		return
	}
	ipDst := solicitedNode(a)
	ethDst := multicastMAC6(ipDst)
	if unicast != nil {
		ipDst, ethDst = a, *unicast
	}
	p.dev.stats.Sent[sentNS].Add(1)
	p.writeFrame(buildNDP(icmp6NS, 0, ethDst, p.mac, p.source6(a), ipDst, a))
}
