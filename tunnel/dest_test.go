package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/torgate/torgate/internal/dest"
	"github.com/torgate/torgate/socks"
)

// TestForbiddenFlows: a flow to any forbidden destination, given as an
// address or as a virtual address whose name is a forbidden literal, gets
// a RST and the upstream sees nothing.
func TestForbiddenFlows(t *testing.T) {
	var mu sync.Mutex
	var got []socks.Addr
	up := fakeUpstream{connect: func(_ context.Context, d socks.Addr, _ socks.Auth) (net.Conn, error) {
		mu.Lock()
		got = append(got, d)
		mu.Unlock()
		return nil, errors.New("refused")
	}}
	gw := netip.MustParsePrefix("198.51.100.0/24") // the gateway's own LAN
	names := fakeNames{
		netip.MustParseAddr("10.192.0.5"):  "127.0.0.1",
		netip.MustParseAddr("10.192.0.6"):  "0x7f.1",
		netip.MustParseAddr("10.192.0.7"):  "169.254.169.254",
		netip.MustParseAddr("10.192.0.8"):  "198.51.100.9",
		netip.MustParseAddr("10.192.0.9"):  "192.0.2.8",    // allowed: goes out as the address
		netip.MustParseAddr("10.192.0.10"): "203.0.113.77", // the gateway's uplink, as a literal name
	}
	uplink4, uplink6 := netip.MustParseAddr("203.0.113.77"), netip.MustParseAddr("2001:db8:1e01::1")
	tn := newTunnel(t, up, func(c *Config) {
		c.Names = names
		p, err := dest.NewPolicy([]netip.Prefix{gw}, func(a netip.Addr) bool { return a == uplink4 || a == uplink6 })
		if err != nil {
			t.Fatal(err)
		}
		c.Policy = p
	})
	var dsts []netip.Addr
	// One of each class package dest forbids (its own tests cover the
	// edges of each).
	for _, a := range []string{
		"0.0.0.0", "::", "127.0.0.1", "::1", "::ffff:127.0.0.1", "224.0.0.1", "ff02::1",
		"255.255.255.255", "169.254.0.1", "fe80::1", "169.254.169.254", "fd00:ec2::254",
		"10.99.0.2", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fc00::1", "0.1.2.3",
		"240.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "2001:0:7f00:1::1",
	} {
		ip := netip.MustParseAddr(a)
		if dest.Forbidden(ip) == dest.ReasonAllowed {
			t.Fatalf("%s: package dest allows it; this test's list is out of date", a)
		}
		dsts = append(dsts, ip)
	}
	dsts = append(dsts, netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("::ffff:198.51.100.1"),
		uplink4, netip.AddrFrom16(uplink4.As16()), uplink6)
	for ip := range names {
		if ip != netip.MustParseAddr("10.192.0.9") {
			dsts = append(dsts, ip)
		}
	}
	for _, ip := range dsts {
		f := &fakeFlow{}
		tn.HandleTCP(netip.AddrPortFrom(srcA, 1), netip.AddrPortFrom(ip, 80), f)
		if !f.rejected.Load() || f.accepted.Load() {
			t.Errorf("flow to %v not refused", ip)
		}
	}
	if n := testutil.ToFloat64(tn.refused.WithLabelValues(refuseForbid)); int(n) != len(dsts) {
		t.Errorf("flows_refused_total{reason=forbidden} = %v, want %d", n, len(dsts))
	}
	if len(got) != 0 {
		t.Fatalf("upstream saw %v", got)
	}
	tn.HandleTCP(netip.AddrPortFrom(srcA, 1), netip.MustParseAddrPort("10.192.0.9:80"), &fakeFlow{})
	if len(got) != 1 || got[0].Name != "" || got[0].IP != netip.MustParseAddr("192.0.2.8") {
		t.Fatalf("allowed literal name went out as %v, want the address 192.0.2.8", got)
	}
}
