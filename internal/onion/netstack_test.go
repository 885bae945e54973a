package onion

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/internal/wstest"
	"github.com/torgate/torgate/netstack"
)

// TestThroughStack: the whole way but Tor. A connection on the service's
// socket is dialled from torgate's gVisor stack, from the gateway's own
// address, to a workstation (wireguard's tun/netstack behind wstest's
// hub) that echoes; the stack's forwarder sees nothing, and no packet
// goes anywhere but the declared target.
func TestThroughStack(t *testing.T) {
	gw := netip.MustParseAddr("10.152.152.10")
	hub, wss := wstest.New(t, 1500, ws1, ws2)
	st, err := netstack.New(netstack.Config{
		Device: hub,
		TCP: netstack.TCPHandlerFunc(func(r flow.Request) {
			t.Errorf("the forwarder got a flow %v -> %v", r.Src(), r.Dst())
			r.Reject()
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Start()
	t.Cleanup(func() { st.Close() })

	ln, err := wss[0].Net.ListenTCPAddrPort(netip.AddrPortFrom(ws1, 8080))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	peers := make(chan net.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		peers <- c.RemoteAddr()
		io.Copy(c, c)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()

	s := newServer(t, Config{
		Dial: func(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
			return st.DialTCP(ctx, netip.AddrPortFrom(gw, 0), target)
		},
		Entries: []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 8080)}},
	})
	c := connectAsTor(t, s, 0, 0)
	msg := []byte("GET / HTTP/1.1\r\nHost: x.onion\r\n\r\n")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != string(msg) {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if a := (<-peers).(*net.TCPAddr).AddrPort().Addr().Unmap(); a != gw {
		t.Errorf("the workstation saw %v, want the gateway's own %v", a, gw)
	}
	if n := hub.Stray.Load(); n != 0 {
		t.Errorf("%d packets to addresses no workstation has", n)
	}
	if n := hub.Delivered(ws2); n != 0 {
		t.Errorf("%d packets to the undeclared workstation %v", n, ws2)
	}
}
