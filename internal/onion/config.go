package onion

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/torgate/torgate/internal/defaults"
	"github.com/torgate/torgate/internal/endpoint"
)

// Entry is one port of an onion service: connections to the service's
// virtual Port are relayed to Target, a service on a workstation.
type Entry struct {
	// Port is the onion service's virtual port, 1-65535.
	Port uint16
	// Target is the workstation's address and port. Entries with the
	// same target address are one service (one .onion address).
	Target netip.AddrPort
}

func (e Entry) String() string { return fmt.Sprintf("%d -> %v", e.Port, e.Target) }

// Config configures a Server. Field comments are the reference; the zero
// value of every optional field takes the documented default.
type Config struct {
	// Entries are the onion ports. Required (at least one); a virtual
	// port appears at most once per service.
	Entries []Entry
	// StateDir is torgate's state directory. The keys live in
	// StateDir/onion (created 0700), one file per service named after its
	// target address: changing a workstation's address changes its
	// service's .onion address unless the key file is renamed. Required.
	StateDir string
	// SocketDir holds the unix sockets Tor connects to, one per entry.
	// Default StateDir/onion-sock. Its path must leave room for
	// "/s99-65535.sock" within the 107 bytes of a unix socket path, and
	// have no spaces, quotes, '#' or '%' (the path goes into ADD_ONION
	// unquoted). Created (or taken over) by New; stale sockets in it are
	// removed.
	SocketDir string
	// TorUser is the account Tor runs as (torctl.Config.User for a
	// managed Tor; the system tor's, "debian-tor" on Debian, for an
	// attached one), which must connect to the sockets. Empty, or
	// torgate's own user: SocketDir is 0700 and the sockets 0600, for a
	// Tor that runs as torgate's user. Another user: SocketDir gets that
	// user's primary group, mode 0750, and the sockets the same group,
	// mode 0660, so Tor reaches them as a group member and nobody else
	// does (this needs CAP_CHOWN in New, as root has). Every directory
	// above SocketDir must be searchable by that user: SocketDir's
	// parent, if torgate owns it, gets o+x (others may pass through, not
	// list), as torctl does for a managed Tor's data directory; any other
	// that is not is an error naming it.
	TorUser string
	// Dial connects to a declared Target. It must dial from torgate's own
	// gVisor stack (netstack.Stack.DialTCP, from the gateway's address on
	// the workstations' network), never a kernel socket: the gateway's
	// kernel must never send a packet into the LAN. It is only ever
	// called with an Entry's Target. Required.
	Dial func(ctx context.Context, target netip.AddrPort) (net.Conn, error)
	// MaxConns caps the connections relayed at once, over all services;
	// beyond it Tor's connection is closed at once (Tor ends the stream).
	// Default 256.
	MaxConns int
	// MaxConnsPerService is one service's share of MaxConns, so that one
	// busy (or attacked) service cannot starve the others. Default 64,
	// at most MaxConns.
	MaxConnsPerService int
	// DialTimeout bounds the dial of a target. A workstation on the LAN
	// answers within milliseconds; one that is off does not answer at
	// all, and Tor's client waits meanwhile. Default 10s.
	DialTimeout time.Duration
	// HalfCloseTimeout bounds how long one direction may go on after the
	// other ended (Tor hardly half-closes: its streams end whole). Default
	// 30s.
	HalfCloseTimeout time.Duration
	// Logger; nil discards. Targets are never logged.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultMaxConns           = 256
	DefaultMaxConnsPerService = 64
	DefaultDialTimeout        = 10 * time.Second
	DefaultHalfCloseTimeout   = 30 * time.Second
)

// maxServices bounds the services (distinct target addresses): socket
// names carry a two-digit service index, and each service costs Tor an
// introduction-point set.
const maxServices = 100

// ErrConfig is wrapped by every Config error. Fatal: nothing started.
var ErrConfig = errors.New("onion: bad configuration")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}

