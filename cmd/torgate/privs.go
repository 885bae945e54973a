package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/torgate/torgate/internal/privs"
)

// Where torgate drops its capabilities, and what it keeps:
//
//   - torgate run: at the end of startApp, once the TUN, Tor and the admin
//     endpoint are up. It keeps CAP_NET_ADMIN (netlink and TUN changes
//     while it runs, and tearing down what it set up), and what its Tor
//     needs (torctl's Tor.Privileges: for a managed Tor of another user,
//     CAP_SETUID and CAP_SETGID to restart it as that user and CAP_KILL to
//     stop it). Tor's sockets and cookie are reached through their group
//     (torctl's run directory), so no CAP_DAC_OVERRIDE.
//   - torgate exec: only after its command has started. Before, it needs
//     CAP_SYS_ADMIN (mount namespace, bind mount) and CAP_SETUID/SETGID to
//     start the command as the target user. It keeps CAP_KILL (the
//     command and Tor run as other users) and what its Tor needs
//     (Tor.Privileges).
//
// The uid stays 0. --keep-privileges skips the drop, for debugging.

// dropPrivileges keeps only keep, unless keepAll. A process with no
// capabilities to drop (not root) is left alone; a binary built with cgo
// cannot drop them on every thread and only warns (privs.ErrCgo).
func dropPrivileges(log *slog.Logger, keepAll bool, keep privs.Set) error {
	before, err := privs.Read(0)
	if errors.Is(err, privs.ErrUnsupported) {
		return nil
	}
	if err != nil {
		return err
	}
	if before.Effective&^keep == 0 && before.Permitted&^keep == 0 {
		return nil
	}
	if keepAll {
		log.Warn("--keep-privileges: keeping every capability", "effective", fmt.Sprintf("%016x", uint64(before.Effective)))
		return nil
	}
	if err := privs.Keep(keep); err != nil {
		if errors.Is(err, privs.ErrCgo) {
			log.Warn("capabilities not dropped", "err", err)
			return nil
		}
		return fmt.Errorf("drop privileges (--keep-privileges skips this): %w", err)
	}
	after, err := privs.Read(0)
	if err != nil {
		return err
	}
	log.Info("privileges dropped", "kept", keep.String(),
		"effective_before", fmt.Sprintf("%016x", uint64(before.Effective)),
		"effective", fmt.Sprintf("%016x", uint64(after.Effective)),
		"bounding", fmt.Sprintf("%016x", uint64(after.Bounding)))
	return nil
}
