package lan

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The test LAN: the gateway and two workstations. Frames are built with
// gVisor's header package, independent of the code under test.
var (
	gwMAC  = mac{0x02, 0, 0, 0, 0, 0x10}
	wsMAC  = mac{0x02, 0, 0, 0, 0, 0x11}
	ws2MAC = mac{0x02, 0, 0, 0, 0, 0x12}

	gw4   = netip.MustParsePrefix("10.152.152.10/18")
	gw6   = netip.MustParsePrefix("fd19:7a2b::1/64")
	gwLL  = netip.MustParseAddr("fe80::10")
	ws4   = netip.MustParseAddr("10.152.152.11")
	ws4b  = netip.MustParseAddr("10.152.152.12")
	ws6   = netip.MustParseAddr("fd19:7a2b::11")
	wsLL  = netip.MustParseAddr("fe80::11")
	other = netip.MustParseAddr("192.0.2.1")
)

// wire is a Link.Frames made of channels, so synctest sees a blocked
// reader as durably blocked. toDev carries the workstations' frames in,
// fromDev the gateway's out.
type wire struct {
	toDev, fromDev chan []byte
	closed         chan struct{}
	once           sync.Once
	discard        bool // drop the gateway's frames instead of keeping them

	mu       sync.Mutex
	writeErr error // returned by Write while set
}

func newWire() *wire {
	return &wire{toDev: make(chan []byte, 64), fromDev: make(chan []byte, 256), closed: make(chan struct{})}
}

func (w *wire) Read(b []byte) (int, error) {
	select {
	case f := <-w.toDev:
		return copy(b, f), nil
	case <-w.closed:
		return 0, os.ErrClosed
	}
}

func (w *wire) Write(b []byte) (int, error) {
	w.mu.Lock()
	err := w.writeErr
	w.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if w.discard {
		return len(b), nil
	}
	select {
	case w.fromDev <- append([]byte(nil), b...):
		return len(b), nil
	case <-w.closed:
		return 0, os.ErrClosed
	}
}

func (w *wire) Close() error {
	w.once.Do(func() { close(w.closed) })
	return nil
}

func (w *wire) setWriteErr(err error) {
	w.mu.Lock()
	w.writeErr = err
	w.mu.Unlock()
}

// send puts a frame on the wire towards the gateway.
func (w *wire) send(f []byte) { w.toDev <- f }

// testDevice is a Device on one wire with the gateway's addresses.
func testDevice(t testing.TB) (*Device, *wire) {
	t.Helper()
	w := newWire()
	return eth1Device(t, w, false), w
}

// eth1Device is a Device on one link "eth1" with the gateway's MAC and
// addresses, reading and writing frames (with virtio-net headers if
// vnet), closed when the test ends.
func eth1Device(t testing.TB, frames io.ReadWriteCloser, vnet bool) *Device {
	t.Helper()
	d, err := NewDevice([]Link{{
		Name:   "eth1",
		MAC:    net.HardwareAddr(gwMAC[:]),
		Addrs:  []netip.Prefix{gw4, gw6, netip.PrefixFrom(gwLL, 64)},
		Frames: frames,
		Vnet:   vnet,
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// next returns the gateway's next frame, failing after a generous wait.
func (w *wire) next(t *testing.T) []byte {
	t.Helper()
	select {
	case f := <-w.fromDev:
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame from the gateway")
		return nil
	}
}

// none checks that the gateway sent nothing (call after synctest.Wait, or
// after the gateway had its chance).
func (w *wire) none(t *testing.T) {
	t.Helper()
	select {
	case f := <-w.fromDev:
		t.Fatalf("unexpected frame from the gateway: % x", f)
	default:
	}
}

func taddr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }
func tmac(m mac) tcpip.LinkAddress     { return tcpip.LinkAddress(m[:]) }

func ethFrame(dst, src mac, et tcpip.NetworkProtocolNumber, payload []byte) []byte {
	b := make([]byte, header.EthernetMinimumSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tmac(src), DstAddr: tmac(dst), Type: et})
	copy(b[header.EthernetMinimumSize:], payload)
	return b
}

func arpFrame(op header.ARPOp, ethDst, sha mac, spa netip.Addr, tha mac, tpa netip.Addr) []byte {
	a := header.ARP(make([]byte, header.ARPSize))
	a.SetIPv4OverEthernet()
	a.SetOp(op)
	copy(a.HardwareAddressSender(), sha[:])
	copy(a.ProtocolAddressSender(), spa.AsSlice())
	copy(a.HardwareAddressTarget(), tha[:])
	copy(a.ProtocolAddressTarget(), tpa.AsSlice())
	return ethFrame(ethDst, sha, header.ARPProtocolNumber, a)
}

// ipv4 returns an IPv4/TCP-ish packet (protocol 6, 8 payload bytes).
func ipv4(src, dst netip.Addr) []byte {
	b := header.IPv4(make([]byte, header.IPv4MinimumSize+8))
	b.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: 6, SrcAddr: taddr(src), DstAddr: taddr(dst)})
	b.SetChecksum(^b.CalculateChecksum())
	return b
}

