// Package netconf configures network links over netlink (no ip(8)
// needed): the one place torgate assigns addresses, sets a link's
// transmit queue, brings it up and adds on-link routes. The router's TUN
// (tun_linux.go) and torgate exec's namespace use it. Package lan keeps
// what only a LAN gateway does: macvtap links (created down, opened, set
// allmulticast, then up, in that order) and its guard rules, through a
// netlink handle it holds per network namespace because it re-attaches
// later from any thread; none of that is address or route set-up.
//
// Linux only.
package netconf
