package lan

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// BenchmarkWrite: one MTU-sized packet from netstack to a resolved
// workstation: route, neighbour lookup, Ethernet header in the headroom,
// write.
func BenchmarkWrite(b *testing.B) {
	d, w := testDevice(b)
	w.send(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr()))
	<-w.fromDev
	w.discard = true
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
		if l3, _ := p.inbound(&f, pk); l3 == nil {
			b.Fatal("dropped")
		}
	}
}
