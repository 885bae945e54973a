package netstack_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/bench"
	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/netstack"
)

// TestDialTCP: the stack dials a service on a workstation from the
// gateway's own address, and the workstation's answers reach the dialling
// endpoint, never the forwarder (the TCP handler sees nothing).
func TestDialTCP(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gw, wsa netip.Addr
	}{
		{name: "IPv4", gw: netip.MustParseAddr("10.152.152.10"), wsa: netip.MustParseAddr("10.152.152.11")},
		{name: "IPv6", gw: netip.MustParseAddr("fd19:c33d:88bc::10"), wsa: netip.MustParseAddr("fd19:c33d:88bc::11")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, err := bench.NewWorkstation(tc.wsa, 1500)
			if err != nil {
				t.Fatal(err)
			}
			var forwarded atomic.Int64
			st, err := netstack.New(netstack.Config{
				Device: ws.Link(),
				TCP: netstack.TCPHandlerFunc(func(r flow.Request) {
					forwarded.Add(1)
					r.Reject()
				}),
			})
			if err != nil {
				ws.Close()
				t.Fatal(err)
			}
			st.Start()
			defer func() {
				st.Close()
				ws.Close()
			}()
			ln, err := ws.Listen(8080)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			peer := make(chan net.Addr, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				peer <- c.RemoteAddr()
				io.Copy(c, c) // echo until the stack half-closes
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := st.DialTCP(ctx, netip.AddrPortFrom(tc.gw, 0), netip.AddrPortFrom(tc.wsa, 8080))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := []byte("hello from the gateway's own stack")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if err := c.(*netstack.Conn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(msg) {
				t.Fatalf("echo = %q, want %q", got, msg)
			}
			if a := (<-peer).(*net.TCPAddr).AddrPort().Addr().Unmap(); a != tc.gw {
				t.Errorf("the workstation saw the connection from %v, want the gateway's %v", a, tc.gw)
			}
			if la := c.LocalAddr().(*net.TCPAddr); la.AddrPort().Addr().Unmap() != tc.gw || la.Port == 0 {
				t.Errorf("LocalAddr = %v, want %v with a port", la, tc.gw)
			}
			if n := forwarded.Load(); n != 0 {
				t.Errorf("the forwarder got %d requests: the workstation's segments missed the dialling endpoint", n)
			}

			// Nothing listens on 8081: the workstation's RST refuses it.
			_, err = st.DialTCP(ctx, netip.AddrPortFrom(tc.gw, 0), netip.AddrPortFrom(tc.wsa, 8081))
			if !errors.Is(err, netstack.ErrDialRefused) || !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial to a closed port: %v, want ErrDialRefused", err)
			}
		})
	}
}

// TestDialTCPBadAddress: addresses the stack must not dial from or to.
func TestDialTCPBadAddress(t *testing.T) {
	ws, err := bench.NewWorkstation(netip.MustParseAddr("10.152.152.11"), 1500)
	if err != nil {
		t.Fatal(err)
	}
	st, err := netstack.New(netstack.Config{Device: ws.Link(), TCP: netstack.TCPHandlerFunc(func(r flow.Request) { r.Reject() })})
	if err != nil {
		ws.Close()
		t.Fatal(err)
	}
	st.Start()
	defer func() {
		st.Close()
		ws.Close()
	}()
	gw := netip.MustParseAddrPort("10.152.152.10:0")
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
	}{
		{name: "zero src", src: netip.AddrPort{}, dst: netip.MustParseAddrPort("10.152.152.11:80")},
		{name: "families differ", src: gw, dst: netip.MustParseAddrPort("[fd00::11]:80")},
		{name: "loopback", src: gw, dst: netip.MustParseAddrPort("127.0.0.1:80")},
		{name: "multicast", src: gw, dst: netip.MustParseAddrPort("224.0.0.1:80")},
		{name: "port 0", src: gw, dst: netip.MustParseAddrPort("10.152.152.11:0")},
		{name: "to itself", src: netip.MustParseAddrPort("10.152.152.11:0"), dst: netip.MustParseAddrPort("10.152.152.11:80")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := st.DialTCP(context.Background(), tc.src, tc.dst); !errors.Is(err, netstack.ErrDialAddress) {
				t.Errorf("DialTCP(%v, %v) = %v, want ErrDialAddress", tc.src, tc.dst, err)
			}
		})
	}
	st.Close()
	if _, err := st.DialTCP(context.Background(), gw, netip.MustParseAddrPort("10.152.152.11:80")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("DialTCP after Close = %v, want net.ErrClosed", err)
	}
}
