package tunnel

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
	"github.com/torgate/torgate/internal/fair"
)

// TestLimitsDoc holds tunnel's rows of docs/limits.md to its constants.
func TestLimitsDoc(t *testing.T) {
	flows := fair.Default(DefaultMaxFlows, DefaultMaxFlowsPerSource)
	doccheck.Limits(t, doccheck.GroupTunnel, map[string][]any{
		"SOCKS dial timeout":      {DefaultDialTimeout},
		"idle flow":               {DefaultIdleTimeout},
		"half-closed flow":        {DefaultHalfCloseTimeout},
		"SOCKS dials in progress": {DefaultMaxDialsPerSource},
		"open flows":              {DefaultMaxFlows, DefaultMaxFlowsPerSource, flows.Reserve, flows.MinShare},
		"memory after a peak":     {freeMemoryDelay, freeMemoryDrop, freeMemoryEvery},
		"new circuits per workstation (per-destination isolation, SOCKS-port credentials)": {newHostBurst, newHostEvery, maxHostsPerSource},
	})
}
