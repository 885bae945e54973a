package main

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// writableDir reports whether this process may create files in the
// directory d (access(2), which counts capabilities such as
// CAP_DAC_OVERRIDE as the kernel will).
func writableDir(d string) error {
	return unix.Access(d, unix.W_OK|unix.X_OK)
}

// tunNameFree reports whether a TUN may be created by name: no interface
// of another kind has it (a TUN of that name, torgate's own from a
// running or earlier instance, is the kernel's to refuse or reuse).
func tunNameFree(name string) error {
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		return nil
	case err != nil:
		return nil // unknown: let the creation say
	case l.Type() != "tuntap":
		return fmt.Errorf("interface %s exists and is a %s, not a TUN", name, l.Type())
	}
	return nil
}
