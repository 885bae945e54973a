// Package vnet is the virtio-net header (include/uapi/linux/virtio_net.h)
// that a Linux TUN or macvtap opened with IFF_VNET_HDR puts in front of
// every packet or frame it reads and expects in front of every one it is
// given: its encoding, and the checks a header describing a packet from
// an untrusted sender must pass. netstack (the TUN, and the seam to
// devices that carry super-packets) and internal/lan (the macvtap) share
// it, so the layout has one home.
//
// Neither TUNSETVNETLE nor TUNSETVNETBE is ever set, so the fields are in
// the machine's byte order (virtio legacy).
package vnet

import (
	"encoding/binary"
	"errors"
)

// Wire constants.
const (
	// HdrLen is the header's size without the merged-buffers field, the
	// kernel's default (TUNSETVNETHDRSZ 10).
	HdrLen = 10
	// FlagNeedsCsum (VIRTIO_NET_HDR_F_NEEDS_CSUM): the transport checksum
	// is partial (the pseudo-header sum); summing from CsumStart on and
	// storing at CsumStart+CsumOffset completes it. The packet was made
	// on this machine, or by the peer of a virtual link (veth), and never
	// crossed a wire.
	FlagNeedsCsum = 1
	// FlagDataValid (VIRTIO_NET_HDR_F_DATA_VALID): the kernel, or the
	// NIC, validated the checksums (CHECKSUM_UNNECESSARY). A super-packet
	// merged by GRO carries only this, and a checksum no longer valid for
	// its length.
	FlagDataValid = 2

	GSONone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP   = 3    // VIRTIO_NET_HDR_GSO_UDP (UFO)
	GSOTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	GSOUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4 (UDP_SEGMENT)
	GSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN: segments carry CWR

	protoTCP = 6
)

// Header is a decoded virtio-net header.
type Header struct {
	Flags      uint8
	GSOType    uint8  // with GSOECN
	HdrLen     uint16 // headers to repeat in front of every segment
	GSOSize    uint16 // payload bytes per segment (the MSS)
	CsumStart  uint16 // where checksumming starts, from the packet's start
	CsumOffset uint16 // where the checksum goes, from CsumStart
}

// Decode decodes b[:HdrLen].
func Decode(b []byte) Header {
	_ = b[HdrLen-1]
	return Header{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.NativeEndian.Uint16(b[2:4]),
		GSOSize:    binary.NativeEndian.Uint16(b[4:6]),
		CsumStart:  binary.NativeEndian.Uint16(b[6:8]),
		CsumOffset: binary.NativeEndian.Uint16(b[8:10]),
	}
}

// Encode writes h into b[:HdrLen].
func (h Header) Encode(b []byte) {
	_ = b[HdrLen-1]
	b[0], b[1] = h.Flags, h.GSOType
	binary.NativeEndian.PutUint16(b[2:4], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:6], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:8], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:10], h.CsumOffset)
}

// NeedsCsum reports a partial transport checksum.
func (h Header) NeedsCsum() bool { return h.Flags&FlagNeedsCsum != 0 }

// ChecksumTrusted reports whether the kernel vouches for the packet's
// checksums: a partial one (NEEDS_CSUM) or one it validated (DATA_VALID).
// Either way the receiver must not check them itself.
func (h Header) ChecksumTrusted() bool { return h.Flags&(FlagNeedsCsum|FlagDataValid) != 0 }

// GSO reports whether the packet is a super-packet to be segmented.
func (h Header) GSO() bool { return h.GSOType != GSONone }

// Shift moves the offsets that count from the packet's start by n bytes:
// +14 when an Ethernet header is put in front of an IP packet (a macvtap
// counts from the frame, a TUN from the IP header), -14 when it is taken
// off. Offsets that are unset (0: no partial checksum, no GSO) stay unset.
// The caller checks first that the result is not negative (Check).
func (h *Header) Shift(n int) {
	if h.NeedsCsum() {
		h.CsumStart = uint16(int(h.CsumStart) + n)
	}
	if h.HdrLen != 0 {
		h.HdrLen = uint16(max(int(h.HdrLen)+n, 0))
	}
}

// Errors of Check. Each is a reason to drop the packet, never fatal.
var (
	ErrGSOType  = errors.New("vnet: GSO type other than TCPv4/TCPv6, or ECN")
	ErrGSOSize  = errors.New("vnet: GSO without a segment size")
	ErrGSOProto = errors.New("vnet: GSO type does not match the IP version or protocol")
	ErrCsum     = errors.New("vnet: checksum offsets outside the transport header")
	ErrFlags    = errors.New("vnet: unknown flags")
)

// Check validates h, the header of pkt (an IP packet whose length the
// caller checked against its IP header; h's offsets count from pkt's
// start), for a receiver that takes TCP super-packets whole and nothing
// else: the GSO type is none, TCPv4 or TCPv6 without ECN (the device is
// never offered TSO_ECN or UDP offloads), a super-packet has a segment
// size and is TCP over the IP version its type names (no IPv6 extension
// headers), and a partial checksum lies inside the packet, past the IP
// header. It never reads outside pkt.
func (h Header) Check(pkt []byte) error {
	if h.Flags&^(FlagNeedsCsum|FlagDataValid) != 0 {
		return ErrFlags
	}
	if len(pkt) < 1 {
		return ErrGSOProto
	}
	ipLen := 0
	switch v := pkt[0] >> 4; {
	case v == 4 && len(pkt) >= 20:
		ipLen = int(pkt[0]&0xf) * 4
	case v == 6 && len(pkt) >= 40:
		ipLen = 40
	}
	switch h.GSOType {
	case GSONone:
	case GSOTCPv4, GSOTCPv6:
		if h.GSOSize == 0 {
			return ErrGSOSize
		}
		want4 := h.GSOType == GSOTCPv4
		switch {
		case ipLen == 0:
			return ErrGSOProto
		case want4 && (pkt[0]>>4 != 4 || pkt[9] != protoTCP):
			return ErrGSOProto
		case !want4 && (pkt[0]>>4 != 6 || pkt[6] != protoTCP):
			return ErrGSOProto
		}
	default:
		return ErrGSOType
	}
	if h.NeedsCsum() {
		start, off := int(h.CsumStart), int(h.CsumOffset)
		if ipLen == 0 || start < ipLen || start+off+2 > len(pkt) {
			return ErrCsum
		}
	}
	return nil
}
