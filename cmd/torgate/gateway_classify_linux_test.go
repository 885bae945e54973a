package main

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
)

// frame4 builds an Ethernet frame with an IPv4 header and payload.
func frame4(src, dst string, proto byte, payload []byte) []byte {
	f := make([]byte, 14+20, 14+20+len(payload))
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	ip[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	return append(f, payload...)
}

// frame6 builds an Ethernet frame with an IPv6 header and payload.
func frame6(src, dst string, next byte, payload []byte) []byte {
	f := make([]byte, 14+40, 14+40+len(payload))
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:]
	ip[0] = 0x60
	ip[6] = next
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(f, payload...)
}

// TestClassifyFrame checks the capture's verdicts on hand-built frames,
// among them the leaks issue 10 saw (an ICMP error quoting a LAN packet,
// a LAN-addressed packet routed out of the uplink).
func TestClassifyFrame(t *testing.T) {
	ws4 := netip.MustParseAddr(wsAddr4).As4()
	hopByHop := []byte{58, 0, 5, 2, 0, 0, 1, 0} // next ICMPv6, router alert
	for _, c := range []struct {
		name    string
		frame   []byte
		kind    string
		badWith string // substring of the verdict; "" means clean
	}{
		{name: "arp on the uplink", frame: append(make([]byte, 12), 0x08, 0x06, 0, 1), kind: "arp"},
		{name: "NS from link-local", frame: frame6("fe80::1", "ff02::1:ff00:2", 58, []byte{135, 0, 0, 0}), kind: "nd"},
		{name: "MLDv2 report via hop-by-hop", frame: frame6("fe80::1", "ff02::16", 0, append(hopByHop, 143, 0, 0, 0)), kind: "nd"},
		{name: "DAD NS from ::", frame: frame6("::", "ff02::1:ff00:1", 58, []byte{135, 0, 0, 0}), kind: "nd"},
		{name: "NA from the uplink address", frame: frame6(gwUp6, inetAddr6, 58, []byte{136, 0, 0, 0}), kind: "nd"},
		{name: "host unreachable quoting the workstation", frame: frame4(gwUp4, inetAddr4, 1, append([]byte{3, 1, 0, 0, 0, 0, 0, 0}, ws4[:]...)), kind: "ipv4", badWith: "ICMP error"},
		{name: "ICMPv6 unreachable", frame: frame6(gwUp6, inetAddr6, 58, []byte{1, 3, 0, 0}), kind: "ipv6", badWith: "ICMPv6 error type 1"},
		{name: "packet too big", frame: frame6(gwUp6, inetAddr6, 58, []byte{2, 0, 0, 0}), kind: "ipv6", badWith: "ICMPv6 error type 2"},
		{name: "forwarded from the LAN", frame: frame4(wsAddr4, inetAddr4, 6, nil), kind: "ipv4", badWith: "LAN address"},
		{name: "routed to the LAN out of the uplink", frame: frame4(inetAddr4, wsAddr4, 6, nil), kind: "ipv4", badWith: "LAN address"},
		{name: "IPv6 from the LAN", frame: frame6(wsAddr6, inetAddr6, 6, nil), kind: "ipv6", badWith: "LAN address"},
		{name: "marker in a payload", frame: frame4(gwUp4, inetAddr4, 6, []byte("xx"+gwMarker)), kind: "ipv4", badWith: "carries"},
		{name: "any TCP from the gateway", frame: frame4(gwUp4, inetAddr4, 6, nil), kind: "ipv4", badWith: "IPv4 traffic"},
		{name: "echo request over IPv6", frame: frame6(gwUp6, inetAddr6, 58, []byte{128, 0, 0, 0}), kind: "ipv6", badWith: "IPv6 traffic"},
		{name: "runt", frame: []byte{1, 2, 3}, kind: "other"},
		{name: "short hop-by-hop", frame: frame6("fe80::1", "ff02::16", 0, []byte{58}), kind: "ipv6", badWith: "IPv6 traffic"},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind, summary, bad := classifyFrame(c.frame)
			if kind != c.kind {
				t.Errorf("kind %q, want %q (%s)", kind, c.kind, summary)
			}
			switch {
			case c.badWith == "" && bad != "":
				t.Errorf("flagged %q (%s)", bad, summary)
			case c.badWith != "" && !strings.Contains(bad, c.badWith):
				t.Errorf("verdict %q, want one with %q (%s)", bad, c.badWith, summary)
			}
		})
	}
}
