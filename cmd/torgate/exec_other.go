//go:build !linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime"
)

// The command builds on every OS, as the library does (see the torgate
// package's tun_other.go); "run" fails when it opens the TUN, and "exec"
// here, since it needs Linux's network and mount namespaces.

var errLinuxOnly = fmt.Errorf("torgate runs on Linux only (this is %s): %w", runtime.GOOS, errors.ErrUnsupported)

// execServices: exec has no namespace, hence no service addresses, here.
var execServices []netip.Addr

func cmdExec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return fmt.Errorf("exec: %w", errLinuxOnly)
}

func execChild(args []string) error { return fmt.Errorf("exec: %w", errLinuxOnly) }
