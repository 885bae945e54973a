package torgate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/torgate/torgate/internal/ctlport"
	"github.com/torgate/torgate/internal/onion"
	"github.com/torgate/torgate/internal/socksport"
	"github.com/torgate/torgate/internal/svcmux"
	"github.com/torgate/torgate/internal/torctl"
)

// services are the workstation services (docs/workstations.md): the
// filtered control port and the SOCKS ports, served inside the stack on
// the gateway's own addresses, and the mux that hands them their flows.
type services struct {
	ctl   *ctlport.Server   // nil when off
	socks *socksport.Server // nil when off
	onion *onion.Server     // nil without Config.Onions
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
		if r.tor.tor != nil {
			// The workstation's own Tor instance answers: its circuits
			// are there.
			cfg.Tor = func(who netip.Addr) ctlport.Tor { return r.tor.pick(who).tor }
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
	if s.onion != nil {
		cs = append(cs, s.onion.Metrics()...)
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
	if s.onion != nil {
		s.onion.Close()
	}
}

// onConnect is torctl's OnConnect: every new control connection to Tor
// (a managed Tor restarted, an attached one reconnected) gets the onion
// services again. Until buildOnion ran there are none.
//
// With several Tor instances the onion services live on instance 0 only
// (newTorSide gives only it this hook): an onion service is one key, and
// publishing it from two Tors would make them race for its descriptor.
// Its connections are dialled from torgate's stack to the workstation,
// whichever instance the workstation's own outgoing traffic uses; while
// instance 0 is down the services are unreachable, and come back with it.
func (r *Router) onConnect(ctx context.Context, c *torctl.Conn) error {
	if o := r.svc.onion; o != nil {
		return o.OnConnect(ctx, c)
	}
	return nil
}

// buildOnion builds the onion services hosted on workstations: each
// target must be a workstation on one of the gateway's networks, and is
// dialled from the stack, from the gateway's own address on that network.
func (r *Router) buildOnion(u *cleanup) error {
	if len(r.cfg.Onions) == 0 {
		return nil
	}
	if r.tor.tor == nil {
		return errors.New("config: Onions need Tor's control port (a managed Tor or AttachedTor), not a plain SOCKS upstream")
	}
	entries := make([]onion.Entry, 0, len(r.cfg.Onions))
	for _, o := range r.cfg.Onions {
		t := netip.AddrPortFrom(o.Target.Addr().Unmap(), o.Target.Port())
		if _, err := r.onionSource(t.Addr()); err != nil {
			return fmt.Errorf("config: onion %s: %w", o, err)
		}
		entries = append(entries, onion.Entry{Port: o.Port, Target: t})
	}
	srv, err := onion.New(onion.Config{
		Entries:  entries,
		StateDir: r.cfg.StateDir,
		TorUser:  r.onionTorUser(),
		Dial: func(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
			src, err := r.onionSource(target.Addr())
			if err != nil {
				return nil, err
			}
			return r.stack.DialTCP(ctx, netip.AddrPortFrom(src, 0), target)
		},
		Logger: r.log.With("component", "onion"),
	})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		srv.Close()
		return err
	}
	r.svc.onion = srv
	u.push(func() { srv.Close() })
	for _, s := range srv.Services() {
		r.log.Info("onion service", "address", s.Address, "ports", fmt.Sprint(s.Ports))
	}
	return nil
}

// onionSource is the gateway's own address that a connection to a
// workstation at target leaves from: on a LAN the gateway's address on
// the LAN that holds target; on a TUN the service address of target's
// family. A target on none of the gateway's networks, or the gateway
// itself, is an error.
func (r *Router) onionSource(target netip.Addr) (netip.Addr, error) {
	if r.serviceAddr(target) {
		return netip.Addr{}, fmt.Errorf("%s is the gateway, not a workstation", target)
	}
	if r.lan != nil {
		for _, p := range r.lan.Prefixes() {
			if !p.Contains(target) {
				continue
			}
			for _, a := range r.lan.Addrs() {
				if p.Contains(a) {
					return a, nil
				}
			}
		}
		return netip.Addr{}, fmt.Errorf("%s is on none of the LANs %v", target, r.lan.Prefixes())
	}
	for _, a := range r.cfg.ServiceAddrs {
		if a.Is4() == target.Is4() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no gateway address of %s's family to dial it from (Config.ServiceAddrs)", target)
}

// onionTorUser is the account that must reach the onion sockets: the
// managed Tor's, or for an attached Tor, run by root, Debian's tor user
// if there is one (the system tor runs as it).
func (r *Router) onionTorUser() string {
	if r.tor.mode == ModeManaged {
		return r.tor.tor.User()
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("debian-tor"); err == nil {
			return "debian-tor"
		}
	}
	return ""
}

// OnionService is one onion service hosted on a workstation.
type OnionService struct {
	// Address is its .onion name.
	Address string
	// Ports are its virtual ports.
	Ports []uint16
	// Live is true while Tor serves it (it accepted the service on the
	// current control connection).
	Live bool
}

// OnionServices returns the onion services and whether each is live.
func (r *Router) OnionServices() []OnionService {
	if r.svc.onion == nil {
		return nil
	}
	var out []OnionService
	for _, s := range r.svc.onion.Services() {
		out = append(out, OnionService{Address: s.Address, Ports: s.Ports, Live: s.Live})
	}
	return out
}
