package lan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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

// plan is one interface checked and ready to be set up.
type plan struct {
	iface   string
	link0   netlink.Link // the LAN interface
	tapName string
	tap     *netlink.Macvtap // existing macvtap, nil to create
	addrs   []netip.Prefix
	unlock  func() error
}

// inspect checks iface without changing anything; needAddr requires a
// gateway address on it (not for a re-attach: torgate keeps the addresses
// it started with).
func inspect(h *netlink.Handle, iface string, needAddr bool) (*plan, error) {
	if err := checkName(iface); err != nil {
		return nil, err
	}
	l, err := h.LinkByName(iface)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("lan: interface %s not found (see ip link)", iface)
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
	p := &plan{iface: iface, link0: l, tapName: TapName(iface)}
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
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("lan: addresses of %s: %w", iface, err)
	}
	global := false
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok {
			continue
		}
		ones, _ := ad.Mask.Size()
		ip = ip.Unmap()
		p.addrs = append(p.addrs, netip.PrefixFrom(ip, ones))
		if ip.Is4() || !ip.IsLinkLocalUnicast() {
			global = true
		}
	}
	if !global && needAddr {
		return nil, fmt.Errorf("lan: interface %s has no gateway address for workstations; add one first, e.g. ip addr add 10.152.152.10/18 dev %s", iface, iface)
	}
	if tl, err := h.LinkByName(p.tapName); err == nil {
		mv, ok := tl.(*netlink.Macvtap)
		if !ok || mv.Mode != netlink.MACVLAN_MODE_PASSTHRU || mv.ParentIndex != a.Index {
			return nil, fmt.Errorf("lan: a link named %s exists but is not torgate's passthru macvtap on %s; remove it (ip link del %s)", p.tapName, iface, p.tapName)
		}
		p.tap = mv
	}
	return p, nil
}

// Open makes torgate the gateway of the interfaces in cfg: it checks all
// of them first, then for each installs the guard rules, puts a passthru
// macvtap on it (or adopts torgate's from a previous run), opens it and
// returns a Device serving them all. A failure leaves nothing behind that
// this call added. Close keeps the macvtap and the guards; Down removes
// them.
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
		for _, u := range unlocks {
			u()
		}
		return nil, err
	}
	// Ready and Reattach run later on any thread: a netlink handle whose
	// sockets live in this network namespace, and this namespace's sysfs
	// held open, keep them looking at the right one.
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("lan: netlink: %w", err)
	}
	unlocks = append(unlocks, func() error { h.Close(); return nil })
	sys, err := os.Open(sysClassNet)
	if err != nil {
		return fail(fmt.Errorf("lan: %s: %w", sysClassNet, err))
	}
	unlocks = append(unlocks, sys.Close)
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
		p, err := inspect(h, iface, true)
		if err != nil {
			return fail(err)
		}
		p.unlock = u
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
		f, tapIndex, created, err := p.attach(h, sys)
		if created != nil {
			undo = append(undo, func() { h.LinkDel(created) })
		}
		if err != nil {
			return rollback(err)
		}
		links = append(links, p.link(h, sys, f, tapIndex))
	}
	d, err := NewDevice(links, log)
	if err != nil {
		links = nil // NewDevice closed them
		return rollback(err)
	}
	d.onClose = unlocks
	return d, nil
}

