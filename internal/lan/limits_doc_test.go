package lan

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
)

// TestLimitsDoc holds the LAN row of docs/limits.md to the neighbour
// table's constants.
func TestLimitsDoc(t *testing.T) {
	doccheck.Limits(t, doccheck.GroupLAN, map[string][]any{
		"LAN neighbour resolution (`--lan`)": {maxProbes, probeInterval, failedHold, staleAfter, maxNeighbours},
	})
}
