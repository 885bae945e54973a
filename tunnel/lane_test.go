package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/torgate/torgate/socks"
)

// laneUpstream is one lane's fake Tor: every CONNECT gets a pipe whose
// far end the test keeps, and every RESOLVE an address naming the lane.
type laneUpstream struct {
	k       int
	connect atomic.Int32
	resolve atomic.Int32
	remotes chan net.Conn
}

func (u *laneUpstream) Connect(context.Context, socks.Addr, socks.Auth) (net.Conn, error) {
	u.connect.Add(1)
	local, remote := net.Pipe()
	u.remotes <- remote
	return &halfPipe{Conn: local}, nil
}

func (u *laneUpstream) Resolve(context.Context, string, socks.Auth) (netip.Addr, error) {
	u.resolve.Add(1)
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(u.k)}), nil
}

func (u *laneUpstream) ResolvePTR(context.Context, netip.Addr, socks.Auth) (string, error) {
	return "", errors.New("no")
}

// TestLanes: with two lanes (two Tor instances), each workstation goes
// out on its own lane only; a lane that is not ready refuses its own
// workstations' flows and lookups and no one else's; EndLaneBecause ends
// one lane's open flows with a RST and leaves the other's open; the lane
// that comes back serves again.
func TestLanes(t *testing.T) {
	ups := []*laneUpstream{{k: 0, remotes: make(chan net.Conn, 8)}, {k: 1, remotes: make(chan net.Conn, 8)}}
	var ready [2]atomic.Bool
	ready[0].Store(true)
	ready[1].Store(true)
	lanes := []Lane{
		{Upstream: ups[0], Ready: ready[0].Load},
		{Upstream: ups[1], Ready: ready[1].Load},
	}
	laneOf := func(who netip.Addr) int {
		if who == srcB {
			return 1
		}
		return 0
	}
	tn := newTunnel(t, nil, func(c *Config) { c.Upstream, c.Lanes, c.LaneOf = nil, lanes, laneOf })
	res := NewLaneResolver(lanes, laneOf, tn.Isolator())

	open := func(src netip.Addr) (*fakeFlow, net.Conn) {
		t.Helper()
		cl, _ := net.Pipe()
		f := &fakeFlow{client: &halfPipe{Conn: cl}}
		tn.HandleTCP(netip.AddrPortFrom(src, 1000), dst, f)
		if !f.accepted.Load() {
			t.Fatalf("flow of %v refused", src)
		}
		select {
		case r := <-ups[laneOf(src)].remotes:
			return f, r
		default:
			t.Fatalf("flow of %v not on lane %d", src, laneOf(src))
		}
		return nil, nil
	}
	_, _ = open(srcA)
	_, _ = open(srcB)
	if ups[0].connect.Load() != 1 || ups[1].connect.Load() != 1 {
		t.Fatalf("connects per lane %d, %d; want 1, 1", ups[0].connect.Load(), ups[1].connect.Load())
	}
	if a, err := res.Resolve(t.Context(), srcB, "x.example"); err != nil || a != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("srcB's lookup: %v, %v; want lane 1's answer", a, err)
	}

	// Lane 1 goes down: its flow ends, srcA's stays; srcB is refused,
	// srcA served.
	ready[1].Store(false)
	tn.EndLaneBecause(1, EndTorDown)
	waitUntil(t, func() bool { return tn.openFlows() == 1 })
	refused := &fakeFlow{}
	tn.HandleTCP(netip.AddrPortFrom(srcB, 1001), dst, refused)
	if !refused.rejected.Load() || refused.accepted.Load() {
		t.Fatal("a workstation of the lane that is down got a flow")
	}
	if _, err := res.Resolve(t.Context(), srcB, "x.example"); !errors.Is(err, errNotReady) {
		t.Fatalf("srcB's lookup while its lane is down: %v, want not ready", err)
	}
	if _, code := tn.ResolvePort(t.Context(), PortClient{Who: srcB, Port: 9050}, "x.example"); code == socks.ReplySucceeded {
		t.Fatal("srcB's SOCKS-port lookup served while its lane is down")
	}
	_, _ = open(srcA)
	if a, err := res.Resolve(t.Context(), srcA, "x.example"); err != nil || a != netip.MustParseAddr("192.0.2.0") {
		t.Fatalf("srcA's lookup while lane 1 is down: %v, %v", a, err)
	}
	if n := tn.openFlows(); n != 2 {
		t.Fatalf("%d flows open, want srcA's two", n)
	}
	if n := testutil.ToFloat64(tn.ended[endTorDown]); n != 1 {
		t.Fatalf("flows_ended_total{how=rst_tor_down} = %v, want lane 1's one flow", n)
	}

	// Lane 1 comes back.
	ready[1].Store(true)
	_, _ = open(srcB)
	tn.EndAllBecause(EndTold)
	waitUntil(t, func() bool { return tn.openFlows() == 0 })
}

// TestLaneConfig: Lanes exclude Upstream, Ready and UpstreamState, and
// need LaneOf.
func TestLaneConfig(t *testing.T) {
	iso, _ := NewIsolator(IsolateSource, nil)
	up := &laneUpstream{}
	for _, cfg := range []Config{
		{Isolator: iso, Lanes: []Lane{{Upstream: up}}},
		{Isolator: iso, Lanes: []Lane{{Upstream: up}}, LaneOf: func(netip.Addr) int { return 0 }, Upstream: up},
		{Isolator: iso, Lanes: []Lane{{Upstream: up}}, LaneOf: func(netip.Addr) int { return 0 }, Ready: func() bool { return true }},
		{Isolator: iso, Lanes: []Lane{{}}, LaneOf: func(netip.Addr) int { return 0 }},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}
