package lan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/torgate/torgate/internal/vnet"
)

// Config configures Open.
type Config struct {
	// Interfaces are the LAN interfaces (eth1, ...). Each must carry the
	// gateway's address(es) (at least one IPv4 or non-link-local IPv6)
	// and must not be a bridge or bond port nor carry another macvlan.
	Interfaces []string
	// Logger; nil discards.
	Logger *slog.Logger
}

// sysClassNet lists the network namespace's links (the one sysfs was
// mounted in).
const sysClassNet = "/sys/class/net"

// readAt reads a small file below dir.
func readAt(dir *os.File, name string) ([]byte, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 4096))
}

// tapQueueLen sizes the macvtap's receive ring (frames waiting for
// torgate's read): the kernel's own default for a tap (TUN_READQ_SIZE).
const tapQueueLen = 500

// ErrNoInterface means the interface named exists neither in the
// gateway's network namespace nor in its LAN namespace. Fatal for Open.
var ErrNoInterface = errors.New("no such interface")

// ErrBusy means another torgate serves the interface in this network
// namespace. Fatal for Open and Down.
var ErrBusy = errors.New("another torgate serves this LAN")

func checkName(iface string) error {
	if iface == "" || len(iface) >= unix.IFNAMSIZ || strings.ContainsAny(iface, "/ \t\n") {
		return fmt.Errorf("lan: %q is not an interface name", iface)
	}
	return nil
}

// lock takes the per-interface, per-network-namespace lock: an abstract
// unix socket, released by the kernel when the process dies.
func lock(iface string) (release func() error, err error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lan: lock %s: %w", iface, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@torgate-lan-" + iface}); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("lan: %s: %w in this network namespace (stop it first)", iface, ErrBusy)
		}
		return nil, fmt.Errorf("lan: lock %s: %w", iface, err)
	}
	return func() error { return unix.Close(fd) }, nil
}

// aliasPrefix marks the interface alias (IFLA_IFALIAS) in which torgate
// keeps the gateway's addresses while the interface carries none: the
// record travels with the interface between namespaces and survives
// torgate, so a restart and "torgate lan down" find them.
const aliasPrefix = "torgate-lan"

// maxAlias is the kernel's bound on an interface alias (IFALIASZ - 1).
const maxAlias = 255

func encodeAlias(addrs []netip.Prefix) (string, error) {
	s := aliasPrefix
	for _, a := range addrs {
		s += " " + a.String()
	}
	if len(s) > maxAlias {
		return "", fmt.Errorf("lan: %d addresses do not fit the interface alias (255 bytes); give the LAN fewer addresses", len(addrs))
	}
	return s, nil
}

// decodeAlias returns the addresses of a torgate alias; ok is false for
// any other alias.
func decodeAlias(s string) (addrs []netip.Prefix, ok bool) {
	f := strings.Fields(s)
	if len(f) == 0 || f[0] != aliasPrefix {
		return nil, false
	}
	for _, w := range f[1:] {
		p, err := netip.ParsePrefix(w)
		if err != nil {
			return nil, false
		}
		addrs = append(addrs, p)
	}
	return addrs, true
}

// plan is one interface checked and ready to be set up.
type plan struct {
	iface   string
	ns      *lanNS
	created bool            // ns was made by this run
	host    *netlink.Handle // the gateway's own namespace
	hostNS  *os.File        // the gateway's own namespace, to move back into
	link0   netlink.Link    // the LAN interface
	inNS    bool            // link0 is in ns already (a restart)
	tapName string
	tap     *netlink.Macvtap // torgate's macvtap in ns, nil to create
	oldTap  *netlink.Macvtap // a macvtap an earlier version left beside the interface
	addrs   []netip.Prefix
	unlock  func() error
}

