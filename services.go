package torgate

import (
	"net/netip"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/torgate/torgate/internal/ctlport"
	"github.com/torgate/torgate/internal/socksport"
	"github.com/torgate/torgate/internal/svcmux"
)

// services are the workstation services (docs/workstations.md): the
// filtered control port and the SOCKS ports, served inside the stack on
// the gateway's own addresses, and the mux that hands them their flows.
type services struct {
	ctl   *ctlport.Server   // nil when off
	socks *socksport.Server // nil when off
	mux   *svcmux.Mux       // the stack's TCP handler: services, else the tunnel
}

// serviceAddr reports whether a is an address on which the gateway serves
// the workstation services: one of its LAN addresses, or on a TUN one of
// Config.ServiceAddrs.
func (r *Router) serviceAddr(a netip.Addr) bool {
	if r.lan != nil {
		return r.lan.IsOwn(a)
	}
	return slices.Contains(r.cfg.ServiceAddrs, a)
}

// hasServiceAddrs reports whether there is any address to serve on.
func (r *Router) hasServiceAddrs() bool {
	return r.lan != nil || len(r.cfg.ServiceAddrs) > 0
}

// buildServices builds the workstation services and the mux in front of
// the tunnel.
func (r *Router) buildServices(u *cleanup) error {
	ports := map[uint16]svcmux.Handler{}
	if r.hasServiceAddrs() && len(r.cfg.SOCKSPorts) > 0 {
		sp, err := socksport.New(socksport.Config{
			Tunnel:          r.tunnel,
			LogDestinations: r.cfg.LogDestinations,
			Logger:          r.log.With("component", "socksport"),
		})
		if err != nil {
			return err
		}
		r.svc.socks = sp
		u.push(func() { sp.Close() })
		for _, p := range r.cfg.SOCKSPorts {
			ports[p] = sp
		}
	}
	if r.hasServiceAddrs() && !r.cfg.NoControlPort {
		cfg := ctlport.Config{
			NewIdentity: func(who netip.Addr) error {
				r.iso.NewIdentity(who)
				r.tor.newnym.WithLabelValues("source").Inc()
				return nil
			},
			SOCKSListeners: r.socksListeners,
			Ready:          r.gate.Err,
			Proven:         r.proven,
			Logger:         r.log.With("component", "ctlport"),
		}
		if t := r.tor.tor; t != nil {
			cfg.Tor = t // a nil *torctl.Tor must not become a non-nil interface
		}
		srv, err := ctlport.New(cfg)
		if err != nil {
			return err
		}
		r.svc.ctl = srv
		u.push(func() { srv.Close() })
		ports[r.cfg.ControlPort] = srv
	}
	mux, err := svcmux.New(r.serviceAddr, ports, r.tunnel)
	if err != nil {
		return err
	}
	r.svc.mux = mux
	if !r.hasServiceAddrs() && (len(r.cfg.SOCKSPorts) > 0 || !r.cfg.NoControlPort) {
		r.log.Info("workstation services off: no address to serve them on (Config.ServiceAddrs)")
	}
	return nil
}

// socksListeners is GETINFO net/listeners/socks for a workstation that
// reached the control port on local: Tor Browser's port on that address
// if it is served, else the first SOCKS port.
func (r *Router) socksListeners(local netip.Addr) []netip.AddrPort {
	ports := r.cfg.SOCKSPorts
	if len(ports) == 0 {
		return nil
	}
	p := ports[0]
	if slices.Contains(ports, 9150) {
		p = 9150
	}
	return []netip.AddrPort{netip.AddrPortFrom(local, p)}
}

// metrics returns the services' collectors.
func (s *services) metrics() []prometheus.Collector {
	var cs []prometheus.Collector
	if s.ctl != nil {
		cs = append(cs, s.ctl.Metrics()...)
	}
	if s.socks != nil {
		cs = append(cs, s.socks.Metrics()...)
	}
	return cs
}

// close ends the services' connections: before the tunnel and the stack
// close, so that their goroutines end with them.
func (s *services) close() {
	if s.ctl != nil {
		s.ctl.Close()
	}
	if s.socks != nil {
		s.socks.Close()
	}
}
