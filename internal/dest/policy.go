package dest

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Policy is the destination policy of one router: the built-in rules
// (Forbidden) plus the operator's prefixes (the gateway's own networks,
// its LANs, the DNS virtual pools) and the gateway's own addresses. The
// router builds one and hands the same value to the tunnel (flows) and
// the DNS server (literals and resolve-mode answers), so that every road
// to an address meets one decision. A nil *Policy applies the built-in
// rules only. It is safe for concurrent use and immutable once built.
type Policy struct {
	prefixes []netip.Prefix
	own      func(netip.Addr) bool
}

// NewPolicy returns the policy forbidding, beyond the built-in rules,
// every address in prefixes (ReasonOperator) and every address for which
// own reports true (ReasonGateway; nil: none). own is asked per
// destination, so that an uplink address that changes is seen as it is
// now; it must be cheap and safe for concurrent use. Invalid prefixes are
// an error; the others are masked.
func NewPolicy(prefixes []netip.Prefix, own func(netip.Addr) bool) (*Policy, error) {
	p := &Policy{prefixes: slices.Clone(prefixes), own: own}
	for i, pr := range p.prefixes {
		if !pr.IsValid() {
			return nil, fmt.Errorf("%w: prefix %d", ErrInvalidPrefix, i)
		}
		p.prefixes[i] = pr.Masked()
	}
	return p, nil
}

// ErrInvalidPrefix is NewPolicy's error for an invalid prefix.
var ErrInvalidPrefix = errors.New("dest: invalid prefix")

// Forbidden classifies ip: the built-in rules first, then the operator's
// prefixes, then the gateway's own addresses.
func (p *Policy) Forbidden(ip netip.Addr) Reason {
	if r := Forbidden(ip); r != ReasonAllowed || p == nil {
		return r
	}
	ip = ip.WithZone("").Unmap()
	for _, pr := range p.prefixes {
		if pr.Contains(ip) {
			return ReasonOperator
		}
	}
	if p.own != nil && p.own(ip) {
		return ReasonGateway
	}
	return ReasonAllowed
}
