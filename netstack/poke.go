package netstack

import (
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// A RST that the workstation drops. gVisor's Abort sends its RST with
// seq = snd.nxt (gvisor.go G2); Linux accepts a RST only at exactly
// rcv.nxt (RFC 5961) and, while its receive window is closed, drops any
// other silently, with no challenge ACK. When segments in flight were lost
// (a slow reader's full receive buffer, a full TUN queue), snd.nxt is past
// rcv.nxt and the workstation never learns that the flow is gone: measured
// 2026-12-02, TestTorIntegration/Managed/FailClosed, 1 run in 4 left curl
// waiting more than 10 s after Tor was killed.
//
// The workstation does answer a segment whose sequence number it cannot
// accept with an ACK carrying rcv.nxt (RFC 793; Linux's tcp_send_dupack,
// at most one per 500 ms per socket). That ACK reaches gVisor after the
// endpoint is gone, and gVisor answers an unknown 4-tuple with a RST at
// exactly the ACK's number, which the workstation takes. So after every
// Abort torgate pokes: two bare ACKs whose sequence numbers lie half the
// sequence space apart (at most one of them can fall in any window), now
// and again after pokeAgain, past the workstation's rate limit. If the
// first RST was taken, the workstation has no socket left and answers the
// pokes with RSTs, which gVisor ignores.

// pokeAgain is when the second pair of pokes goes out: past Linux's
// per-socket limit on out-of-window ACKs (tcp_invalid_ratelimit, 500 ms).
const pokeAgain = 600 * time.Millisecond

// pokeSeq is the first poke's sequence number; the second is half the
// sequence space away. Any value works; this one is easy to spot in a
// capture.
const pokeSeq = 0x70c6a7e0

// pokeAfterReset sends the pokes for the flow local (the destination the
// workstation asked for) <- remote (the workstation), now and after
// pokeAgain.
func (s *Stack) pokeAfterReset(local, remote netip.AddrPort) {
	s.poke(local, remote)
	time.AfterFunc(pokeAgain, func() {
		if s.ctx.Err() == nil {
			s.poke(local, remote)
		}
	})
}

func (s *Stack) poke(local, remote netip.AddrPort) {
	for _, seq := range [2]uint32{pokeSeq, pokeSeq + 1<<31} {
		s.sendTCPAck(local, remote, seq)
	}
}

// sendTCPAck queues a bare ACK (no payload, window 0) from local to
// remote with sequence number seq.
func (s *Stack) sendTCPAck(local, remote netip.AddrPort, seq uint32) {
	v6 := !local.Addr().Unmap().Is4()
	b, off, proto, srcA, dstA := rawPacket(v6, local.Addr().Unmap(), remote.Addr().Unmap(), header.TCPProtocolNumber, header.TCPMinimumSize)
	t := header.TCP(b[off:])
	t.Encode(&header.TCPFields{
		SrcPort:    local.Port(),
		DstPort:    remote.Port(),
		SeqNum:     seq,
		DataOffset: header.TCPMinimumSize,
		Flags:      header.TCPFlagAck,
	})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, srcA, dstA, header.TCPMinimumSize)
	t.SetChecksum(^t.CalculateChecksum(xsum))
	s.queueRaw(b, proto, false)
}
