package torgate

import (
	"github.com/torgate/torgate/dns"
	"github.com/torgate/torgate/internal/lan"
	"github.com/torgate/torgate/internal/torctl"
	"github.com/torgate/torgate/netstack"
	"github.com/torgate/torgate/tunnel"
)

// The parts of a Router, for the tests of this package only: an embedder
// sees Config and the Router's methods, nothing of the components.

// Stack returns the network stack, for its counters.
func (r *Router) Stack() *netstack.Stack { return r.stack }

// LAN returns the LAN link layer, nil unless Config.LAN is set.
func (r *Router) LAN() *lan.Device { return r.lan }

// Tunnel returns the flow layer, for its isolator and EndAll.
func (r *Router) Tunnel() *tunnel.Tunnel { return r.tunnel }

// DNS returns the DNS server.
func (r *Router) DNS() *dns.Server { return r.dns }

// Tor returns the managed or attached Tor; nil with plain SOCKS.
func (r *Router) Tor() *torctl.Tor { return r.tor.tor }

// TorOf is Tor instance k's torctl.Tor.
func (r *Router) TorOf(k int) *torctl.Tor { return r.tor.inst[k].tor }
