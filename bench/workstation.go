package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/torgate/torgate/netstack"
)

// Workstation is a lean simulated host: one gVisor stack whose link
// endpoint moves packets through a Link straight into the router's TUN
// queue (one copy) and takes the router's packets synchronously (one copy
// into a pooled gVisor buffer). Unlike wireguard's tun/netstack it has no
// channel hand-off or per-packet allocation of its own, so what it costs is
// gVisor's own TCP work.
type Workstation struct {
	// Addr is the workstation's address.
	Addr  netip.Addr
	link  *Link
	stack *stack.Stack
	ep    *wsEndpoint
}

// NewWorkstation builds a workstation with address addr behind a new Link
// of the given MTU. Pass Link() to the router as its Device. Close the
// workstation when done (closing the router closes the link).
func NewWorkstation(addr netip.Addr, mtu int) (*Workstation, error) {
	w := &Workstation{Addr: addr}
	w.ep = &wsEndpoint{mtu: uint32(mtu)}
	w.link = NewLink(mtu, w.ep.inject)
	w.ep.link = w.link
	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	w.stack = st
	// The workstation side gets the options a Linux client has on: SACK
	// (Linux default) and receive-buffer auto-tuning.
	sack := tcpip.TCPSACKEnabled(true)
	st.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	st.SetTransportProtocolOption(tcp.ProtocolNumber, &mod)
	// The workstation closes first in the short-flow benchmark, so its
	// ports sit in TIME_WAIT; gVisor's 60 s would exhaust them at
	// thousands of flows per second (a Linux client reuses them instead,
	// tcp_tw_reuse).
	tw := tcpip.TCPTimeWaitTimeoutOption(time.Second)
	st.SetTransportProtocolOption(tcp.ProtocolNumber, &tw)
	// The endpoint is its own queueing discipline: gVisor's default one
	// allocates a list per packet, which would show in the benchmarks'
	// allocation counts as if it were the router's. The router relies on
	// the same gVisor behaviour; netstack/gvisor.go (G3) states it and
	// TestGVisorQDiscInForce holds gVisor to it.
	if err := st.CreateNICWithOptions(1, w.ep, stack.NICOptions{QDisc: w.ep}); err != nil {
		return nil, fmt.Errorf("bench: workstation nic: %v", err)
	}
	proto := ipv4.ProtocolNumber
	if addr.Is6() {
		proto = ipv6.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix(),
	}
	if err := st.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		return nil, fmt.Errorf("bench: workstation address: %v", err)
	}
	st.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	return w, nil
}

// Link returns the router's side of the workstation's TUN.
func (w *Workstation) Link() *Link { return w.link }

// Dial opens a TCP connection from the workstation to dst, through the
// router. The connection implements CloseWrite.
func (w *Workstation) Dial(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, error) {
	proto := ipv4.ProtocolNumber
	if dst.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return gonet.DialContextTCP(ctx, w.stack, tcpip.FullAddress{
		NIC:  1,
		Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()),
		Port: dst.Port(),
	}, proto)
}

// Listen accepts TCP connections to the workstation's address on port:
// a service on the workstation that the router dials (an onion service's
// target).
func (w *Workstation) Listen(port uint16) (*gonet.TCPListener, error) {
	proto := ipv4.ProtocolNumber
	if w.Addr.Is6() {
		proto = ipv6.ProtocolNumber
	}
	return gonet.ListenTCP(w.stack, tcpip.FullAddress{
		NIC:  1,
		Addr: tcpip.AddrFromSlice(w.Addr.AsSlice()),
		Port: port,
	}, proto)
}

// DialUDP opens a connected UDP socket from the workstation to dst.
func (w *Workstation) DialUDP(dst netip.AddrPort) (net.Conn, error) {
	proto := ipv4.ProtocolNumber
	if dst.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return gonet.DialUDP(w.stack, nil, &tcpip.FullAddress{
		NIC:  1,
		Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()),
		Port: dst.Port(),
	}, proto)
}

// Close shuts the workstation's stack and link down.
func (w *Workstation) Close() {
	w.link.Close()
	w.stack.Close()
	w.stack.Wait()
}

// wsEndpoint is the workstation's link endpoint: a point-to-point link with
// no link header and no offloads, like a TUN seen from the kernel side.
type wsEndpoint struct {
	mtu  uint32
	link *Link
	// dispatcher is set by Attach and read on the router's write path.
	dispatcher atomic.Pointer[stack.NetworkDispatcher]
}

var (
	_ stack.LinkEndpoint       = (*wsEndpoint)(nil)
	_ stack.QueueingDiscipline = (*wsEndpoint)(nil)
)

// inject delivers one packet the router wrote. It runs on the router's
// write path.
func (e *wsEndpoint) inject(pkt []byte) {
	d := e.dispatcher.Load()
	if d == nil || *d == nil || len(pkt) == 0 {
		return
	}
	proto := header.IPv4ProtocolNumber
	if pkt[0]>>4 == 6 {
		proto = header.IPv6ProtocolNumber
	}
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	(*d).DeliverNetworkPacket(proto, pkb)
	pkb.DecRef()
}

// WritePacket implements stack.QueueingDiscipline: it copies the packet
// into the link's queue towards the router.
func (e *wsEndpoint) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	buf, idx, ok := e.link.Get()
	if !ok {
		e.link.Drop()
		return &tcpip.ErrNoBufferSpace{}
	}
	size := pkt.Size()
	if size > len(buf) {
		e.link.free <- idx
		e.link.Drop()
		return &tcpip.ErrMessageTooLong{}
	}
	netstack.CopyPacket(buf[:size], pkt)
	e.link.Put(idx, size)
	return nil
}

// WritePackets implements stack.LinkWriter.
func (e *wsEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if err := e.WritePacket(pkt); err != nil {
			if n == 0 {
				return 0, err
			}
			break
		}
		n++
	}
	return n, nil
}

func (e *wsEndpoint) MTU() uint32                                  { return e.mtu }
func (e *wsEndpoint) SetMTU(mtu uint32)                            { e.mtu = mtu }
func (e *wsEndpoint) MaxHeaderLength() uint16                      { return 0 }
func (e *wsEndpoint) LinkAddress() tcpip.LinkAddress               { return "" }
func (e *wsEndpoint) SetLinkAddress(tcpip.LinkAddress)             {}
func (e *wsEndpoint) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (e *wsEndpoint) Attach(d stack.NetworkDispatcher)             { e.dispatcher.Store(&d) }
func (e *wsEndpoint) IsAttached() bool                             { p := e.dispatcher.Load(); return p != nil && *p != nil }
func (e *wsEndpoint) Wait()                                        {}
func (e *wsEndpoint) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (e *wsEndpoint) AddHeader(*stack.PacketBuffer)                {}
func (e *wsEndpoint) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (e *wsEndpoint) Close()                                       {}
func (e *wsEndpoint) SetOnCloseAction(func())                      {}