// inspect checks iface without changing anything; needAddr requires a
// gateway address (on it, or recorded in its alias by an earlier run).
func inspect(host *netlink.Handle, ns *lanNS, iface string, needAddr bool) (*plan, error) {
	if err := checkName(iface); err != nil {
		return nil, err
	}
	p := &plan{iface: iface, ns: ns, host: host, tapName: TapName(iface)}
	h := host
	l, err := ns.linkByName(iface)
	if err == nil {
		p.inNS, h = true, ns.h
	} else if l, err = host.LinkByName(iface); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("lan: %w %s (ip link lists the interfaces)", ErrNoInterface, iface)
		}
		return nil, fmt.Errorf("lan: interface %s: %w", iface, err)
	}
	a := l.Attrs()
	if a.MasterIndex != 0 {
		return nil, fmt.Errorf("lan: interface %s is a port of another interface (bridge or bond, index %d); give torgate the interface itself, detached (ip link set %s nomaster)", iface, a.MasterIndex, iface)
	}
	switch l.Type() {
	case "macvtap", "macvlan":
		return nil, fmt.Errorf("lan: interface %s is a %s; name the physical LAN interface", iface, l.Type())
	}
	if len(a.HardwareAddr) != 6 {
		return nil, fmt.Errorf("lan: interface %s is not Ethernet", iface)
	}
	p.link0 = l
	all, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("lan: list links: %w", err)
	}
	for _, o := range all {
		switch o.Type() {
		case "macvlan", "macvtap", "ipvlan", "ipvtap":
			if o.Attrs().ParentIndex == a.Index && o.Attrs().Name != p.tapName {
				return nil, fmt.Errorf("lan: interface %s already carries %s %s; torgate needs it alone (ip link del %s)", iface, o.Type(), o.Attrs().Name, o.Attrs().Name)
			}
		}
	}
	if recorded, ok := decodeAlias(a.Alias); ok {
		p.addrs = recorded
	} else {
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("lan: addresses of %s: %w", iface, err)
		}
		for _, ad := range addrs {
			if ip, ok := netip.AddrFromSlice(ad.IP); ok {
				ones, _ := ad.Mask.Size()
				p.addrs = append(p.addrs, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}
	}
	global := false
	for _, pr := range p.addrs {
		if pr.Addr().Is4() || !pr.Addr().IsLinkLocalUnicast() {
			global = true
		}
	}
	if !global && needAddr {
		return nil, fmt.Errorf("lan: interface %s has no gateway address for workstations; add one first, e.g. ip addr add 10.152.152.10/18 dev %s", iface, iface)
	}
	if tl, err := host.LinkByName(p.tapName); err == nil {
		// The design before the LAN namespace left its macvtap here:
		// takeover removes it. Anything else by that name would sit
		// behind the guard rule for it.
		mv, ok := tl.(*netlink.Macvtap)
		if !ok || mv.Mode != netlink.MACVLAN_MODE_PASSTHRU || p.inNS || mv.ParentIndex != a.Index {
			return nil, fmt.Errorf("lan: a link named %s exists but is not torgate's passthru macvtap on %s; remove it (ip link del %s)", p.tapName, iface, p.tapName)
		}
		p.oldTap = mv
	}
	if tl, err := ns.linkByName(p.tapName); err == nil {
		mv, ok := tl.(*netlink.Macvtap)
		if !ok || mv.Mode != netlink.MACVLAN_MODE_PASSTHRU {
			return nil, fmt.Errorf("lan: a link named %s in namespace %s is not torgate's passthru macvtap; remove it (ip -n %s link del %s)", p.tapName, ns.name, ns.name, p.tapName)
		}
		p.tap = mv
	}
	return p, nil
}

