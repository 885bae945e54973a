package tunnel

import (
	"net/netip"

	"github.com/torgate/torgate/internal/dest"
)

// Forbidden classifies ip by the built-in rules (the package-level
// Forbidden) and then by Config.ForbiddenDestinations. The router hands
// this method to the DNS server too, so that names, literals and flows all
// meet the same policy.
func (t *Tunnel) Forbidden(ip netip.Addr) dest.Reason {
	if r := dest.Forbidden(ip); r != dest.ReasonAllowed {
		return r
	}
	ip = ip.WithZone("").Unmap()
	for _, p := range t.cfg.ForbiddenDestinations {
		if p.Contains(ip) {
			return dest.ReasonOperator
		}
	}
	if t.cfg.OwnAddress != nil && t.cfg.OwnAddress(ip) {
		return dest.ReasonGateway
	}
	return dest.ReasonAllowed
}
