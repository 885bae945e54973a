package upstream

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
)

// TestLimitsDoc holds the SOCKS liveness rows of docs/limits.md to the
// constants.
func TestLimitsDoc(t *testing.T) {
	doccheck.Limits(t, doccheck.GroupUpstream, map[string][]any{
		"SOCKS greeting stall": {upstreamStallAfter},
		"plain SOCKS probe":    {upstreamProbeEvery, upstreamRetryEvery, upstreamProbeTimeout},
	})
}
