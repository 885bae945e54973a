package lan

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/torgate/torgate/internal/vnet"
)

// checkWire is a Link.Frames that checks every frame the gateway sends:
// from our MAC, ARP or IPv6 (neighbour discovery) only, never IPv4 out of
// an inbound frame.
type checkWire struct {
	closed chan struct{}
	bad    atomic.Pointer[string] // the first violation
}

func (w *checkWire) Read([]byte) (int, error) { <-w.closed; return 0, os.ErrClosed }
func (w *checkWire) Close() error             { close(w.closed); return nil }
func (w *checkWire) Write(b []byte) (int, error) {
	var bad string
	if len(b) < ethHeaderLen || mac(b[6:12]) != gwMAC {
		bad = fmt.Sprintf("frame not from our MAC: % x", b)
	} else if et := binary.BigEndian.Uint16(b[12:14]); et != ethTypeARP && et != ethTypeIPv6 {
		bad = fmt.Sprintf("answer of ethertype %#x", et)
	}
	if bad != "" {
		w.bad.CompareAndSwap(nil, &bad)
	}
	return len(b), nil
}

// FuzzFrame feeds arbitrary frames to the inbound path. Invariants: no
// panic; a packet handed to netstack is a slice of the frame, came to our
// MAC, has a source in the LAN, and its IP length matches its size; the
// gateway only ever answers with ARP or NDP from its own MAC.
func FuzzFrame(f *testing.F) {
	f.Add(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr()))
	f.Add(nsFrame(mcastMAC(solicited(gw6.Addr())), wsMAC, ws6, solicited(gw6.Addr()), gw6.Addr(), &wsMAC, 255))
	f.Add(naFrame(gwMAC, wsMAC, ws6, gw6.Addr(), ws6, naFlagSolic, &wsMAC))
	f.Add(ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(ws4, other)))
	f.Add(ethFrame(gwMAC, wsMAC, header.IPv6ProtocolNumber, ipv6(ws6, gw6.Addr(), 6, 64, make([]byte, 20))))
	f.Add(ethFrame(gwMAC, wsMAC, 0x8100, make([]byte, 50)))
	// One Device for the whole run: its neighbour table carries state
	// from input to input, as on a real LAN, and the fuzzer stays fast.
	w := &checkWire{closed: make(chan struct{})}
	d, err := NewDevice([]Link{{Name: "f", MAC: net.HardwareAddr(gwMAC[:]), Addrs: []netip.Prefix{gw4, gw6}, Frames: w}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	p := d.ports[0]
	f.Fuzz(func(t *testing.T, b []byte) {
		if l3, _ := feedInbound(t, p, w, b, vnet.Header{}); l3 != nil {
			checkDelivered(t, p, b, l3)
		}
	})
}

// feedInbound runs one frame and its header through p's inbound path as
// readLoop does, and fails t if the gateway put anything wrong on the
// wire. It returns the packet for netstack (nil if none) and its header.
func feedInbound(t *testing.T, p *port, w *checkWire, fr []byte, h vnet.Header) ([]byte, vnet.Header) {
	t.Helper()
	var pf frame
	parseFrame(fr, &pf)
	pk := p.dev.pool.Get().(*inPacket)
	pk.off = 0
	l3, holding := p.inbound(&pf, h, pk)
	vh := pk.vh
	if !holding {
		p.dev.pool.Put(pk)
	}
	if bad := w.bad.Load(); bad != nil {
		t.Fatal(*bad)
	}
	return l3, vh
}

// checkDelivered checks a packet inbound handed to netstack out of frame
// b: a slice of the frame's payload, to our MAC, from a source in the
// LAN, with its IP length matching its size.
func checkDelivered(t *testing.T, p *port, b, l3 []byte) {
	t.Helper()
	if len(b) < ethHeaderLen || &l3[0] != &b[ethHeaderLen] {
		t.Fatal("packet is not the frame's payload")
	}
	if mac(b[0:6]) != gwMAC {
		t.Fatalf("delivered a frame to %x", b[0:6])
	}
	var src netip.Addr
	switch l3[0] >> 4 {
	case 4:
		if int(binary.BigEndian.Uint16(l3[2:4])) != len(l3) {
			t.Fatal("IPv4 length mismatch")
		}
		src = netip.AddrFrom4([4]byte(l3[12:16]))
	case 6:
		if 40+int(binary.BigEndian.Uint16(l3[4:6])) != len(l3) {
			t.Fatal("IPv6 length mismatch")
		}
		src = netip.AddrFrom16([16]byte(l3[8:24]))
	default:
		t.Fatalf("delivered version %d", l3[0]>>4)
	}
	if !(gw4.Masked().Contains(src) || gw6.Masked().Contains(src) || src.IsLinkLocalUnicast()) || p.isOurs(src) {
		t.Fatalf("delivered source %v", src)
	}
}

// vnetCheckWire is a checkWire behind virtio-net headers: every frame
// the gateway builds while reading carries a zero one.
type vnetCheckWire struct{ checkWire }

func (w *vnetCheckWire) SetOffload(bool) error { return nil }
func (w *vnetCheckWire) Write(b []byte) (int, error) {
	if len(b) < vnet.HdrLen || vnet.Decode(b) != (vnet.Header{}) {
		bad := fmt.Sprintf("frame without a zero virtio-net header: % x", b)
		w.bad.CompareAndSwap(nil, &bad)
		return len(b), nil
	}
	w.checkWire.Write(b[vnet.HdrLen:])
	return len(b), nil
}

// FuzzVnetFrame feeds arbitrary frames behind arbitrary virtio-net
// headers to the inbound path of a link with offloads on (the first
// vnet.HdrLen bytes of the input are the header). Invariants: those of
// FuzzFrame; and a packet handed on carries a header that passes
// vnet.Header.Check against it, counted from its IP header, and is no
// larger than the MTU unless it is a TCP super-packet.
func FuzzVnetFrame(f *testing.F) {
	hdr := func(h vnet.Header, frame []byte) []byte {
		b := make([]byte, vnet.HdrLen)
		h.Encode(b)
		return append(b, frame...)
	}
	big := tcpPacket(ws4, other, 3000)
	f.Add(hdr(vnet.Header{Flags: vnet.FlagNeedsCsum, GSOType: vnet.GSOTCPv4, GSOSize: 1448, HdrLen: 54, CsumStart: 34, CsumOffset: 16}, ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, big)))
	f.Add(hdr(vnet.Header{Flags: vnet.FlagDataValid, GSOType: vnet.GSOTCPv6, GSOSize: 1428}, ethFrame(gwMAC, wsMAC, header.IPv6ProtocolNumber, tcpPacket(ws6, gw6.Addr(), 3000))))
	f.Add(hdr(vnet.Header{Flags: vnet.FlagNeedsCsum, GSOType: vnet.GSOUDPL4, GSOSize: 1448, CsumStart: 34, CsumOffset: 6}, ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, big)))
	f.Add(hdr(vnet.Header{}, arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr())))
	f.Add(hdr(vnet.Header{Flags: vnet.FlagNeedsCsum, CsumStart: 14, CsumOffset: 65535}, ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(ws4, other))))
	f.Add([]byte{1, 2, 3})
	w := &vnetCheckWire{checkWire{closed: make(chan struct{})}}
	d, err := NewDevice([]Link{{Name: "f", MAC: net.HardwareAddr(gwMAC[:]), Addrs: []netip.Prefix{gw4, gw6}, Frames: w, Vnet: true}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	if !d.EnableOffload() {
		f.Fatal("EnableOffload refused")
	}
	p := d.ports[0]
	bindForTest(p, ws4, wsMAC)
	bindForTest(p, ws6, wsMAC)
	// The same inputs, in the same order, through ReadVnet's direct
	// reads (takeReads) on a Device of their own.
	dw := &fuzzDirectWire{vnetCheckWire: &vnetCheckWire{checkWire{closed: make(chan struct{})}}}
	dw.directReads = newDirectReads(make(chan []byte, 1), dw.vnetCheckWire.closed)
	dd, err := NewDevice([]Link{{Name: "f", MAC: net.HardwareAddr(gwMAC[:]), Addrs: []netip.Prefix{gw4, gw6}, Frames: dw, Vnet: true}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { dd.Close() })
	if !dd.EnableOffload() || !dd.direct.Load() {
		f.Fatal("no direct mode")
	}
	bindForTest(dd.ports[0], ws4, wsMAC)
	bindForTest(dd.ports[0], ws6, wsMAC)
	buf := make([]byte, vnet.HdrLen+65535)
	check := func(t *testing.T, p *port, fr, l3 []byte, vh vnet.Header) {
		checkDelivered(t, p, fr, l3)
		if err := vh.Check(l3); err != nil {
			t.Fatalf("delivered with header %+v: %v", vh, err)
		}
		if len(l3) > p.mtu && !vh.GSO() {
			t.Fatalf("delivered %d bytes without GSO", len(l3))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dw.in <- b
		if n, err := dd.readDirect(buf); err != nil {
			t.Fatal(err)
		} else if n > 0 {
			fr := b[vnet.HdrLen:]
			l3 := buf[vnet.HdrLen:n]
			if len(fr) < ethHeaderLen+len(l3) || !bytes.Equal(l3, fr[ethHeaderLen:ethHeaderLen+len(l3)]) {
				t.Fatal("direct read: packet is not the frame's payload")
			}
			check(t, dd.ports[0], fr, fr[ethHeaderLen:ethHeaderLen+len(l3)], vnet.Decode(buf))
		}
		if bad := dw.bad.Load(); bad != nil {
			t.Fatal(*bad)
		}
		if len(b) < vnet.HdrLen {
			return // readLoop drops it as malformed before parsing
		}
		fr := b[vnet.HdrLen:]
		l3, vh := feedInbound(t, p, &w.checkWire, fr, vnet.Decode(b))
		if l3 == nil {
			return
		}
		check(t, p, fr, l3, vh)
	})
}

// fuzzDirectWire is a vnetCheckWire that ReadVnet reads directly.
type fuzzDirectWire struct {
	*vnetCheckWire
	*directReads
}

func (w *fuzzDirectWire) Read(b []byte) (int, error) { return w.Readv([][]byte{b}) }