func ipv6(src, dst netip.Addr, next uint8, hop uint8, payload []byte) []byte {
	b := header.IPv6(make([]byte, header.IPv6MinimumSize+len(payload)))
	b.Encode(&header.IPv6Fields{PayloadLength: uint16(len(payload)), TransportProtocol: tcpip.TransportProtocolNumber(next), HopLimit: hop, SrcAddr: taddr(src), DstAddr: taddr(dst)})
	copy(b[header.IPv6MinimumSize:], payload)
	return b
}

// ndp builds an NS or NA with an optional link-layer option, checksummed.
func ndp(typ header.ICMPv6Type, src, dst, target netip.Addr, flags uint8, lla *mac) []byte {
	n := header.ICMPv6NeighborSolicitMinimumSize
	if lla != nil {
		n += 8
	}
	m := header.ICMPv6(make([]byte, n))
	m.SetType(typ)
	m.MessageBody()[0] = flags
	copy(m[8:24], target.AsSlice())
	if lla != nil {
		opt := byte(1)
		if typ == header.ICMPv6NeighborAdvert {
			opt = 2
		}
		m[24], m[25] = opt, 1
		copy(m[26:32], lla[:])
	}
	m.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m, Src: taddr(src), Dst: taddr(dst)}))
	return m
}

func nsFrame(ethDst, ethSrc mac, src, dst, target netip.Addr, slla *mac, hop uint8) []byte {
	return ethFrame(ethDst, ethSrc, header.IPv6ProtocolNumber, ipv6(src, dst, 58, hop, ndp(header.ICMPv6NeighborSolicit, src, dst, target, 0, slla)))
}

func naFrame(ethDst, ethSrc mac, src, dst, target netip.Addr, flags uint8, tlla *mac) []byte {
	return ethFrame(ethDst, ethSrc, header.IPv6ProtocolNumber, ipv6(src, dst, 58, 255, ndp(header.ICMPv6NeighborAdvert, src, dst, target, flags, tlla)))
}

func solicited(a netip.Addr) netip.Addr {
	s := header.SolicitedNodeAddr(taddr(a))
	return netip.AddrFrom16(s.As16())
}

func mcastMAC(a netip.Addr) mac {
	return mac([]byte(header.EthernetAddressFromMulticastIPv6Address(taddr(a))))
}

// arpOf decodes an ARP frame the gateway sent.
type arpMsg struct {
	ethDst, sha, tha mac
	op               header.ARPOp
	spa, tpa         netip.Addr
}

func decodeARP(t *testing.T, f []byte) arpMsg {
	t.Helper()
	e := header.Ethernet(f)
	if e.Type() != header.ARPProtocolNumber {
		t.Fatalf("want ARP, got ethertype %#x", e.Type())
	}
	a := header.ARP(f[header.EthernetMinimumSize:])
	if !a.IsValid() {
		t.Fatal("invalid ARP")
	}
	var m arpMsg
	copy(m.ethDst[:], f[0:6])
	m.op = a.Op()
	copy(m.sha[:], a.HardwareAddressSender())
	copy(m.tha[:], a.HardwareAddressTarget())
	m.spa = netip.AddrFrom4([4]byte(a.ProtocolAddressSender()))
	m.tpa = netip.AddrFrom4([4]byte(a.ProtocolAddressTarget()))
	return m
}

