package main

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// checkRoute accepts the two shapes a workstation behind torgate has: a
// default route into a TUN (torgate exec, a container given torgate's TUN)
// or a default route via a gateway address on the link (a workstation
// behind "torgate run --lan"). From the workstation nothing can prove that
// the gateway is torgate: the dns-intercept, udp and icmp checks do that.
// An IPv6 default route, if any, must have one of the same shapes.
func checkRoute() (string, error) {
	v4, err := defaultRoute(netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	if v4 == "" {
		return "", errors.New("no IPv4 default route (is this a workstation behind torgate?)")
	}
	v6, err := defaultRoute(netlink.FAMILY_V6)
	if err != nil {
		return "", err
	}
	if v6 == "" {
		return "default route " + v4, nil
	}
	return "default route " + v4 + "; IPv6 " + v6, nil
}

// defaultRoute describes the main table's default route of family ("via
// TUN tg0", "via gateway 10.152.152.10 on eth0"), "" if there is none, or
// an error if the route can bypass torgate. Netlink, not /proc or /sys:
// sysfs may belong to another namespace, and it needs no privilege.
func defaultRoute(family int) (string, error) {
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("list routes: %w", err)
	}
	var def *netlink.Route
	for i, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.Type != unix.RTN_UNICAST {
			continue // an unreachable or blackhole default sends nothing anywhere
		}
		if def == nil || r.Priority < def.Priority {
			def = &routes[i]
		}
	}
	if def == nil {
		return "", nil
	}
	link, err := netlink.LinkByIndex(def.LinkIndex)
	if err != nil {
		return "", fmt.Errorf("default route's device (index %d): %w", def.LinkIndex, err)
	}
	dev := link.Attrs().Name
	if link.Type() == "tuntap" {
		return "via TUN " + dev, nil
	}
	if def.Gw == nil {
		return "", fmt.Errorf("default route via %s, which is neither a TUN device nor a gateway: traffic may bypass torgate", dev)
	}
	if def.Gw.IsLinkLocalUnicast() || def.Flags&unix.RTNH_F_ONLINK != 0 {
		return fmt.Sprintf("via gateway %s on %s", def.Gw, dev), nil
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return "", fmt.Errorf("addresses of %s: %w", dev, err)
	}
	for _, a := range addrs {
		if a.IPNet != nil && a.IPNet.Contains(def.Gw) {
			return fmt.Sprintf("via gateway %s on %s", def.Gw, dev), nil
		}
	}
	return "", fmt.Errorf("default route via %s on %s, which is on none of %s's networks", def.Gw, dev, dev)
}

// checkReady asks the admin endpoint's /readyz.
