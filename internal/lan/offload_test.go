package lan

import (
	"bytes"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/torgate/torgate/internal/vnet"
)

// vnetWire is a wire whose frames carry a virtio-net header, and whose
// offloads can be switched (a macvtap opened with IFF_VNET_HDR).
type vnetWire struct {
	*wire
	on     atomic.Bool
	refuse bool
}

func (w *vnetWire) SetOffload(on bool) error {
	if w.refuse {
		return errRefused
	}
	w.on.Store(on)
	return nil
}

var errRefused = net.UnknownNetworkError("refused")

// testVnetDevice is testDevice on a vnetWire, offloads on, with ws4 bound
// to wsMAC.
func testVnetDevice(t *testing.T) (*Device, *vnetWire) {
	t.Helper()
	w := &vnetWire{wire: newWire()}
	d := eth1Device(t, w, true)
	if !d.EnableOffload() || !w.on.Load() {
		t.Fatal("EnableOffload refused")
	}
	bindForTest(d.ports[0], ws4, wsMAC)
	bindForTest(d.ports[0], ws6, wsMAC)
	// The solicitations bindForTest sent.
	for range 2 {
		checkZeroHdr(t, w.wire.next(t))
	}
	return d, w
}

func checkZeroHdr(t *testing.T, f []byte) []byte {
	t.Helper()
	if len(f) < vnet.HdrLen || !bytes.Equal(f[:vnet.HdrLen], make([]byte, vnet.HdrLen)) {
		t.Fatalf("frame the gateway built goes without a zero virtio-net header: % x", f[:min(len(f), 24)])
	}
	return f[vnet.HdrLen:]
}

// tcpPacket is an IPv4 or IPv6 TCP packet of n payload bytes from src to
// dst (checksum not filled: the header says partial).
func tcpPacket(src, dst netip.Addr, n int) []byte {
	th := header.TCP(make([]byte, header.TCPMinimumSize+n))
	th.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 443, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 65535})
	if src.Is4() {
		ip := header.IPv4(make([]byte, header.IPv4MinimumSize+len(th)))
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(ip)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: taddr(src), DstAddr: taddr(dst)})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(ip[header.IPv4MinimumSize:], th)
		return ip
	}
	return ipv6(src, dst, uint8(header.TCPProtocolNumber), 64, th)
}

// vnetFrame is hdr, then an Ethernet frame to the gateway from wsMAC.
func vnetFrame(h vnet.Header, pkt []byte) []byte {
	et := header.IPv4ProtocolNumber
	if pkt[0]>>4 == 6 {
		et = header.IPv6ProtocolNumber
	}
	b := make([]byte, vnet.HdrLen)
	h.Encode(b)
	return append(b, ethFrame(gwMAC, wsMAC, tcpip.NetworkProtocolNumber(et), pkt)...)
}

