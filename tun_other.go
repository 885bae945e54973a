//go:build !linux

package torgate

import (
	"errors"
	"fmt"
	"runtime"

	"golang.zx2c4.com/wireguard/tun"
)

// torgate runs on Linux only: it creates and configures its TUN through
// /dev/net/tun and netlink, and "torgate exec" needs Linux namespaces.
//
// Elsewhere the module still compiles, on purpose, and the Linux-only
// parts fail at run time with an error that wraps errors.ErrUnsupported.
// torgate is a library as well as a command: a developer on macOS or
// Windows whose project imports it must be able to run go build, go vet,
// gopls and the tests of their own code. A build-constrained file with a
// deliberate compile error would break all of that for every importer,
// for a function they may never call on that machine. A Router handed a
// tun.Device in Config.Device needs nothing from the OS, so it works.

// errLinuxOnly is what the Linux-only parts return on other systems.
var errLinuxOnly = fmt.Errorf("torgate runs on Linux only (this is %s): %w", runtime.GOOS, errors.ErrUnsupported)

// openTUN returns the device from cfg.Device; creating or adopting a TUN
// is implemented for Linux only.
func openTUN(cfg *Config) (tun.Device, error) {
	if cfg.Device != nil {
		return cfg.Device, nil
	}
	return nil, fmt.Errorf("create tun %q: %w; pass a tun.Device in Config.Device", cfg.TUNName, errLinuxOnly)
}
