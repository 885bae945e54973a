package onion

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
)

// TestLimitsDoc holds the onion row of docs/limits.md to the constants.
func TestLimitsDoc(t *testing.T) {
	doccheck.Limits(t, doccheck.GroupOnion, map[string][]any{
		"onion service connections": {DefaultMaxConns, DefaultMaxConnsPerService, DefaultDialTimeout, DefaultHalfCloseTimeout},
	})
}
