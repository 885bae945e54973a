package dest

import (
	"errors"
	"net/netip"
	"testing"
)

// TestPolicy: the operator's prefixes and the gateway's own addresses
// come on top of the built-in rules, in that order, whatever form the
// address takes; a nil Policy is the built-in rules.
func TestPolicy(t *testing.T) {
	uplink := netip.MustParseAddr("2001:db8:1e01::1")
	p, err := NewPolicy([]netip.Prefix{netip.MustParsePrefix("198.51.100.7/24")},
		func(a netip.Addr) bool { return a == uplink })
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ip   string
		want Reason
	}{
		{"198.51.100.200", ReasonOperator},
		{"::ffff:198.51.100.1", ReasonOperator},
		{"2001:db8:1e01::1", ReasonGateway},
		{"127.0.0.1", ReasonLoopback},
		{"192.0.2.8", ReasonAllowed},
	} {
		if got := p.Forbidden(netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("%s: %v, want %v", c.ip, got, c.want)
		}
	}
	var none *Policy
	if got := none.Forbidden(netip.MustParseAddr("198.51.100.200")); got != ReasonAllowed {
		t.Errorf("nil policy: %v", got)
	}
	if got := none.Forbidden(netip.MustParseAddr("10.0.0.1")); got != ReasonPrivate {
		t.Errorf("nil policy, built-in rule: %v", got)
	}
	if _, err := NewPolicy([]netip.Prefix{{}}, nil); !errors.Is(err, ErrInvalidPrefix) {
		t.Errorf("invalid prefix: %v", err)
	}
}
