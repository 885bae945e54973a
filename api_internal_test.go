package torgate

import (
	"testing"

	"github.com/torgate/torgate/dns"
	"github.com/torgate/torgate/internal/torctl"
	"github.com/torgate/torgate/tunnel"
)

// TestAPIMirrorsComponents: the root package's own types carry the same
// values as the components they are converted to, so that the public
// contract can stay while the components change.
func TestAPIMirrorsComponents(t *testing.T) {
	for m, want := range map[Isolation]tunnel.IsolationMode{
		IsolateSource: tunnel.IsolateSource, IsolateDestination: tunnel.IsolateDestination, IsolateNone: tunnel.IsolateNone,
	} {
		if tunnel.IsolationMode(m) != want || m.String() != want.String() {
			t.Errorf("Isolation %d is %v in tunnel", m, want)
		}
	}
	for m, want := range map[DNSMode]dns.Mode{DNSAutomap: dns.ModeAutomap, DNSResolve: dns.ModeResolve} {
		if dns.Mode(m) != want || m.String() != want.String() {
			t.Errorf("DNSMode %d is %v in dns", m, want)
		}
	}
	if DefaultDNSPool4 != dns.DefaultPool4 || DefaultDNSPool6 != dns.DefaultPool6 {
		t.Error("the default pools differ from dns's")
	}
	if NewNymInterval != torctl.NewNymInterval || (&RateLimitError{Wait: 1}).Error() != (&torctl.RateLimitError{Wait: 1}).Error() {
		t.Error("RateLimitError differs from torctl's")
	}
}
