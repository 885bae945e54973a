package netconf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link says how to configure one link. Zero fields change nothing.
type Link struct {
	// Addrs are assigned to the link; invalid prefixes are skipped, and
	// one already assigned is not an error. IPv6 addresses skip duplicate
	// address detection: on a point-to-point TUN it would only hold the
	// address "tentative" (unusable) for a second.
	Addrs []netip.Prefix
	// TxQueueLen, if not 0, sets the link's txqueuelen.
	TxQueueLen int
	// Routes are added through the link with scope link (on-link, no
	// gateway), after it is up.
	Routes []netip.Prefix
}

// Configure applies c to the link called name and brings it up.
func Configure(name string, c Link) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	for _, p := range c.Addrs {
		if !p.IsValid() {
			continue
		}
		a := &netlink.Addr{IPNet: IPNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, a); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("add address %s to %s: %w", p, name, err)
		}
	}
	if c.TxQueueLen != 0 {
		if err := netlink.LinkSetTxQLen(link, c.TxQueueLen); err != nil {
			return fmt.Errorf("set txqueuelen of %s: %w", name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	for _, p := range c.Routes {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: IPNet(p.Masked()), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("add route %s via %s: %w", p, name, err)
		}
	}
	return nil
}

// IPNet converts a prefix, keeping its address (not masked).
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
