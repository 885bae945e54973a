package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Dialing out, towards a workstation (onion services hosted on the LAN).
//
// The stack has no address of its own: promiscuous mode and spoofing
// (build) let it terminate and answer for any address. A dialled
// endpoint binds src, which spoofing accepts (gVisor's
// nic.CheckLocalAddress), and its segments leave like every other: the
// link endpoint, the writeLoop, the TUN or internal/lan's Device, which
// sends a frame only to the MAC torgate's own ARP/ND bound to dst. The
// SYN-ACK coming back is classified as TCP like any segment and delivered
// to gVisor, whose demuxer finds the connecting endpoint by its 4-tuple
// before the default handler (handleSYN, the forwarder) would see it:
// only segments no endpoint owns reach the forwarder. Nothing here uses a
// kernel socket, so the gateway's kernel never sends a packet to the LAN.

// Dial errors.
var (
	// ErrDialAddress: src or dst is not a usable unicast address, or they
	// are not of one family. Per call.
	ErrDialAddress = errors.New("netstack: dial: bad address")
	// ErrDialRefused: the workstation answered the SYN with a RST
	// (nothing listens there). It matches syscall.ECONNREFUSED. Per call.
	ErrDialRefused = &dialError{"connection refused", syscall.ECONNREFUSED}
	// ErrDialUnreachable: the workstation did not answer the SYN (gVisor
	// gave up, or the stack closed). It matches syscall.ETIMEDOUT. Per
	// call.
	ErrDialUnreachable = &dialError{"no answer", syscall.ETIMEDOUT}
)

type dialError struct {
	msg   string
	errno syscall.Errno
}

func (e *dialError) Error() string        { return "netstack: dial: " + e.msg }
func (e *dialError) Is(target error) bool { return target == e.errno }

// DialTCP opens a TCP connection from src (the gateway's own address on
// the workstations' network; port 0 picks a free one) to dst, from the
// gVisor stack. It returns a *Conn (CloseWrite for half-close), or an
// error wrapping ErrDialAddress, ErrDialRefused, ErrDialUnreachable or
// ctx's. The caller decides which destinations may be dialled: the stack
// dials whatever it is given.
func (s *Stack) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	switch {
	case !sa.IsValid() || !da.IsValid() || sa.Is4() != da.Is4(),
		martian(sa) || martian(da) || sa == da,
		dst.Port() == 0:
		return nil, fmt.Errorf("%w: %v -> %v", ErrDialAddress, src, dst)
	}
	if s.ctx.Err() != nil {
		return nil, net.ErrClosed
	}
	proto := ipv4.ProtocolNumber
	if da.Is6() {
		proto = ipv6.ProtocolNumber
	}
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("netstack: dial: new endpoint: %s", terr)
	}
	entry, ready := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(sa.AsSlice()), Port: src.Port()}); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("netstack: dial: bind %v: %s", src, terr)
	}
	terr = ep.Connect(tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(da.AsSlice()), Port: dst.Port()})
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ready:
			terr = ep.LastError()
		case <-ctx.Done():
			ep.Abort()
			return nil, fmt.Errorf("netstack: dial: %w", ctx.Err())
		case <-s.ctx.Done():
			ep.Abort()
			return nil, net.ErrClosed
		}
	}
	if terr != nil {
		ep.Close()
		switch terr.(type) {
		case *tcpip.ErrConnectionRefused, *tcpip.ErrConnectionReset:
			return nil, ErrDialRefused
		case *tcpip.ErrTimeout, *tcpip.ErrAborted, *tcpip.ErrHostUnreachable, *tcpip.ErrNetworkUnreachable, *tcpip.ErrNoNet:
			return nil, ErrDialUnreachable
		}
		return nil, fmt.Errorf("netstack: dial: %s", terr)
	}
	// The same keepalive as accepted flows: a workstation that vanished
	// leaves the caller's caps within 90 s.
	setKeepalive(ep)
	c := newConn(&wq, ep)
	local := src
	if la, err := ep.GetLocalAddress(); err == nil {
		local = netip.AddrPortFrom(sa, la.Port)
	}
	remote := netip.AddrPortFrom(da, dst.Port())
	c.poke = func() { s.pokeAfterReset(local, remote) }
	return c, nil
}
