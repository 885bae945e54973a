// Package flow defines the hand-off of one TCP connection attempt from
// the network stack that holds it (netstack) to the part that serves it
// (tunnel for ordinary flows, dns for TCP/53). It is an interface only,
// so that neither side imports the other.
package flow

import (
	"net"
	"net/netip"
)

// Request is one TCP connection attempt, held at the SYN: the workstation
// has not been answered yet. Exactly one of Accept and Reject decides it;
// whoever receives a Request must call one of them.
type Request interface {
	// Who is the workstation that asked: the key of its shares, circuits
	// and names. On a LAN it is the machine, not the packet's address.
	Who() netip.Addr
	// Src is the workstation's address and port as the packet had them.
	Src() netip.AddrPort
	// Dst is the destination the workstation asked for.
	Dst() netip.AddrPort
	// Accept completes the handshake and returns the connection. A later
	// Accept or Reject fails or does nothing.
	Accept() (net.Conn, error)
	// Reject answers with a RST: the client sees connection refused.
	Reject()
}
