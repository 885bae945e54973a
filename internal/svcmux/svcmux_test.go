package svcmux

import (
	"net"
	"net/netip"
	"testing"

	"github.com/torgate/torgate/internal/flow"
)

type req struct{ dst netip.AddrPort }

func (r req) Who() netip.Addr           { return netip.MustParseAddr("10.0.0.2") }
func (r req) Src() netip.AddrPort       { return netip.MustParseAddrPort("10.0.0.2:40000") }
func (r req) Dst() netip.AddrPort       { return r.dst }
func (r req) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (r req) Reject()                   {}

type rec struct{ got []netip.AddrPort }

func (h *rec) ServeTCP(f flow.Request) { h.got = append(h.got, f.Dst()) }

// TestMux: only the gateway's own address on a service port reaches the
// service; the same port elsewhere, and other ports on the gateway, go to
// the tunnel (which refuses the gateway as a destination).
func TestMux(t *testing.T) {
	gw := netip.MustParseAddr("10.0.0.1")
	own := func(a netip.Addr) bool { return a == gw }
	var socks, tunnel rec
	m, err := New(own, map[uint16]Handler{9050: &socks}, &tunnel)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"10.0.0.1:9050", "[::ffff:10.0.0.1]:9050", "10.0.0.9:9050", "10.0.0.1:22", "1.2.3.4:80"} {
		m.ServeTCP(req{dst: netip.MustParseAddrPort(d)})
	}
	if len(socks.got) != 2 || len(tunnel.got) != 3 {
		t.Errorf("service got %v, tunnel got %v", socks.got, tunnel.got)
	}
	if _, err := New(nil, map[uint16]Handler{9050: &socks}, &tunnel); err == nil {
		t.Error("ports without own addresses accepted")
	}
	if _, err := New(own, nil, nil); err == nil {
		t.Error("no next handler accepted")
	}
	if _, err := New(own, map[uint16]Handler{0: &socks}, &tunnel); err == nil {
		t.Error("port 0 accepted")
	}
}
