package torgate

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate/lan"
)

// openTUN creates (or adopts) the TUN device described by cfg.
func openTUN(cfg *Config) (tun.Device, error) {
	switch {
	case cfg.Device != nil:
		return cfg.Device, nil
	case len(cfg.LAN) > 0:
		log := cfg.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		return lan.Open(lan.Config{Interfaces: cfg.LAN, Logger: log.With("component", "lan")})
	case cfg.TUNFD > 0:
		// Unmonitored: the TUN handed over may live in another network
		// namespace (a container's, a workstation's), where netlink from
		// here cannot see it. torgate needs no link events; the MTU
		// comes from the config.
		dev, _, err := tun.CreateUnmonitoredTUNFromFD(cfg.TUNFD)
		if err != nil {
			return nil, fmt.Errorf("adopt tun fd %d: %w (is it an open /dev/net/tun file descriptor?)", cfg.TUNFD, err)
		}
		return dev, nil
	default:
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			return nil, fmt.Errorf("create tun %q: /dev/net/tun missing (modprobe tun, or pass the device into the container): %w", cfg.TUNName, err)
		}
		dev, err := tun.CreateTUN(cfg.TUNName, cfg.MTU)
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("create tun %q: the name is taken by a TUN another process holds open (another torgate?); stop it or choose another --tun", cfg.TUNName)
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EEXIST):
			return nil, fmt.Errorf("create tun %q: %w (a link of another kind has that name; choose another --tun)", cfg.TUNName, err)
		case err != nil:
			return nil, fmt.Errorf("create tun %q: %w (creating a TUN needs CAP_NET_ADMIN; or hand one over with --tun-fd)", cfg.TUNName, err)
		}
		if err := configureLink(dev, cfg.Addr4, cfg.Addr6); err != nil {
			dev.Close()
			return nil, err
		}
		return dev, nil
	}
}

// tunQueueLen is the txqueuelen of a TUN torgate creates: room for every
// flow's closing RST at once, up to the default cap on open flows.
const tunQueueLen = 16384

// configureLink assigns the gateway addresses and brings the link up,
// through netlink (no ip(8) needed).
func configureLink(dev tun.Device, addrs ...netip.Prefix) error {
	name, err := dev.Name()
	if err != nil {
		return fmt.Errorf("tun name: %w", err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	for _, p := range addrs {
		if !p.IsValid() {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			// No duplicate address detection on a point-to-point TUN:
			// it would hold the address "tentative" for a second.
			a.Flags = 0x80 // IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, a); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("add address %s to %s: %w", p, name, err)
		}
	}
	// txqueuelen sizes the ring of packets the kernel holds for torgate
	// to read. At the default 500, closing 10k flows at once dropped 52k
	// of the workstation's packets (its FINs, ACKs and RSTs) before
	// torgate could read them (issue 11, measured 2026-12-02); a lost
	// RST is never sent again.
	if err := netlink.LinkSetTxQLen(link, tunQueueLen); err != nil {
		return fmt.Errorf("set txqueuelen of %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
