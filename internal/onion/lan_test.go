package onion

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/internal/lan"
	"github.com/torgate/torgate/netstack"
)

// TestThroughLAN: in LAN mode the dial goes out through internal/lan's
// Device, which first resolves the workstation with torgate's own ARP;
// the workstation (a gVisor stack with Ethernet and ARP on the far end
// of a frame pipe) answers, and its SYN-ACK, from the MAC that ARP bound,
// reaches the dialling endpoint.
func TestThroughLAN(t *testing.T) {
	gw := netip.MustParseAddr("10.152.152.10")
	gwMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	wsMAC := tcpip.LinkAddress([]byte{0x02, 0, 0, 0, 0, 0x11})
	devEnd, wsEnd := net.Pipe() // one frame per Write, read whole
	ld, err := lan.NewDevice([]lan.Link{{
		Name:   "eth1",
		MAC:    gwMAC,
		Addrs:  []netip.Prefix{netip.PrefixFrom(gw, 18)},
		Frames: devEnd,
	}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := netstack.New(netstack.Config{
		Device:   ld,
		Identify: ld.Identity,
		TCP: netstack.TCPHandlerFunc(func(r flow.Request) {
			t.Errorf("the forwarder got a flow")
			r.Reject()
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Start()
	t.Cleanup(func() { st.Close() })

	// The workstation.
	ch := channel.New(256, 1500, wsMAC)
	ws := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	t.Cleanup(func() {
		wsEnd.Close()
		ws.Close()
	})
	if err := ws.CreateNIC(1, ethernet.New(ch)); err != nil {
		t.Fatal(err)
	}
	if err := ws.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(ws1.As4()), PrefixLen: 18},
	}, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	ws.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { // workstation -> LAN
		for {
			pkt := ch.ReadContext(ctx)
			if pkt == nil {
				return
			}
			b := pkt.ToBuffer()
			frame := b.Flatten()
			b.Release()
			pkt.DecRef()
			if _, err := wsEnd.Write(frame); err != nil {
				return
			}
		}
	}()
	go func() { // LAN -> workstation
		buf := make([]byte, 2048)
		for {
			n, err := wsEnd.Read(buf)
			if err != nil {
				return
			}
			pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(buf[:n])})
			ch.InjectInbound(0, pkb)
			pkb.DecRef()
		}
	}()
	ln, err := gonet.ListenTCP(ws, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ws1.As4()), Port: 8080}, ipv4.ProtocolNumber)
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
		c.(*gonet.TCPConn).CloseWrite()
	}()

	s := newServer(t, Config{
		Dial: func(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
			return st.DialTCP(ctx, netip.AddrPortFrom(gw, 0), target)
		},
		Entries: []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 8080)}},
	})
	c := connectAsTor(t, s, 0, 0)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("over the LAN")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != string(msg) {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if a := (<-peers).(*net.TCPAddr).AddrPort().Addr().Unmap(); a != gw {
		t.Errorf("the workstation saw %v, want the gateway's %v", a, gw)
	}
	if id, ok := ld.Identity(ws1); !ok || id == ws1 {
		t.Errorf("the workstation is not bound to its MAC by torgate's ARP: %v %v", id, ok)
	}
}
