package vnet

import (
	"errors"
	"testing"
)

func TestEncodeDecode(t *testing.T) {
	h := Header{Flags: FlagNeedsCsum, GSOType: GSOTCPv6, HdrLen: 74, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}
	b := make([]byte, HdrLen)
	h.Encode(b)
	if got := Decode(b); got != h {
		t.Fatalf("round trip %+v, want %+v", got, h)
	}
	h.Shift(-14)
	if h.CsumStart != 40 || h.HdrLen != 60 {
		t.Fatalf("shifted %+v", h)
	}
	z := Header{}
	z.Shift(14)
	if z != (Header{}) {
		t.Fatalf("unset offsets moved: %+v", z)
	}
}

// packet is a minimal IPv4 (ihl 5) or IPv6 packet of n bytes with the
// given protocol.
func packet(v4 bool, proto byte, n int) []byte {
	b := make([]byte, n)
	if v4 {
		b[0], b[9] = 0x45, proto
	} else {
		b[0], b[6] = 0x60, proto
	}
	return b
}

func TestCheck(t *testing.T) {
	gso4 := Header{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, HdrLen: 40, CsumStart: 20, CsumOffset: 16}
	with := func(f func(*Header)) Header { h := gso4; f(&h); return h }
	for _, tc := range []struct {
		name string
		hdr  Header
		pkt  []byte
		want error
	}{
		{name: "tcpv4 super-packet", hdr: gso4, pkt: packet(true, 6, 3000)},
		{name: "tcpv6 super-packet", hdr: Header{Flags: FlagDataValid, GSOType: GSOTCPv6, GSOSize: 1428}, pkt: packet(false, 6, 3000)},
		{name: "zero", pkt: packet(true, 17, 100)},
		{name: "empty packet", hdr: gso4, pkt: nil, want: ErrGSOProto},
		{name: "unknown flag", hdr: Header{Flags: 4}, pkt: packet(true, 6, 100), want: ErrFlags},
		{name: "ECN", hdr: with(func(h *Header) { h.GSOType |= GSOECN }), pkt: packet(true, 6, 3000), want: ErrGSOType},
		{name: "UDP L4", hdr: with(func(h *Header) { h.GSOType = GSOUDPL4 }), pkt: packet(true, 17, 3000), want: ErrGSOType},
		{name: "size 0", hdr: with(func(h *Header) { h.GSOSize = 0 }), pkt: packet(true, 6, 3000), want: ErrGSOSize},
		{name: "UDP under TCP type", hdr: gso4, pkt: packet(true, 17, 3000), want: ErrGSOProto},
		{name: "v6 under TCPv4 type", hdr: gso4, pkt: packet(false, 6, 3000), want: ErrGSOProto},
		{name: "csum inside IP header", hdr: with(func(h *Header) { h.CsumStart = 10 }), pkt: packet(true, 6, 3000), want: ErrCsum},
		{name: "csum past the end", hdr: with(func(h *Header) { h.CsumStart = 2990 }), pkt: packet(true, 6, 3000), want: ErrCsum},
		{name: "short IPv4", hdr: Header{Flags: FlagNeedsCsum, CsumStart: 0, CsumOffset: 0}, pkt: packet(true, 6, 10), want: ErrCsum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.hdr.Check(tc.pkt); !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzCheck: Check never reads outside the packet, and what it accepts
// keeps its checksum field inside the packet.
func FuzzCheck(f *testing.F) {
	f.Add([]byte{1, 1, 40, 0, 0xa8, 5, 20, 0, 16, 0}, packet(true, 6, 3000))
	f.Add([]byte{2, 4, 0, 0, 0x94, 5, 0, 0, 0, 0}, packet(false, 6, 3000))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 255, 255, 255, 255}, packet(true, 6, 60))
	f.Fuzz(func(t *testing.T, hb, pkt []byte) {
		if len(hb) < HdrLen {
			return
		}
		h := Decode(hb)
		if h.Check(pkt) != nil {
			return
		}
		if h.NeedsCsum() && int(h.CsumStart)+int(h.CsumOffset)+2 > len(pkt) {
			t.Fatalf("accepted a checksum at %d+%d in %d bytes", h.CsumStart, h.CsumOffset, len(pkt))
		}
		if h.GSO() && (h.GSOSize == 0 || h.GSOType&GSOECN != 0) {
			t.Fatalf("accepted %+v", h)
		}
	})
}