// TestOffloadInbound: a workstation's super-frames reach netstack whole
// with offsets counted from the IP header, and every malformed header is
// a counted drop, the packet going nowhere.
func TestOffloadInbound(t *testing.T) {
	csum4 := vnet.Header{Flags: vnet.FlagNeedsCsum, CsumStart: 14 + 20, CsumOffset: 16}
	gso4 := csum4
	gso4.GSOType, gso4.GSOSize, gso4.HdrLen = vnet.GSOTCPv4, 1448, 14+20+20
	gso6 := vnet.Header{Flags: vnet.FlagNeedsCsum, CsumStart: 14 + 40, CsumOffset: 16, GSOType: vnet.GSOTCPv6, GSOSize: 1428, HdrLen: 14 + 40 + 20}
	big4 := tcpPacket(ws4, other, 20000)
	big6 := tcpPacket(ws6, netip.MustParseAddr("2001:db8::1"), 20000)
	with := func(h vnet.Header, f func(*vnet.Header)) vnet.Header { f(&h); return h }
	for _, tc := range []struct {
		name string
		hdr  vnet.Header
		pkt  []byte
		drop string // "" passes
	}{
		{name: "super-frame v4", hdr: gso4, pkt: big4},
		{name: "super-frame v6", hdr: gso6, pkt: big6},
		{name: "partial checksum", hdr: csum4, pkt: tcpPacket(ws4, other, 100)},
		{name: "data valid", hdr: vnet.Header{Flags: vnet.FlagDataValid}, pkt: tcpPacket(ws4, other, 100)},
		{name: "GRO super-frame, data valid", hdr: with(gso4, func(h *vnet.Header) { h.Flags = vnet.FlagDataValid }), pkt: big4},
		{name: "too big without GSO", hdr: csum4, pkt: big4, drop: "too_big"},
		{name: "UDP GSO", hdr: with(gso4, func(h *vnet.Header) { h.GSOType = vnet.GSOUDPL4 }), pkt: big4, drop: "bad_offload"},
		{name: "UFO", hdr: with(gso4, func(h *vnet.Header) { h.GSOType = vnet.GSOUDP }), pkt: big4, drop: "bad_offload"},
		{name: "ECN", hdr: with(gso4, func(h *vnet.Header) { h.GSOType |= vnet.GSOECN }), pkt: big4, drop: "bad_offload"},
		{name: "gso_size 0", hdr: with(gso4, func(h *vnet.Header) { h.GSOSize = 0 }), pkt: big4, drop: "bad_offload"},
		{name: "TCPv6 type on IPv4", hdr: with(gso4, func(h *vnet.Header) { h.GSOType = vnet.GSOTCPv6 }), pkt: big4, drop: "bad_offload"},
		{name: "csum_start in Ethernet header", hdr: with(csum4, func(h *vnet.Header) { h.CsumStart = 4 }), pkt: tcpPacket(ws4, other, 100), drop: "bad_offload"},
		{name: "csum_start in IP header", hdr: with(csum4, func(h *vnet.Header) { h.CsumStart = 20 }), pkt: tcpPacket(ws4, other, 100), drop: "bad_offload"},
		{name: "csum_offset past the end", hdr: with(csum4, func(h *vnet.Header) { h.CsumOffset = 200 }), pkt: tcpPacket(ws4, other, 100), drop: "bad_offload"},
		{name: "unknown flag", hdr: vnet.Header{Flags: 4}, pkt: tcpPacket(ws4, other, 100), drop: "bad_offload"},
		{name: "spoofed super-frame", hdr: gso4, pkt: tcpPacket(other, other, 20000), drop: "spoofed_source"},
	} {
		// readLoop: the link's goroutine reads and queues; direct: ReadVnet
		// reads the link itself (takeReads).
		for _, mode := range []string{"readLoop", "direct"} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				var d *Device
				var send func([]byte)
				if mode == "direct" {
					dd, w := testDirectDevice(t)
					d, send = dd, w.send
				} else {
					dd, w := testVnetDevice(t)
					d, send = dd, w.send
				}
				pkts := vnetReader(d)
				send(vnetFrame(tc.hdr, tc.pkt))
				if tc.drop != "" {
					deadline := time.Now().Add(5 * time.Second)
					for d.Stats().Drop(tc.drop) == 0 {
						if time.Now().After(deadline) {
							t.Fatalf("no %s drop", tc.drop)
						}
						time.Sleep(time.Millisecond)
					}
					select {
					case b := <-pkts:
						t.Fatalf("dropped packet still delivered (%d bytes)", len(b))
					case <-time.After(20 * time.Millisecond):
					}
					return
				}
				h, pkt := nextPacket(t, pkts)
				if !bytes.Equal(pkt, tc.pkt) {
					t.Fatalf("packet changed: %d bytes, want %d", len(pkt), len(tc.pkt))
				}
				want := tc.hdr
				want.Shift(-ethHeaderLen)
				if h != want {
					t.Fatalf("header %+v, want %+v", h, want)
				}
			})
		}
	}
}

