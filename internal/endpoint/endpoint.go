// Package endpoint parses the one address syntax torgate uses for every
// local endpoint it dials or listens on (Tor's SocksPort and control
// port, the admin endpoint): "IP:port", "/path" or "unix:/path".
//
// There is no name lookup: torgate must not depend on DNS to find Tor or
// its own admin socket.
package endpoint

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// MaxUnixPath is the longest unix socket path Linux accepts: sun_path is
// 108 bytes including the terminating NUL.
const MaxUnixPath = 107

// ErrSyntax is wrapped by every error Parse returns.
var ErrSyntax = errors.New("not IP:port, /path or unix:/path")

// Endpoint is a parsed address, ready for net.Dial or net.Listen.
type Endpoint struct {
	Network string // "tcp" or "unix"
	Address string // "IP:port" (canonical) or the socket path
}

// Parse reads "IP:port" (port not 0), "/path" or "unix:/path".
func Parse(s string) (Endpoint, error) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok || strings.HasPrefix(s, "/") {
		if !ok {
			p = s
		}
		if p == "" || len(p) > MaxUnixPath || strings.IndexByte(p, 0) >= 0 {
			return Endpoint{}, fmt.Errorf("unix socket path %q is empty, longer than %d bytes or contains NUL: %w", p, MaxUnixPath, ErrSyntax)
		}
		return Endpoint{Network: "unix", Address: p}, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return Endpoint{}, fmt.Errorf("%q: %w (no DNS lookup is done for it)", s, ErrSyntax)
	}
	return Endpoint{Network: "tcp", Address: ap.String()}, nil
}

// String returns the endpoint in the syntax Parse reads: "unix:/path" or
// "IP:port".
func (e Endpoint) String() string {
	if e.Network == "unix" {
		return "unix:" + e.Address
	}
	return e.Address
}
