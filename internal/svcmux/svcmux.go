// Package svcmux routes the TCP flows that workstations address to the
// gateway itself. A flow to one of the gateway's own addresses on a port
// that carries a workstation service (a SOCKS port, the filtered control
// port) goes to that service; every other flow, including one to the
// gateway on any other port, goes on to the tunnel, whose destination
// policy refuses the gateway's own addresses (a RST, counted as
// forbidden). So the services are the only things on the gateway a
// workstation reaches, and they are reached inside torgate's own network
// stack: no socket of the gateway's kernel faces the LAN.
package svcmux

import (
	"fmt"
	"net/netip"

	"github.com/torgate/torgate/internal/flow"
)

// Handler serves flows handed over by the network stack; it must Accept
// or Reject each one. tunnel.Tunnel and the services implement it.
type Handler interface {
	ServeTCP(flow.Request)
}

// Mux is a Handler that sends flows to the gateway's service ports to
// their service, and the rest to Next.
type Mux struct {
	own   func(netip.Addr) bool
	ports map[uint16]Handler
	next  Handler
}

// New returns a Mux. own reports whether an address is one of the
// gateway's own, as workstations see it (its LAN addresses, its TUN
// address); it is asked for each flow to a service port and must be cheap.
// ports maps each service port to its service (nil: none); next serves
// every other flow.
func New(own func(netip.Addr) bool, ports map[uint16]Handler, next Handler) (*Mux, error) {
	if next == nil {
		return nil, fmt.Errorf("svcmux: no handler for ordinary flows")
	}
	if own == nil && len(ports) > 0 {
		return nil, fmt.Errorf("svcmux: service ports but no own addresses")
	}
	m := &Mux{own: own, ports: make(map[uint16]Handler, len(ports)), next: next}
	for p, h := range ports {
		if p == 0 || h == nil {
			return nil, fmt.Errorf("svcmux: port %d has no service", p)
		}
		m.ports[p] = h
	}
	return m, nil
}

// ServeTCP implements Handler.
func (m *Mux) ServeTCP(f flow.Request) {
	dst := f.Dst()
	if h, ok := m.ports[dst.Port()]; ok && m.own(dst.Addr().Unmap()) {
		h.ServeTCP(f)
		return
	}
	m.next.ServeTCP(f)
}
