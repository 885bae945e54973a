package ctlport

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
	"github.com/torgate/torgate/internal/fair"
)

// TestLimitsDoc holds the control port's rows of docs/limits.md to its
// constants.
func TestLimitsDoc(t *testing.T) {
	l := fair.Default(DefaultMaxConns, DefaultMaxConnsPerSource)
	doccheck.Limits(t, doccheck.GroupCtlport, map[string][]any{
		"control port connections (9051)": {DefaultMaxConns, DefaultMaxConnsPerSource, l.Reserve, l.MinShare},
		"a control port connection": {DefaultMaxLine, maxDataBytes, PreAuthTimeout, maxPreAuthCommands,
			CommandRate, CommandBurst, NewNymInterval},
		"control port answers from Tor": {infoTTL, torTimeout},
	})
}
