package lan

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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

// tapQueueLen sizes the macvtap's receive ring (frames waiting for
// torgate's read): the kernel's own default for a tap (TUN_READQ_SIZE).
const tapQueueLen = 500

// ErrBusy means another torgate serves the interface in this network
// namespace. Fatal for Open and Down.
var ErrBusy = errors.New("another torgate serves this LAN")

// TapName is the name of the macvtap torgate puts on iface: "tg-IFACE",
// or for names too long for IFNAMSIZ "tg-" plus a prefix and a hash.
func TapName(iface string) string {
	n := "tg-" + iface
	if len(n) <= unix.IFNAMSIZ-1 {
		return n
	}
	h := fnv.New32a()
	h.Write([]byte(iface))
	return fmt.Sprintf("tg-%.4s%08x", iface, h.Sum32())
}

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
	link    netlink.Link
	tapName string
	tap     *netlink.Macvtap // existing macvtap, nil to create
	addrs   []netip.Prefix
	unlock  func() error
}

// inspect checks iface without changing anything.
func inspect(iface string) (*plan, error) {
	if err := checkName(iface); err != nil {
		return nil, err
	}
	l, err := netlink.LinkByName(iface)
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
	p := &plan{iface: iface, link: l, tapName: TapName(iface)}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
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
	if !global {
		return nil, fmt.Errorf("lan: interface %s has no gateway address for workstations; add one first, e.g. ip addr add 10.152.152.10/18 dev %s", iface, iface)
	}
	if tl, err := netlink.LinkByName(p.tapName); err == nil {
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
		p, err := inspect(iface)
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
		l, created, err := p.attach()
		if created != nil {
			undo = append(undo, func() { netlink.LinkDel(created) })
		}
		if err != nil {
			return rollback(err)
		}
		links = append(links, l)
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
// returns the macvtap it created, for the caller to undo.
func (p *plan) attach() (Link, netlink.Link, error) {
	var created netlink.Link
	tap := netlink.Link(p.tap)
	if p.tap == nil {
		// NewLinkAttrs, not a literal: a zero TxQLen would be sent as
		// IFLA_TXQLEN 0, and the tap's receive ring is sized from it: a
		// ring of 0 drops every frame (measured 2026-12-02, kernel 6.18).
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.ParentIndex, attrs.TxQLen = p.tapName, p.link.Attrs().Index, tapQueueLen
		mv := &netlink.Macvtap{Macvlan: netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_PASSTHRU}}
		// Created down: a down passthru macvtap drops what it is given,
		// so nothing reaches any stack until the descriptor is open.
		if err := netlink.LinkAdd(mv); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return Link{}, nil, fmt.Errorf("lan: interface %s already has a receive handler (a bridge, bond, macvlan or macvtap is attached); torgate needs it alone", p.iface)
			}
			return Link{}, nil, fmt.Errorf("lan: create macvtap %s on %s: %w", p.tapName, p.iface, err)
		}
		l, err := netlink.LinkByName(p.tapName)
		if err != nil {
			netlink.LinkDel(mv)
			return Link{}, nil, fmt.Errorf("lan: find new macvtap %s: %w", p.tapName, err)
		}
		tap, created = l, l
	}
	if tap.Attrs().TxQLen <= 0 {
		// A macvtap made elsewhere with txqueuelen 0 drops every frame.
		if err := netlink.LinkSetTxQLen(tap, tapQueueLen); err != nil {
			return Link{}, created, fmt.Errorf("lan: set txqueuelen of %s: %w", p.tapName, err)
		}
	}
	// The macvtap's own IPv6 would autoconfigure a link-local address and
	// send RS/DAD/MLD on the LAN.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+p.tapName+"/disable_ipv6", []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Link{}, created, fmt.Errorf("lan: disable IPv6 on %s: %w", p.tapName, err)
	}
	// Multicast reaches a macvlan only through its own multicast filter,
	// even in passthru mode: without allmulticast the workstations'
	// neighbour solicitations (to solicited-node groups) never arrive
	// (measured 2026-12-02, kernel 6.18).
	if err := netlink.LinkSetAllmulticastOn(tap); err != nil {
		return Link{}, created, fmt.Errorf("lan: set %s allmulticast: %w", p.tapName, err)
	}
	f, err := openTap(p.tapName, tap.Attrs().Index)
	if err != nil {
		return Link{}, created, err
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		f.Close()
		return Link{}, created, fmt.Errorf("lan: set %s up: %w", p.tapName, err)
	}
	a := p.link.Attrs()
	tapIndex, iface := tap.Attrs().Index, p.iface
	return Link{
		Name:   p.iface,
		MAC:    a.HardwareAddr,
		Addrs:  p.addrs,
		MTU:    a.MTU,
		Frames: f,
		Ready: func() error {
			t, err := netlink.LinkByIndex(tapIndex)
			if err != nil || t.Attrs().Name != TapName(iface) {
				return fmt.Errorf("lan %s: macvtap %s gone (interface re-created? restart torgate)", iface, TapName(iface))
			}
			l, err := netlink.LinkByName(iface)
			if err != nil {
				return fmt.Errorf("lan %s: interface gone", iface)
			}
			if l.Attrs().Flags&unix.IFF_UP == 0 || l.Attrs().OperState == netlink.OperDown {
				return fmt.Errorf("lan %s: interface down", iface)
			}
			return nil
		},
	}, created, nil
}

// openTap opens the macvtap's character device as a plain tap: one
// Ethernet frame per read and write, no virtio-net header (the kernel
// segments GSO and completes checksums before handing frames over).
//
// /dev/tapN is named after the ifindex, and ifindexes repeat across
// network namespaces: use it only if its device number is the one sysfs
// gives for this macvtap, else make a private node.
func openTap(name string, index int) (*os.File, error) {
	sys := "/sys/class/net/" + name
	b, err := os.ReadFile(sys + "/ifindex")
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(index) {
		return nil, fmt.Errorf("lan: /sys does not show this network namespace's %s (mount a sysfs for the namespace, as ip netns exec does)", name)
	}
	b, err = os.ReadFile(fmt.Sprintf("%s/macvtap/tap%d/dev", sys, index))
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
	path := fmt.Sprintf("/dev/tap%d", index)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != devnum {
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
