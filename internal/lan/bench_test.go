package lan

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/torgate/torgate/internal/vnet"
)

// BenchmarkWrite: one MTU-sized packet from netstack to a resolved
// workstation: route, neighbour lookup, Ethernet header in the headroom,
// write.
func BenchmarkWrite(b *testing.B) {
	d, w := testDevice(b)
	w.discard = true
	bindForTest(d.ports[0], ws4, wsMAC)
	pkt := make([]byte, 16+1500)
	copy(pkt[16:], ipv4(other, ws4))
	bufs := [][]byte{pkt}
	b.ReportAllocs()
	b.SetBytes(1500)
	for b.Loop() {
		d.Write(bufs, 16)
	}
}

// BenchmarkInbound: parse and check one MTU-sized IPv4 frame from a
// workstation.
func BenchmarkInbound(b *testing.B) {
	d, _ := testDevice(b)
	fr := ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, append(ipv4(ws4, other), make([]byte, 1472)...))
	// Fix the IPv4 total length for the padded payload.
	fr[14+2], fr[14+3] = byte(1500>>8), byte(1500&0xff)
	p := d.ports[0]
	bindForTest(p, ws4, wsMAC)
	pk := d.pool.Get().(*inPacket)
	var f frame
	b.ReportAllocs()
	b.SetBytes(int64(len(fr)))
	for b.Loop() {
		parseFrame(fr, &f)
		if l3, _ := p.inbound(&f, vnet.Header{}, pk); l3 == nil {
			b.Fatal("dropped")
		}
	}
}

// BenchmarkMadeUpSenders: an ARP request from a sender never seen before,
// with the resolutions in flight at their bound (a flood of made-up
// senders): each costs a reply, a request and an eviction of the oldest
// resolution, in constant time.
func BenchmarkMadeUpSenders(b *testing.B) {
	d, w := testDevice(b)
	w.discard = true
	p := d.ports[0]
	base := netip.MustParseAddr("10.152.160.0").As4()
	frames := make([][]byte, 16*maxPending)
	for i := range frames {
		a := base
		a[2] += byte(i >> 8)
		a[3] = byte(i)
		frames[i] = arpFrame(header.ARPRequest, broadcastMAC, ws2MAC, netip.AddrFrom4(a), mac{}, gw4.Addr())
	}
	pk := d.pool.Get().(*inPacket)
	var f frame
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		parseFrame(frames[i%len(frames)], &f)
		p.inbound(&f, vnet.Header{}, pk)
		i++
	}
}
