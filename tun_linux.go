package torgate

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate/internal/lan"
	"github.com/torgate/torgate/internal/netconf"
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

// configureLink assigns the gateway addresses and brings the link up.
func configureLink(dev tun.Device, addrs ...netip.Prefix) error {
	name, err := dev.Name()
	if err != nil {
		return fmt.Errorf("tun name: %w", err)
	}
	// txqueuelen sizes the ring of packets the kernel holds for torgate
	// to read. At the default 500, closing 10k flows at once dropped 52k
	// of the workstation's packets (its FINs, ACKs and RSTs) before
	// torgate could read them (issue 11, measured 2026-12-02); a lost
	// RST is never sent again.
	return netconf.Configure(name, netconf.Link{Addrs: addrs, TxQueueLen: tunQueueLen})
}
