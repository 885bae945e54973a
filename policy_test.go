package torgate

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/torgate/torgate/internal/dest"
	"github.com/torgate/torgate/internal/lan"
)

// TestPolicyCoversTheLANs: on a LAN, the router's one destination policy
// refuses the LAN's own prefixes and the gateway's LAN addresses, even
// when the LAN uses public addresses the built-in rules allow: a flow
// "through" the gateway to another machine on its LAN, or to the gateway
// itself, never goes to Tor (issue 20 replaced lan.Refuse by the policy).
func TestPolicyCoversTheLANs(t *testing.T) {
	dev, wire := net.Pipe()
	go io.Copy(io.Discard, wire) // the LAN: takes whatever the gateway sends
	t.Cleanup(func() { wire.Close() })
	ld, err := lan.NewDevice([]lan.Link{{
		Name:   "eth1",
		MAC:    net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10},
		Addrs:  []netip.Prefix{netip.MustParsePrefix("198.51.100.10/24"), netip.MustParsePrefix("2001:db8:5::1/64")},
		Frames: dev,
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Device: ld, Upstream: func(context.Context) (net.Conn, error) { return nil, errors.New("no upstream") }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	for _, a := range []string{"198.51.100.10", "198.51.100.77", "::ffff:198.51.100.77", "2001:db8:5::99"} {
		if why := r.policy.Forbidden(netip.MustParseAddr(a)); why == dest.ReasonAllowed {
			t.Errorf("%s on the LAN is an allowed destination", a)
		}
	}
	if why := r.policy.Forbidden(netip.MustParseAddr("198.51.101.1")); why != dest.ReasonAllowed {
		t.Errorf("an address off the LAN is refused: %v", why)
	}
	if dest.Forbidden(netip.MustParseAddr("198.51.100.77")) != dest.ReasonAllowed {
		t.Fatal("the built-in rules refuse the test LAN already: the test proves nothing")
	}
}