// validate fills in the defaults and checks c.
func (c *Config) validate() error {
	if len(c.Entries) == 0 {
		return configErr("no entries")
	}
	if c.StateDir == "" {
		return configErr("StateDir is required")
	}
	if c.Dial == nil {
		return configErr("Dial is required")
	}
	for _, v := range []int{c.MaxConns, c.MaxConnsPerService} {
		if v < 0 {
			return configErr("negative limit")
		}
	}
	if c.DialTimeout < 0 || c.HalfCloseTimeout < 0 {
		return configErr("negative timeout")
	}
	defaults.Set(&c.MaxConns, DefaultMaxConns)
	defaults.Set(&c.MaxConnsPerService, min(DefaultMaxConnsPerService, c.MaxConns))
	if c.MaxConnsPerService > c.MaxConns {
		return configErr("MaxConnsPerService %d above MaxConns %d", c.MaxConnsPerService, c.MaxConns)
	}
	defaults.Set(&c.DialTimeout, DefaultDialTimeout)
	defaults.Set(&c.HalfCloseTimeout, DefaultHalfCloseTimeout)
	dir, err := filepath.Abs(c.StateDir)
	if err != nil {
		return configErr("StateDir: %v", err)
	}
	c.StateDir = dir
	if c.SocketDir == "" {
		c.SocketDir = filepath.Join(c.StateDir, "onion-sock")
	}
	if c.SocketDir, err = filepath.Abs(c.SocketDir); err != nil {
		return configErr("SocketDir: %v", err)
	}
	// The socket path goes into ADD_ONION as Port=N,unix:PATH, unquoted
	// (tor 0.4.9.11 accepts that; quoting rules differ between versions).
	if strings.ContainsAny(c.SocketDir, " \t\r\n\"\\'#%,=") {
		return configErr("SocketDir %q: use a path without spaces, quotes, ',', '=', '#' or '%%'", c.SocketDir)
	}
	if len(c.SocketDir)+len("/s99-65535.sock") > endpoint.MaxUnixPath {
		return configErr("SocketDir %q is too long for unix socket paths in it (at most %d bytes)", c.SocketDir, endpoint.MaxUnixPath-len("/s99-65535.sock"))
	}
	for _, e := range c.Entries {
		if err := checkEntry(e); err != nil {
			return err
		}
	}
	return nil
}

// checkEntry checks one entry on its own.
func checkEntry(e Entry) error {
	a := e.Target.Addr()
	switch {
	case e.Port == 0:
		return configErr("entry %v: onion port 0", e)
	case !a.IsValid():
		return configErr("entry for onion port %d: no target", e.Port)
	case e.Target.Port() == 0:
		return configErr("entry %v: target port 0", e)
	case a.Zone() != "":
		return configErr("entry %v: a target address with a zone", e)
	case a.Is4In6():
		return configErr("entry %v: write an IPv4 target as IPv4", e)
	case !a.IsGlobalUnicast() && !a.IsLinkLocalUnicast():
		// Loopback would be the gateway itself; multicast, broadcast and
		// unspecified are no workstation.
		return configErr("entry %v: the target must be a workstation's unicast address", e)
	}
	return nil
}

// group turns entries into services: one per target address, sorted by
// address, each with its entries sorted by virtual port.
func group(entries []Entry) ([][]Entry, error) {
	es := slices.Clone(entries)
	slices.SortFunc(es, func(a, b Entry) int {
		if c := a.Target.Addr().Compare(b.Target.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Port, b.Port)
	})
	var out [][]Entry
	for i, e := range es {
		if i > 0 && es[i-1].Target.Addr() == e.Target.Addr() {
			if es[i-1].Port == e.Port {
				return nil, configErr("onion port %d of the service for one workstation is given twice", e.Port)
			}
			out[len(out)-1] = append(out[len(out)-1], e)
			continue
		}
		out = append(out, []Entry{e})
	}
	if len(out) > maxServices {
		return nil, configErr("%d services (distinct targets); at most %d", len(out), maxServices)
	}
	return out, nil
}
