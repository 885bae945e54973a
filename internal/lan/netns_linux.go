package lan

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The LAN namespace.
//
// Each LAN interface gets a network namespace of its own, pinned at
// /run/netns/NAME like one made by "ip netns add", so that it outlives
// torgate. It holds the macvtap and, where the interface can move
// between namespaces (a NIC, a veth; not a bridge), the interface itself.
// It has no address, no route and no other interface (its loopback stays
// down), IPv6 is off in it and it forwards nothing: whatever the kernel
// does with a LAN frame that reaches this namespace's stack (while torgate
// is stopped, a macvtap without a reader hands unicast frames to its own
// stack; multicast always reaches the interface's stack), it has no
// address to answer from and no route to send anything by. The gateway's
// own namespace, with its uplink, never sees a LAN frame.
//
// Why not filter instead (the design before this one): the gateway's
// kernel kept eth1 as an IP interface behind "iif eth1 blackhole" rules,
// and parsed IPv6 hop-by-hop options of multicast frames and IPv4 options
// before any rule applied, answering with ICMP errors routed out of the
// uplink; ARP, outside policy routing, let a broadcast reply complete a
// neighbour entry that forwarded Internet packets into the LAN (issue 19,
// measured 2026-12-04). Each has a kernel-level patch; moving the
// interface out of the kernel's reach needs none.

const netnsDir = "/run/netns"

// NamespaceName returns the name of iface's LAN namespace as torgate
// running in the calling thread's network namespace pins it:
// "tg-IFACE" in the host's initial namespace, "tg-IFACE-INODE" in another
// (a gateway that is itself a namespace: tests, containers), so that two
// gateways on one host never share one.
func NamespaceName(iface string) (string, error) {
	if err := checkName(iface); err != nil {
		return "", err
	}
	var self, init unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return "", fmt.Errorf("lan: own network namespace: %w", err)
	}
	if err := unix.Stat("/proc/1/ns/net", &init); err == nil && init.Ino == self.Ino && init.Dev == self.Dev {
		return "tg-" + iface, nil
	}
	return "tg-" + iface + "-" + strconv.FormatUint(self.Ino, 10), nil
}

// lanNS is an open LAN namespace.
type lanNS struct {
	name string
	fd   *os.File        // the namespace itself
	h    *netlink.Handle // netlink sockets inside it
	sys  *os.File        // its /sys/class/net (a sysfs mounted for it)
}

// errNoNS is what linkByName returns in a LAN namespace not made yet
// (Inspect's, which creates nothing).
var errNoNS = errors.New("lan: no LAN namespace yet")

// linkByName looks name up in the namespace; without one (h nil: a
// namespace Inspect found missing) no link is there.
func (n *lanNS) linkByName(name string) (netlink.Link, error) {
	if n.h == nil {
		return nil, errNoNS
	}
	return n.h.LinkByName(name)
}

func (n *lanNS) close() {
	if n.h != nil {
		n.h.Close()
	}
	if n.sys != nil {
		n.sys.Close()
	}
	if n.fd != nil {
		n.fd.Close()
	}
}

// ErrNoPin means the LAN namespace does not exist and torgate cannot make
// one that would outlive it. Fatal.
var ErrNoPin = errors.New("cannot pin a LAN namespace that outlives this process")

// openNS opens iface's LAN namespace, creating and pinning it if needed
// (created reports that). A namespace is only created from the host's
// mount namespace: a pin made in a private one (ip netns exec, a systemd
// unit with ProtectSystem=) would vanish with torgate, and with it the
// namespace, leaving a NIC back in the host's namespace, down but free for
// a network manager to configure.
func openNS(iface string) (_ *lanNS, created bool, err error) {
	name, err := NamespaceName(iface)
	if err != nil {
		return nil, false, err
	}
	path := filepath.Join(netnsDir, name)
	n := &lanNS{name: name}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	n.fd, err = os.Open(path)
	switch {
	case err == nil:
		if !isNetns(n.fd) {
			return nil, false, fmt.Errorf("lan: %s is not a network namespace; remove it", path)
		}
	case errors.Is(err, os.ErrNotExist):
		if !hostMounts() {
			return nil, false, fmt.Errorf("lan: namespace %s for %s does not exist, and %w: this torgate runs in a private mount namespace (ip netns exec, or a unit with ProtectSystem=); run \"torgate lan guard %s\" from the host first (the boot unit does), or start torgate in the host's mount namespace (nsenter --net=..., not ip netns exec)", name, iface, ErrNoPin, iface)
		}
		if n.fd, err = pinNS(path); err != nil {
			return nil, false, err
		}
		created = true
	default:
		return nil, false, fmt.Errorf("lan: open %s: %w", path, err)
	}
	fail := func(err error) (*lanNS, bool, error) {
		if created {
			unpinNS(path)
		}
		return nil, false, err
	}
	// Inside: no IPv6 on any interface (default: also for interfaces
	// that arrive later, a re-plugged NIC moved in), no forwarding, no ARP
	// answers. Then this namespace's sysfs, for the macvtap's device
	// number.
	if n.sys, err = nsSetup(n.fd); err != nil {
		return fail(fmt.Errorf("lan: set up namespace %s: %w", name, err))
	}
	if n.h, err = netlink.NewHandleAt(vnetns.NsHandle(n.fd.Fd())); err != nil {
		return fail(fmt.Errorf("lan: netlink in namespace %s: %w", name, err))
	}
	return n, created, nil
}

