// Package flow defines what the network stack (netstack) hands to the
// parts that serve the workstations (tunnel for ordinary flows, dns for
// port 53): one TCP connection attempt (Request), and the way back for
// the answer to one UDP datagram (Reply). Neither side imports the other.
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

// Reply sends the answer to one datagram back the way the datagram came:
// from the address it was sent to, to its sender. It is a value that
// allocates nothing to make, copy or keep, so that a datagram dropped
// unanswered (a flood) costs the network stack no allocation; a func
// closing over the addresses would cost one per datagram.
type Reply struct {
	link     Link
	from, to netip.AddrPort
}

// Link sends a UDP datagram from one address to another: the network
// stack's side of a Reply.
type Link interface {
	SendUDP(from, to netip.AddrPort, payload []byte)
}

// NewReply returns the Reply that sends from from to to over link.
func NewReply(link Link, from, to netip.AddrPort) Reply {
	return Reply{link: link, from: from, to: to}
}

// Send sends answer, which it copies: the caller may reuse it after Send
// returns. The zero Reply sends nothing.
func (r Reply) Send(answer []byte) {
	if r.link != nil {
		r.link.SendUDP(r.from, r.to, answer)
	}
}