// Open makes torgate the gateway of the interfaces in cfg: it checks all
// of them first, then for each installs the guard rules, takes the
// interface away from the gateway's kernel into its LAN namespace (see
// netns_linux.go), puts a passthru macvtap on it there (or adopts
// torgate's from a previous run), opens it and returns a Device serving
// them all. A failure leaves nothing behind that this call added. Close
// keeps the namespace, the macvtap and the guards; Down removes them.
func Open(cfg Config) (*Device, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("lan: no interfaces")
	}
	seen := map[string]bool{}
	var plans []*plan
	var unlocks []func() error
	fail := func(err error) (*Device, error) {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
		return nil, err
	}
	// Ready and Reattach run later on any thread: netlink handles whose
	// sockets live in the right namespaces, and the namespaces held open,
	// keep them looking at the right ones.
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("lan: netlink: %w", err)
	}
	unlocks = append(unlocks, func() error { h.Close(); return nil })
	hostNS, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return fail(fmt.Errorf("lan: own network namespace: %w", err))
	}
	unlocks = append(unlocks, hostNS.Close)
	for _, iface := range cfg.Interfaces {
		if seen[iface] {
			return fail(fmt.Errorf("lan: interface %s given twice", iface))
		}
		seen[iface] = true
		if err := checkName(iface); err != nil {
			return fail(err)
		}
		u, err := lock(iface)
		if err != nil {
			return fail(err)
		}
		unlocks = append(unlocks, u)
		ns, created, err := openNS(iface)
		if err != nil {
			return fail(err)
		}
		unlocks = append(unlocks, func() error { ns.close(); return nil })
		p, err := inspect(h, ns, iface, true)
		if err != nil {
			if created {
				unpinNS(filepath.Join(netnsDir, ns.name))
			}
			return fail(err)
		}
		p.created, p.hostNS, p.unlock = created, hostNS, u
		plans = append(plans, p)
	}

	// Changes from here on; undo is the reverse of what was done.
	var undo []func()
	var links []Link
	rollback := func(err error) (*Device, error) {
		for _, l := range links {
			l.Frames.Close()
		}
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return fail(err)
	}
	for _, p := range plans {
		added, err := ensureGuards([]string{p.iface, p.tapName})
		if len(added) > 0 {
			undo = append(undo, func() {
				for _, r := range added {
					netlink.RuleDel(r)
				}
				for _, fam := range families {
					restoreLocal(fam)
				}
			})
		}
		if err != nil {
			return rollback(fmt.Errorf("lan: %s: %w", p.iface, err))
		}
		if p.created {
			undo = append(undo, func() { unpinNS(filepath.Join(netnsDir, p.ns.name)) })
		}
		if !p.inNS {
			if err := p.takeover(); err != nil {
				return rollback(err)
			}
			undo = append(undo, func() { p.giveBack() })
		}
		if err := p.blackholeLAN(); err != nil {
			return rollback(err)
		}
		f, vnetOK, tapIndex, created, err := p.attach()
		if created != nil {
			undo = append(undo, func() { p.ns.h.LinkDel(created) })
		}
		if err != nil {
			return rollback(err)
		}
		links = append(links, p.link(f, vnetOK, tapIndex))
		log.Info("lan interface taken from the kernel", "interface", p.iface, "namespace", p.ns.name, "moved", p.inNS, "vnet_header", vnetOK)
	}
	d, err := NewDevice(links, log)
	if err != nil {
		links = nil // NewDevice closed them
		return rollback(err)
	}
	if err := d.CheckAddresses(); err != nil {
		d.Close()
		links = nil
		return rollback(err)
	}
	d.onClose = unlocks
	return d, nil
}

// takeover takes p's interface away from the gateway's kernel: its
// addresses are recorded in its alias, then it moves into the LAN
// namespace (which removes them and leaves it with IPv6 off and nothing
// to answer from). An interface that cannot leave its namespace (a
// bridge) stays, stripped instead: no address, IPv6 and ARP off; its
// macvtap still moves, so that unicast frames, the ones the kernel could
// answer or forward, never reach the gateway's stack (see Limits in the
// package doc for what still does).
func (p *plan) takeover() error {
	alias, err := encodeAlias(p.addrs)
	if err != nil {
		return err
	}
	if p.oldTap != nil {
		if err := p.host.LinkDel(p.oldTap); err != nil {
			return fmt.Errorf("lan: remove the old macvtap %s: %w", p.tapName, err)
		}
	}
	if err := p.host.LinkSetAlias(p.link0, alias); err != nil {
		return fmt.Errorf("lan: record the addresses of %s: %w", p.iface, err)
	}
	if err := p.host.LinkSetNsFd(p.link0, int(p.ns.fd.Fd())); err == nil {
		l, err := p.ns.h.LinkByName(p.iface)
		if err != nil {
			return fmt.Errorf("lan: %s after the move: %w", p.iface, err)
		}
		p.link0, p.inNS = l, true
	} else if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("lan: move %s into namespace %s: %w", p.iface, p.ns.name, err)
	} else {
		// NETIF_F_NETNS_LOCAL (a bridge): strip it where it is.
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+p.iface+"/disable_ipv6", []byte("1"), 0); err != nil {
			return fmt.Errorf("lan: disable IPv6 on %s: %w", p.iface, err)
		}
		addrs, err := p.host.AddrList(p.link0, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("lan: addresses of %s: %w", p.iface, err)
		}
		for _, a := range addrs {
			if err := p.host.AddrDel(p.link0, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("lan: remove %s from %s: %w", a.IPNet, p.iface, err)
			}
		}
	}
	h := p.handle()
	if err := h.LinkSetARPOff(p.link0); err != nil {
		return fmt.Errorf("lan: arp off on %s: %w", p.iface, err)
	}
	if err := h.LinkSetUp(p.link0); err != nil {
		return fmt.Errorf("lan: set %s up: %w", p.iface, err)
	}
	return nil
}