// TestOffloadOff: before EnableOffload (netstack's NoOffload), a header
// claiming GSO or a partial checksum is forged, and frames the gateway
// builds still carry a zero header.
func TestOffloadOff(t *testing.T) {
	w := &vnetWire{wire: newWire(), refuse: true}
	d, err := NewDevice([]Link{{Name: "eth1", MAC: net.HardwareAddr(gwMAC[:]), Addrs: []netip.Prefix{gw4}, Frames: w, Vnet: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.EnableOffload() {
		t.Fatal("EnableOffload true with offloads refused")
	}
	bindForTest(d.ports[0], ws4, wsMAC)
	checkZeroHdr(t, w.wire.next(t))
	w.send(vnetFrame(vnet.Header{Flags: vnet.FlagNeedsCsum, CsumStart: 34, CsumOffset: 16}, tcpPacket(ws4, other, 100)))
	w.send(vnetFrame(vnet.Header{}, ipv4(ws4, other)))
	if got := readPacket(t, d); !bytes.Equal(got, ipv4(ws4, other)) {
		t.Fatalf("Read returned % x", got)
	}
	if n := d.Stats().Drop("bad_offload"); n != 1 {
		t.Fatalf("bad_offload %d, want 1", n)
	}
	// The generic Write path puts a zero header in front.
	write(t, d, ipv4(gw4.Addr(), ws4))
	f := checkZeroHdr(t, w.wire.next(t))
	if ethDst(f) != wsMAC || !bytes.Equal(f[ethHeaderLen:], ipv4(gw4.Addr(), ws4)) {
		t.Fatalf("frame % x", f)
	}
}

// TestOffloadOutbound: netstack's super-packets leave for the LAN whole,
// behind the header shifted by the Ethernet header; what is larger than
// the MTU without segments that fit it goes nowhere.
func TestOffloadOutbound(t *testing.T) {
	d, w := testVnetDevice(t)
	pkt := tcpPacket(other, ws4, 20000) // the gateway answers as any destination
	h := vnet.Header{Flags: vnet.FlagNeedsCsum, CsumStart: 20, CsumOffset: 16, GSOType: vnet.GSOTCPv4, GSOSize: 1460, HdrLen: 40}
	hb := make([]byte, vnet.HdrLen)
	h.Encode(hb)
	// In pieces, as gVisor's views come.
	if err := d.WriteVnet(hb, [][]byte{pkt[:7], pkt[7:40], pkt[40:]}); err != nil {
		t.Fatal(err)
	}
	f := w.wire.next(t)
	got := vnet.Decode(f)
	want := h
	want.Shift(ethHeaderLen)
	if got != want || got.CsumStart != 34 || got.HdrLen != 54 {
		t.Fatalf("header %+v, want %+v", got, want)
	}
	fr := f[vnet.HdrLen:]
	if ethDst(fr) != wsMAC || mac(fr[6:12]) != gwMAC || be16(fr[12:14]) != ethTypeIPv4 || !bytes.Equal(fr[ethHeaderLen:], pkt) {
		t.Fatalf("frame % x...", fr[:40])
	}
	for _, tc := range []struct {
		name string
		hdr  vnet.Header
		pkt  []byte
		drop string
	}{
		{name: "too big without GSO", hdr: vnet.Header{}, pkt: pkt, drop: "too_big"},
		{name: "segments larger than the MTU", hdr: func() vnet.Header { h := h; h.GSOSize = 1461; return h }(), pkt: pkt, drop: "too_big"},
		{name: "to the gateway's own address", hdr: h, pkt: tcpPacket(other, gw4.Addr(), 20000), drop: "no_route"},
		{name: "off the LAN", hdr: h, pkt: tcpPacket(ws4, other, 20000), drop: "no_route"},
	} {
		before := d.Stats().Drop(tc.drop)
		tc.hdr.Encode(hb)
		if err := d.WriteVnet(hb, [][]byte{tc.pkt}); err != nil {
			t.Fatal(err)
		}
		if d.Stats().Drop(tc.drop) != before+1 {
			t.Errorf("%s: no %s drop", tc.name, tc.drop)
		}
	}
	select {
	case f := <-w.fromDev:
		t.Fatalf("sent % x", f[:min(len(f), 40)])
	default:
	}
}

// TestOffloadQueue: a frame waiting for its neighbour keeps its header;
// a super-frame is never queued.
func TestOffloadQueue(t *testing.T) {
	d, w := testVnetDevice(t)
	small := tcpPacket(other, ws4b, 100)
	h := vnet.Header{Flags: vnet.FlagNeedsCsum, CsumStart: 20, CsumOffset: 16}
	hb := make([]byte, vnet.HdrLen)
	h.Encode(hb)
	if err := d.WriteVnet(hb, [][]byte{small}); err != nil {
		t.Fatal(err)
	}
	big := tcpPacket(other, ws4b, 20000)
	gh := vnet.Header{Flags: vnet.FlagNeedsCsum, CsumStart: 20, CsumOffset: 16, GSOType: vnet.GSOTCPv4, GSOSize: 1460, HdrLen: 40}
	gh.Encode(hb)
	if err := d.WriteVnet(hb, [][]byte{big}); err != nil {
		t.Fatal(err)
	}
	if d.Stats().Drop("queue_full") != 1 {
		t.Fatalf("super-frame queued")
	}
	r := decodeARP(t, checkZeroHdr(t, w.wire.next(t)))
	if r.tpa != ws4b {
		t.Fatalf("want a request for %v, got %+v", ws4b, r)
	}
	w.send(append(make([]byte, vnet.HdrLen), arpFrame(header.ARPReply, gwMAC, ws2MAC, ws4b, gwMAC, gw4.Addr())...))
	f := w.wire.next(t)
	want := h
	want.Shift(ethHeaderLen)
	if got := vnet.Decode(f); got != want || ethDst(f[vnet.HdrLen:]) != ws2MAC || !bytes.Equal(f[vnet.HdrLen+ethHeaderLen:], small) {
		t.Fatalf("queued frame left as %+v % x", got, f[:40])
	}
}
