package lan

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// Info is what Inspect reads of a LAN interface.
type Info struct {
	// Prefixes are the gateway's addresses on the LAN with their prefix
	// lengths: on the interface, or recorded in its alias once torgate
	// took it (link-local ones included).
	Prefixes []netip.Prefix
	// Taken reports that the interface is in its LAN namespace already
	// (an earlier torgate run, or "torgate lan guard", took it).
	Taken bool
	// Guarded reports that guard rules for it are in place (Guard, or
	// an earlier Open, installed them).
	Guarded bool
}

// Inspect checks iface as Open would, and reads its gateway addresses,
// without changing anything: no lock, no namespace made or set up, no
// rule, no link touched. It looks in the gateway's network namespace and
// in iface's LAN namespace if one is pinned. A missing interface is
// ErrNoInterface. Looking inside a LAN namespace needs CAP_SYS_ADMIN
// (setns), as Open does.
func Inspect(iface string) (Info, error) {
	if err := checkName(iface); err != nil {
		return Info{}, err
	}
	name, err := NamespaceName(iface)
	if err != nil {
		return Info{}, err
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return Info{}, fmt.Errorf("lan: netlink: %w", err)
	}
	defer host.Close()
	ns := &lanNS{name: name}
	defer ns.close()
	path := filepath.Join(netnsDir, name)
	f, err := os.Open(path)
	switch {
	case err == nil:
		ns.fd = f
		if !isNetns(f) {
			return Info{}, fmt.Errorf("lan: %s is not a network namespace; remove it", path)
		}
		if ns.h, err = netlink.NewHandleAt(vnetns.NsHandle(f.Fd())); err != nil {
			return Info{}, fmt.Errorf("lan: look into namespace %s: %w", name, err)
		}
	case errors.Is(err, os.ErrNotExist):
		// Not taken yet: only the gateway's namespace to look in.
	default:
		return Info{}, fmt.Errorf("lan: open %s: %w", path, err)
	}
	p, err := inspect(host, ns, iface, true)
	if err != nil {
		return Info{}, err
	}
	guarded, err := hasGuards([]string{iface, p.tapName})
	if err != nil {
		return Info{}, err
	}
	return Info{Prefixes: p.addrs, Taken: p.inNS, Guarded: guarded}, nil
}

// Exists reports whether iface exists in the gateway's network namespace
// or in its LAN namespace, changing nothing. Looking inside a LAN
// namespace needs CAP_SYS_ADMIN.
func Exists(iface string) (bool, error) {
	if err := checkName(iface); err != nil {
		return false, err
	}
	var nf netlink.LinkNotFoundError
	if _, err := netlink.LinkByName(iface); err == nil {
		return true, nil
	} else if !errors.As(err, &nf) {
		return false, fmt.Errorf("lan: interface %s: %w", iface, err)
	}
	name, err := NamespaceName(iface)
	if err != nil {
		return false, err
	}
	f, err := os.Open(filepath.Join(netnsDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lan: open %s: %w", name, err)
	}
	defer f.Close()
	if !isNetns(f) {
		return false, nil
	}
	h, err := netlink.NewHandleAt(vnetns.NsHandle(f.Fd()))
	if err != nil {
		return false, fmt.Errorf("lan: look into namespace %s: %w", name, err)
	}
	defer h.Close()
	if _, err := h.LinkByName(iface); err == nil {
		return true, nil
	} else if !errors.As(err, &nf) {
		return false, fmt.Errorf("lan: interface %s in %s: %w", iface, name, err)
	}
	return false, nil
}
