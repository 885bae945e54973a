package netstack

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestRawPacketQueueRoom: a packet torgate builds itself queues as what it
// carries, not as the bytes gVisor sees in its Data. DNS answers (payload)
// stop at the data cap; pokes (bare ACKs after a reset) use the room kept
// for control segments, as gVisor's RSTs do, so a mass reset cannot lose
// them to the cap. A drop counts once as overload and once as outbound.
func TestRawPacketQueueRoom(t *testing.T) {
	s := &Stack{}
	s.ep = newLinkEndpoint(1500, 2, 2, [2]*atomic.Uint64{&s.stats.Drops[ReasonOverload], &s.stats.OutboundDrops})
	ws := netip.MustParseAddrPort("10.152.152.11:40000")
	dst := netip.MustParseAddrPort("192.0.2.1:443")
	answer := func() {
		b, _, proto, _, _ := rawPacket(false, netip.MustParseAddr("10.152.152.10"), ws.Addr(), header.UDPProtocolNumber, header.UDPMinimumSize+12)
		s.queueRaw(b, proto, true)
	}
	want := func(queued int, drops uint64) {
		t.Helper()
		if n, _ := s.ep.changes(); n != queued {
			t.Errorf("%d packets queued, want %d", n, queued)
		}
		if got := s.stats.Drops[ReasonOverload].Load(); got != drops {
			t.Errorf("overload drops %d, want %d", got, drops)
		}
		if got := s.stats.OutboundDrops.Load(); got != drops {
			t.Errorf("outbound drops %d, want %d", got, drops)
		}
	}
	answer()
	answer()
	want(2, 0)
	answer() // past the data cap
	want(2, 1)
	s.poke(dst, ws) // two bare ACKs: room for control segments
	want(4, 1)
	s.sendTCPAck(dst, ws, pokeSeq) // the ring is full
	want(4, 2)
	out := make([]*stack.PacketBuffer, 8)
	n := s.ep.dequeue(context.Background(), out)
	for _, p := range out[:n] {
		p.DecRef()
	}
	if n != 4 {
		t.Fatalf("dequeued %d, want 4", n)
	}
}