// attach creates (if needed), opens and brings up the macvtap of p. It
// returns the tap descriptor, the macvtap's ifindex, and the macvtap it
// created, for the caller to undo.
func (p *plan) attach(h *netlink.Handle, sys *os.File) (*os.File, int, netlink.Link, error) {
	var created netlink.Link
	tap := netlink.Link(p.tap)
	if p.tap == nil {
		// NewLinkAttrs, not a literal: a zero TxQLen would be sent as
		// IFLA_TXQLEN 0, and the tap's receive ring is sized from it: a
		// ring of 0 drops every frame (measured 2026-12-02, kernel 6.18).
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.ParentIndex, attrs.TxQLen = p.tapName, p.link0.Attrs().Index, tapQueueLen
		mv := &netlink.Macvtap{Macvlan: netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_PASSTHRU}}
		// Created down: a down passthru macvtap drops what it is given,
		// so nothing reaches any stack until the descriptor is open.
		if err := h.LinkAdd(mv); err != nil {
			// EBUSY: another receive handler (bridge, bond, team);
			// EINVAL: other macvlans on it.
			if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EINVAL) {
				return nil, 0, nil, fmt.Errorf("lan: interface %s already has a receive handler (a bridge, bond, macvlan or macvtap is attached); torgate needs it alone", p.iface)
			}
			return nil, 0, nil, fmt.Errorf("lan: create macvtap %s on %s: %w", p.tapName, p.iface, err)
		}
		l, err := h.LinkByName(p.tapName)
		if err != nil {
			h.LinkDel(mv)
			return nil, 0, nil, fmt.Errorf("lan: find new macvtap %s: %w", p.tapName, err)
		}
		tap, created = l, l
	}
	if tap.Attrs().TxQLen <= 0 {
		// A macvtap made elsewhere with txqueuelen 0 drops every frame.
		if err := h.LinkSetTxQLen(tap, tapQueueLen); err != nil {
			return nil, 0, created, fmt.Errorf("lan: set txqueuelen of %s: %w", p.tapName, err)
		}
	}
	// Linux removes an interface's IPv6 addresses when its link goes
	// down (keep_addr_on_down 0, the default), IPv4 ones it keeps: after
	// a LAN flap a restarted torgate would find no IPv6 gateway address
	// and the LAN's IPv6 would stay dark (TestGatewayDeployment, measured
	// 2026-12-02, kernel 6.18). The addresses are the operator's
	// configuration; keep them.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+p.iface+"/keep_addr_on_down", []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, 0, created, fmt.Errorf("lan: keep IPv6 addresses of %s on link down: %w", p.iface, err)
	}
	// The macvtap's own IPv6 would autoconfigure a link-local address and
	// send RS/DAD/MLD on the LAN. (/proc/sys/net answers for the calling
	// thread's network namespace: on a re-attach from another thread in
	// a test's borrowed namespace this may not exist; the guards hold
	// either way.)
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+p.tapName+"/disable_ipv6", []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, 0, created, fmt.Errorf("lan: disable IPv6 on %s: %w", p.tapName, err)
	}
	// Multicast reaches a macvlan only through its own multicast filter,
	// even in passthru mode: without allmulticast the workstations'
	// neighbour solicitations (to solicited-node groups) never arrive
	// (measured 2026-12-02, kernel 6.18).
	if err := h.LinkSetAllmulticastOn(tap); err != nil {
		return nil, 0, created, fmt.Errorf("lan: set %s allmulticast: %w", p.tapName, err)
	}
	f, err := openTap(sys, p.tapName, tap.Attrs().Index, "/dev")
	if err != nil {
		return nil, 0, created, err
	}
	if err := h.LinkSetUp(tap); err != nil {
		f.Close()
		return nil, 0, created, fmt.Errorf("lan: set %s up: %w", p.tapName, err)
	}
	return f, tap.Attrs().Index, created, nil
}

// link describes p's attached macvtap as a Link, with the readiness check
// and the re-attach for a re-created interface.
func (p *plan) link(h *netlink.Handle, sys *os.File, f *os.File, tapIndex int) Link {
	a := p.link0.Attrs()
	iface, tapName, mac := p.iface, p.tapName, a.HardwareAddr
	var index atomic.Int64
	index.Store(int64(tapIndex))
	return Link{
		Name:   iface,
		MAC:    mac,
		Addrs:  p.addrs,
		MTU:    a.MTU,
		Frames: f,
		Ready: func() error {
			t, err := h.LinkByIndex(int(index.Load()))
			if err != nil || t.Attrs().Name != tapName {
				return fmt.Errorf("lan %s: macvtap %s: %w (interface removed?)", iface, tapName, ErrGone)
			}
			l, err := h.LinkByName(iface)
			if err != nil {
				return fmt.Errorf("lan %s: interface gone", iface)
			}
			if l.Attrs().Flags&unix.IFF_UP == 0 || l.Attrs().OperState == netlink.OperDown {
				return fmt.Errorf("lan %s: interface down", iface)
			}
			return nil
		},
		// The interface came back (USB NIC re-plugged): the kernel
		// deleted the macvtap with it; the guards held meanwhile. Put a
		// new one on, if it is the same NIC.
		Reattach: func() (io.ReadWriteCloser, error) {
			q, err := inspect(h, iface, false)
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(q.link0.Attrs().HardwareAddr, mac) {
				return nil, fmt.Errorf("lan: interface %s came back with MAC %s, not %s; restart torgate to serve it", iface, q.link0.Attrs().HardwareAddr, mac)
			}
			f, idx, created, err := q.attach(h, sys)
			if err != nil {
				if created != nil {
					h.LinkDel(created)
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
// segments GSO and completes checksums before handing frames over).
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

// Down removes what Open installed for iface: its macvtap and its guard
// rules, and puts the local table rule back at priority 0 once no guard
// remains. It refuses while a torgate serves iface. iface need not exist
// any more.
func Down(iface string) error {
	if err := checkName(iface); err != nil {
		return err
	}
	unlock, err := lock(iface)
	if err != nil {
		return err
	}
	defer unlock()
	tapName := TapName(iface)
	if tl, err := netlink.LinkByName(tapName); err == nil {
		mv, ok := tl.(*netlink.Macvtap)
		if !ok || mv.Mode != netlink.MACVLAN_MODE_PASSTHRU {
			return fmt.Errorf("lan: %s is not torgate's macvtap; not removing it", tapName)
		}
		if err := netlink.LinkDel(tl); err != nil {
			return fmt.Errorf("lan: delete %s: %w", tapName, err)
		}
	}
	return removeGuards([]string{iface, tapName})
}