// isNetns reports whether f is a network namespace.
func isNetns(f *os.File) bool {
	var st unix.Statfs_t
	if unix.Fstatfs(int(f.Fd()), &st) != nil || st.Type != unix.NSFS_MAGIC {
		return false
	}
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	return err == nil && t == unix.CLONE_NEWNET
}

// hostMounts reports whether a pin made in netnsDir reaches the host's
// mount namespace: the mount holding netnsDir is not a slave (a slave
// mount, as ip netns exec and systemd's ProtectSystem= make, receives
// mounts but sends none back, so a pin made there would vanish with this
// process). Read from mountinfo's propagation fields: PID 1's namespace
// cannot be compared with, since /proc/1 is not always readable (a
// sandbox's init, measured 2026-12-04).
func hostMounts() bool {
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return false
	}
	best, slave := -1, false
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		mp := f[4]
		if mp != "/" && mp != netnsDir && !strings.HasPrefix(netnsDir, mp+"/") {
			continue
		}
		if len(mp) < best {
			continue
		}
		best, slave = len(mp), false
		shared := false
		for _, o := range f[6:] {
			if o == "-" {
				break
			}
			shared = shared || strings.HasPrefix(o, "shared:")
			slave = slave || strings.HasPrefix(o, "master:")
		}
		slave = slave && !shared
	}
	return best >= 0 && !slave
}

// onThread runs fn on a fresh OS thread that is never returned to Go's
// pool: fn may change the thread's namespaces (the thread exits with it).
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no Unlock: the thread dies with this goroutine
		errc <- fn()
	}()
	return <-errc
}

// pinNS creates a network namespace and bind-mounts it at path, as
// "ip netns add" does (netnsDir made a shared mount point, so the pin
// propagates to mount namespaces made later). It returns the namespace
// opened by the thread that made it: the caller's thread may have a mount
// namespace of its own, where the pin does not show.
func pinNS(path string) (*os.File, error) {
	var ns *os.File
	err := onThread(func() error {
		// Go never runs a goroutine on a thread that a locked goroutine
		// moved: this one is in the process's own mount namespace,
		// whatever namespaces the caller's thread entered.
		if err := os.MkdirAll(netnsDir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); errors.Is(err, unix.EINVAL) {
			// Not a mount point yet: make it one, then shared.
			if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("bind %s: %w", netnsDir, err)
			}
			if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("share %s: %w", netnsDir, err)
			}
		} else if err != nil {
			return fmt.Errorf("share %s: %w", netnsDir, err)
		}
		f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			os.Remove(path)
			return fmt.Errorf("unshare: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			os.Remove(path)
			return err
		}
		ns, err = os.Open("/proc/thread-self/ns/net")
		if err != nil {
			unpin(path)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lan: pin %s: %w", path, err)
	}
	return ns, nil
}

// unpinNS removes a pin; the namespace goes when nothing else holds it.
// It runs on a fresh thread, in the host's mount namespace (see pinNS).
func unpinNS(path string) error {
	return onThread(func() error { return unpin(path) })
}

func unpin(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lan: unpin %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lan: unpin %s: %w", path, err)
	}
	return nil
}

// nsSettings are written inside every LAN namespace.
var nsSettings = []struct{ path, value string }{
	// IPv6 off for every interface there and every one that arrives.
	{"/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"},
	{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"},
	// No forwarding (there is no route either).
	{"/proc/sys/net/ipv4/ip_forward", "0"},
	{"/proc/sys/net/ipv6/conf/all/forwarding", "0"},
	// Never answer ARP (there is no address either).
	{"/proc/sys/net/ipv4/conf/all/arp_ignore", "8"},
	{"/proc/sys/net/ipv4/conf/default/arp_ignore", "8"},
}

// nsSetup enters ns on a throw-away thread, writes nsSettings there and
// returns its /sys/class/net: a sysfs mounted for ns in a private mount
// namespace of that thread, which stays readable through the returned
// descriptor after the thread is gone.
func nsSetup(ns *os.File) (*os.File, error) {
	var sys *os.File
	err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("private mount namespace: %w", err)
		}
		if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("private mounts: %w", err)
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter: %w", err)
		}
		for _, s := range nsSettings {
			if err := os.WriteFile(s.path, []byte(s.value), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount sysfs: %w", err)
		}
		f, err := os.Open(sysClassNet)
		sys = f
		return err
	})
	return sys, err
}