// handle is the netlink handle of the namespace link0 is in.
func (p *plan) handle() *netlink.Handle {
	if p.inNS {
		return p.ns.h
	}
	return p.host
}

// giveBack returns p's interface to the gateway's kernel with its
// addresses, as the operator had it before torgate: the undo of takeover,
// and the heart of Down.
func (p *plan) giveBack() error {
	var errs []error
	if p.tap != nil {
		errs = append(errs, p.ns.h.LinkDel(p.tap))
	} else if tl, err := p.ns.h.LinkByName(p.tapName); err == nil {
		if _, ok := tl.(*netlink.Macvtap); ok {
			errs = append(errs, p.ns.h.LinkDel(tl))
		}
	}
	if p.inNS {
		if err := p.ns.h.LinkSetNsFd(p.link0, int(p.hostNS.Fd())); err != nil {
			return fmt.Errorf("lan: move %s back: %w", p.iface, err)
		}
		l, err := p.host.LinkByName(p.iface)
		if err != nil {
			return fmt.Errorf("lan: %s after the move back: %w", p.iface, err)
		}
		p.link0, p.inNS = l, false
	}
	errs = append(errs, p.removeBlackholes())
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+p.iface+"/disable_ipv6", []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	errs = append(errs, p.host.LinkSetARPOn(p.link0))
	for _, a := range p.addrs {
		ad := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
		if a.Addr().Is6() {
			ad.Flags = unix.IFA_F_NODAD // the address was the gateway's a moment ago
		}
		if err := p.host.AddrAdd(p.link0, ad); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("lan: restore %s on %s: %w", a, p.iface, err))
		}
	}
	errs = append(errs, p.host.LinkSetAlias(p.link0, ""))
	errs = append(errs, p.host.LinkSetUp(p.link0))
	return errors.Join(errs...)
}

// routeProto marks the routes torgate owns ("proto 116" in ip route):
// iproute2's rt_protos gives the number no other name.
const routeProto = netlink.RouteProtocol(116)

// lanRoutes are the blackhole routes for p's LAN prefixes in the
// gateway's namespace (link-local excluded: the uplink has its own).
func (p *plan) lanRoutes() []*netlink.Route {
	var out []*netlink.Route
	for _, a := range p.addrs {
		if a.Addr().IsLinkLocalUnicast() {
			continue
		}
		pr := a.Masked()
		out = append(out, &netlink.Route{
			Dst:      &net.IPNet{IP: pr.Addr().AsSlice(), Mask: net.CIDRMask(pr.Bits(), pr.Addr().BitLen())},
			Type:     unix.RTN_BLACKHOLE,
			Protocol: routeProto,
			Family:   map[bool]int{true: unix.AF_INET, false: unix.AF_INET6}[pr.Addr().Is4()],
		})
	}
	return out
}

// blackholeLAN makes the gateway's namespace drop, silently, whatever it
// would route to the LAN: once the interface has left, its connected
// routes are gone, and with forwarding on a packet from the Internet to a
// workstation's address would go back out of the uplink with an ICMP
// redirect, and the gateway's own processes would send LAN-bound packets
// to its default route (the hostile suite's recipe 3, measured
// 2026-12-04). A blackhole sends no ICMP error, where unreachable or
// prohibit would. They stay when torgate stops; Down removes them.
func (p *plan) blackholeLAN() error {
	for _, r := range p.lanRoutes() {
		if err := p.host.RouteReplace(r); err != nil {
			return fmt.Errorf("lan: blackhole route %s: %w", r.Dst, err)
		}
	}
	return nil
}