// ndpMsg decodes an NS/NA the gateway sent, checking what RFC 4861 makes
// a receiver check.
type ndpMsg struct {
	ethDst, lla      mac
	src, dst, target netip.Addr
	typ              header.ICMPv6Type
	flags            uint8
}

func decodeNDP(t *testing.T, f []byte) ndpMsg {
	t.Helper()
	if header.Ethernet(f).Type() != header.IPv6ProtocolNumber {
		t.Fatalf("want IPv6, got ethertype %#x", header.Ethernet(f).Type())
	}
	ip := header.IPv6(f[header.EthernetMinimumSize:])
	if !ip.IsValid(len(ip)) || ip.NextHeader() != 58 || ip.HopLimit() != 255 {
		t.Fatalf("bad NDP IPv6 header: next %d hop %d", ip.NextHeader(), ip.HopLimit())
	}
	m := header.ICMPv6(ip.Payload())
	if header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}) != 0xffff && m.Checksum() == 0 {
		t.Fatal("zero checksum")
	}
	var cs = m.Checksum()
	m.SetChecksum(0)
	if want := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}); want != cs {
		t.Fatalf("checksum %#x, want %#x", cs, want)
	}
	m.SetChecksum(cs)
	var out ndpMsg
	copy(out.ethDst[:], f[0:6])
	out.typ = m.Type()
	out.src = netip.AddrFrom16([16]byte(ip.SourceAddressSlice()))
	out.dst = netip.AddrFrom16([16]byte(ip.DestinationAddressSlice()))
	out.flags = m.MessageBody()[0]
	out.target = netip.AddrFrom16([16]byte(m[8:24]))
	if len(m) >= 32 {
		copy(out.lla[:], m[26:32])
	}
	return out
}

// readPacket returns the next L3 packet the Device hands to netstack.
func readPacket(t *testing.T, d *Device) []byte {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		bufs := [][]byte{make([]byte, 16+1600)}
		sizes := []int{0}
		n, err := d.Read(bufs, sizes, 16)
		if n == 0 {
			ch <- res{nil, err}
			return
		}
		ch <- res{bufs[0][16 : 16+sizes[0]], err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.b
	case <-time.After(10 * time.Second):
		t.Fatal("no packet from Read")
		return nil
	}
}

// write hands one IP packet to the Device as netstack does (16 bytes of
// headroom).
func write(t *testing.T, d *Device, pkt []byte) {
	t.Helper()
	b := make([]byte, 16+len(pkt))
	copy(b[16:], pkt)
	if _, err := d.Write([][]byte{b}, 16); err != nil {
		t.Fatal(err)
	}
}

func ethDst(f []byte) mac { return mac(f[0:6]) }

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// bindForTest binds a to m on p as a workstation answering torgate's own
// solicitation would.
func bindForTest(p *port, a netip.Addr, m mac) {
	p.claim(a, m)
	p.confirm(a, m)
}

// answer plays the workstation at m answering torgate's own request for a.
func answer(t *testing.T, w *wire, a netip.Addr, m mac) {
	t.Helper()
	r := decodeARP(t, w.next(t))
	if r.op != header.ARPRequest || r.tpa != a {
		t.Fatalf("want torgate's request for %v, got %+v", a, r)
	}
	w.send(arpFrame(header.ARPReply, gwMAC, m, a, gwMAC, gw4.Addr()))
}

// awaitBound waits (bounded) until a is bound to a MAC.
func awaitBound(t *testing.T, d *Device, a netip.Addr) {
	t.Helper()
	for i := 0; ; i++ {
		if _, ok := d.Identity(a); ok {
			return
		}
		if i > 1000 {
			t.Fatalf("%v never bound", a)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