// removeBlackholes deletes the routes blackholeLAN added.
func (p *plan) removeBlackholes() error {
	var errs []error
	for _, r := range p.lanRoutes() {
		if err := p.host.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("lan: remove blackhole route %s: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}

// attach creates (if needed), opens and brings up the macvtap of p in its
// LAN namespace. It returns the tap descriptor, whether it carries
// virtio-net headers (withVnet), the macvtap's ifindex there, and the
// macvtap it created, for the caller to undo.
func (p *plan) attach() (io.ReadWriteCloser, bool, int, netlink.Link, error) {
	var created netlink.Link
	tap := netlink.Link(p.tap)
	ns := p.ns
	if p.tap == nil {
		// NewLinkAttrs, not a literal: a zero TxQLen would be sent as
		// IFLA_TXQLEN 0, and the tap's receive ring is sized from it: a
		// ring of 0 drops every frame (measured 2026-12-02, kernel 6.18).
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.ParentIndex, attrs.TxQLen = p.tapName, p.link0.Attrs().Index, tapQueueLen
		mv := &netlink.Macvtap{Macvlan: netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_PASSTHRU}}
		// Created down: a down passthru macvtap drops what it is given,
		// so nothing reaches any stack until the descriptor is open.
		// Created where the interface is, then moved (a bridge stays in
		// the gateway's namespace, its macvtap does not).
		h := p.handle()
		if err := h.LinkAdd(mv); err != nil {
			// EBUSY: another receive handler (bridge, bond, team);
			// EINVAL: other macvlans on it.
			if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EINVAL) {
				return nil, false, 0, nil, fmt.Errorf("lan: interface %s already has a receive handler (a bridge, bond, macvlan or macvtap is attached); torgate needs it alone", p.iface)
			}
			return nil, false, 0, nil, fmt.Errorf("lan: create macvtap %s on %s: %w", p.tapName, p.iface, err)
		}
		if !p.inNS {
			if err := h.LinkSetNsFd(mv, int(ns.fd.Fd())); err != nil {
				h.LinkDel(mv)
				return nil, false, 0, nil, fmt.Errorf("lan: move macvtap %s into namespace %s: %w", p.tapName, ns.name, err)
			}
		}
		l, err := ns.h.LinkByName(p.tapName)
		if err != nil {
			h.LinkDel(mv)
			return nil, false, 0, nil, fmt.Errorf("lan: find new macvtap %s: %w", p.tapName, err)
		}
		tap, created = l, l
	}
	if tap.Attrs().TxQLen <= 0 {
		// A macvtap made elsewhere with txqueuelen 0 drops every frame.
		if err := ns.h.LinkSetTxQLen(tap, tapQueueLen); err != nil {
			return nil, false, 0, created, fmt.Errorf("lan: set txqueuelen of %s: %w", p.tapName, err)
		}
	}
	if err := ns.h.LinkSetARPOff(tap); err != nil {
		return nil, false, 0, created, fmt.Errorf("lan: arp off on %s: %w", p.tapName, err)
	}
	// Multicast reaches a macvlan only through its own multicast filter,
	// even in passthru mode: without allmulticast the workstations'
	// neighbour solicitations (to solicited-node groups) never arrive
	// (measured 2026-12-02, kernel 6.18).
	if err := ns.h.LinkSetAllmulticastOn(tap); err != nil {
		return nil, false, 0, created, fmt.Errorf("lan: set %s allmulticast: %w", p.tapName, err)
	}
	f, err := openTap(ns.sys, p.tapName, tap.Attrs().Index, "/dev")
	if err != nil {
		return nil, false, 0, created, err
	}
	// Before the macvtap is up: no frame is read in the other framing.
	var frames io.ReadWriteCloser = f
	vnetOK := false
	if t, err := withVnet(f); err == nil {
		frames, vnetOK = t, true
	}
	if err := ns.h.LinkSetUp(tap); err != nil {
		f.Close()
		return nil, false, 0, created, fmt.Errorf("lan: set %s up: %w", p.tapName, err)
	}
	return frames, vnetOK, tap.Attrs().Index, created, nil
}

// link describes p's attached macvtap as a Link, with the readiness check
// and the re-attach for a re-created interface.
func (p *plan) link(f io.ReadWriteCloser, vnetOK bool, tapIndex int) Link {
	a := p.link0.Attrs()
	iface, tapName, mac, ns := p.iface, p.tapName, a.HardwareAddr, p.ns
	var index atomic.Int64
	index.Store(int64(tapIndex))
	return Link{
		Name:   iface,
		MAC:    mac,
		Addrs:  p.addrs,
		MTU:    a.MTU,
		Frames: f,
		Vnet:   vnetOK,
		Ready: func() error {
			t, err := ns.h.LinkByIndex(int(index.Load()))
			if err != nil || t.Attrs().Name != tapName {
				return fmt.Errorf("lan %s: macvtap %s: %w (interface removed?)", iface, tapName, ErrGone)
			}
			l, err := ns.h.LinkByName(iface)
			if err != nil {
				l, err = p.host.LinkByName(iface) // a bridge stays
			}
			if err != nil {
				return fmt.Errorf("lan %s: interface gone", iface)
			}
			if l.Attrs().Flags&unix.IFF_UP == 0 || l.Attrs().OperState == netlink.OperDown {
				return fmt.Errorf("lan %s: interface down", iface)
			}
			return nil
		},
		// The interface came back (USB NIC re-plugged): the kernel
		// deleted the macvtap with it, and the new one appears in the
		// gateway's namespace (the guards hold it meanwhile). Take it
		// again, if it is the same NIC.
		Reattach: func() (io.ReadWriteCloser, error) {
			q, err := inspect(p.host, ns, iface, false)
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(q.link0.Attrs().HardwareAddr, mac) {
				return nil, fmt.Errorf("lan: interface %s came back with MAC %s, not %s; restart torgate to serve it", iface, q.link0.Attrs().HardwareAddr, mac)
			}
			q.addrs, q.hostNS = p.addrs, p.hostNS
			if !q.inNS {
				if err := q.takeover(); err != nil {
					return nil, err
				}
			}
			f, v, idx, created, err := q.attach()
			if err == nil && v != vnetOK {
				f.Close()
				err = fmt.Errorf("lan: macvtap of %s came back with virtio-net headers %v, not %v; restart torgate to serve it", iface, v, vnetOK)
			}
			if err != nil {
				if created != nil {
					ns.h.LinkDel(created)
				}
				return nil, err
			}
			index.Store(int64(idx))
			return f, nil
		},
	}
}

// openTap opens the macvtap's character device as a plain tap: one
// Ethernet frame per read and write, no virtio-net header (the kernel
// segments GSO and completes checksums before handing frames over);
// withVnet may then add the header.
//
// /dev/tapN is named after the ifindex, and ifindexes repeat across
// network namespaces: use it only if its device number is the one sysfs
// gives for this macvtap, else make a private node.
func openTap(sys *os.File, name string, index int, devDir string) (*os.File, error) {
	b, err := readAt(sys, name+"/ifindex")
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(index) {
		return nil, fmt.Errorf("lan: %s does not show this network namespace's %s (mount a sysfs for the namespace, as ip netns exec does)", sysClassNet, name)
	}
	b, err = readAt(sys, fmt.Sprintf("%s/macvtap/tap%d/dev", name, index))
	if err != nil {
		return nil, fmt.Errorf("lan: macvtap device number of %s: %w", name, err)
	}
	majS, minS, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	maj, err1 := strconv.ParseUint(majS, 10, 32)
	mnr, err2 := strconv.ParseUint(minS, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("lan: bad device number %q for %s", b, name)
	}
	devnum := unix.Mkdev(uint32(maj), uint32(mnr))
	path := filepath.Join(devDir, fmt.Sprintf("tap%d", index))
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || uint64(st.Rdev) != devnum {
		dir, err := os.MkdirTemp("", "torgate-tap")
		if err != nil {
			return nil, fmt.Errorf("lan: node for %s: %w", name, err)
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "tap")
		if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(devnum)); err != nil {
			return nil, fmt.Errorf("lan: mknod for %s: %w", name, err)
		}
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("lan: open %s (%s): %w", path, name, err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lan: TUNSETIFF on %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// tapFile is a macvtap's descriptor that carries a virtio-net header in
// front of every frame (Link.Vnet). Its offloads start off, so the
// kernel still segments and completes checksums, until SetOffload.
type tapFile struct {
	*os.File
	rc syscall.RawConn

	// Readv's state, so that its callback is a method value made once
	// (readFn) rather than a closure made per frame. Readv's calls are
	// serialised (Device.ReadVnet).
	riov   []unix.Iovec
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	// Writev's, for the same reason: a closure handed to RawConn.Write
	// escapes, one allocation per frame on the LAN path's every write.
	// Writev's calls are serialised (port.writeOut holds port.wmu).
	wiov    []unix.Iovec
	werr    error
	writeFn func(fd uintptr) bool
}

// newTapFile wraps f, a tap descriptor (or, in tests, any pollable one).
func newTapFile(f *os.File) (*tapFile, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	t := &tapFile{File: f, rc: rc, riov: make([]unix.Iovec, 0, 4), wiov: make([]unix.Iovec, 0, 8)}
	t.readFn = t.readv
	t.writeFn = t.writev
	return t, nil
}

var (
	_ offloader    = (*tapFile)(nil)
	_ vectorWriter = (*tapFile)(nil)
	_ directReader = (*tapFile)(nil)
)

// tapOffloads are the offloads SetOffload asks for: partial checksums
// and TCP super-frames both ways; not TSO_ECN (the kernel segments a
// super-frame with CWR first) nor UDP (UFO, USO).
const tapOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// withVnet switches f, a plain tap descriptor, to virtio-net headers of
// vnet.HdrLen bytes (TUNSETIFF with IFF_VNET_HDR, TUNSETVNETHDRSZ) and
// checks that the offloads can be switched on (TUNSETOFFLOAD), leaving
// them off. On any refusal f is a plain tap again and the error says
// why: the Device then moves one frame per system call.
func withVnet(f *os.File) (*tapFile, error) {
	t, err := newTapFile(f)
	if err != nil {
		return nil, err
	}
	rc := t.rc
	var ierr error
	setFlags := func(fd int, flags uint16) error {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return err
		}
		ifr.SetUint16(flags)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err := rc.Control(func(fd uintptr) {
		if ierr = setFlags(int(fd), unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR); ierr != nil {
			return
		}
		ierr = unix.IoctlSetPointerInt(int(fd), unix.TUNSETVNETHDRSZ, vnet.HdrLen)
		if ierr == nil {
			ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tapOffloads)
		}
		if ierr == nil {
			ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, 0)
		}
		if ierr != nil {
			setFlags(int(fd), unix.IFF_TAP|unix.IFF_NO_PI)
		}
	}); err != nil {
		return nil, err
	}
	if ierr != nil {
		return nil, fmt.Errorf("lan: virtio-net header on %s: %w", f.Name(), ierr)
	}
	return t, nil
}

// SetOffload switches the tap's offloads (tapOffloads) on or off.
func (t *tapFile) SetOffload(on bool) error {
	flags := 0
	if on {
		flags = tapOffloads
	}
	var ierr error
	if err := t.rc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, flags) }); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("lan: TUNSETOFFLOAD on %s: %w", t.Name(), ierr)
	}
	return nil
}

// Readv reads one frame into parts, in order, in one system call; what
// does not fit them is lost (the kernel truncates). Calls must be
// serialised. It honours the read deadline (SetReadDeadline).
func (t *tapFile) Readv(parts [][]byte) (int, error) {
	t.riov = appendIovecs(t.riov[:0], parts)
	if len(t.riov) == 0 {
		return 0, nil
	}
	t.rn, t.rerr = 0, nil
	err := t.rc.Read(t.readFn)
	clear(t.riov) // keep no reference to the caller's buffers
	if err != nil {
		return 0, err
	}
	return t.rn, t.rerr
}

// readv is Readv's RawConn callback: false (wait until readable, then
// again) on EAGAIN and EINTR.
func (t *tapFile) readv(fd uintptr) bool {
	n, again, err := vecCall(unix.SYS_READV, fd, t.riov)
	t.rn, t.rerr = n, err
	return !again
}

// appendIovecs appends an iovec for each non-empty part.
func appendIovecs(iov []unix.Iovec, parts [][]byte) []unix.Iovec {
	for _, b := range parts {
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
	}
	return iov
}

// vecCall makes one readv or writev (trap) of iov on fd for a RawConn
// callback: again on EAGAIN and EINTR (wait, then call again),
// os.ErrClosed for a detached tap (EBADFD).
func vecCall(trap, fd uintptr, iov []unix.Iovec) (n int, again bool, err error) {
	r, _, errno := unix.Syscall(trap, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	switch errno {
	case 0:
		return int(r), false, nil
	case unix.EAGAIN, unix.EINTR:
		return 0, true, nil
	case unix.EBADFD:
		return 0, false, os.ErrClosed
	default:
		return 0, false, errno
	}
}

// Writev writes one frame from parts in one system call. Its calls are
// serialised.
func (t *tapFile) Writev(parts [][]byte) error {
	t.wiov = appendIovecs(t.wiov[:0], parts)
	if len(t.wiov) == 0 {
		return nil
	}
	t.werr = nil
	err := t.rc.Write(t.writeFn)
	clear(t.wiov) // keep no reference to the caller's buffers
	if err != nil {
		return err
	}
	return t.werr
}

// writev is Writev's RawConn callback: false (wait until writable, then
// again) on EAGAIN and EINTR.
func (t *tapFile) writev(fd uintptr) bool {
	_, again, err := vecCall(unix.SYS_WRITEV, fd, t.wiov)
	t.werr = err
	return !again
}

// Down gives iface back to the gateway's kernel as the operator had it
// before torgate: it removes the macvtap, moves the interface back out of
// its LAN namespace with its recorded addresses, removes the namespace
// and the guard rules, and puts the local table rule back at priority 0
// once no guard remains. It refuses while a torgate serves iface, and
// when nothing of torgate's is there for iface (a typo).
func Down(iface string) error {
	if err := checkName(iface); err != nil {
		return err
	}
	unlock, err := lock(iface)
	if err != nil {
		return err
	}
	defer unlock()
	name, err := NamespaceName(iface)
	if err != nil {
		return err
	}
	found := false
	var errs []error
	if _, err := os.Stat(filepath.Join(netnsDir, name)); err == nil {
		found = true
		if err := down(iface); err != nil {
			return err
		}
	}
	// The design before the LAN namespace left its macvtap here.
	tapName := TapName(iface)
	if tl, err := netlink.LinkByName(tapName); err == nil {
		mv, ok := tl.(*netlink.Macvtap)
		if !ok || mv.Mode != netlink.MACVLAN_MODE_PASSTHRU {
			return fmt.Errorf("lan: %s is not torgate's macvtap; not removing it", tapName)
		}
		found = true
		if err := netlink.LinkDel(tl); err != nil {
			return fmt.Errorf("lan: delete %s: %w", tapName, err)
		}
	}
	had, err := hasGuards([]string{iface, tapName})
	if err != nil {
		return err
	}
	if !found && !had {
		return fmt.Errorf("lan: nothing of torgate's for %s here (no namespace %s, no macvtap, no guard rules): %w", iface, name, ErrNotFound)
	}
	errs = append(errs, removeGuards([]string{iface, tapName}))
	return errors.Join(errs...)
}

// ErrNotFound means torgate has set nothing up for the interface named.
var ErrNotFound = errors.New("no such LAN")

// down gives the interface in iface's LAN namespace back and removes the
// namespace.
func down(iface string) error {
	ns, _, err := openNS(iface)
	if err != nil {
		return err
	}
	defer ns.close()
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("lan: netlink: %w", err)
	}
	defer host.Close()
	hostNS, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("lan: own network namespace: %w", err)
	}
	defer hostNS.Close()
	p, err := inspect(host, ns, iface, false)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if _, e := ns.h.LinkByName(iface); errors.As(e, &nf) {
			if _, e := host.LinkByName(iface); errors.As(e, &nf) {
				// The interface is gone (unplugged): only the
				// namespace is left to remove.
				return unpinNS(filepath.Join(netnsDir, ns.name))
			}
		}
		return err
	}
	p.hostNS = hostNS
	if err := p.giveBack(); err != nil {
		return err
	}
	return unpinNS(filepath.Join(netnsDir, ns.name))
}
