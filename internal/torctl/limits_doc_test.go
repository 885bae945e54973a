package torctl

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
)

// TestLimitsDoc holds the Tor supervision rows of docs/limits.md to the
// constants.
func TestLimitsDoc(t *testing.T) {
	doccheck.Limits(t, doccheck.GroupTorctl, map[string][]any{
		"Tor control probe":       {DefaultPollInterval, DefaultProbeDeadline},
		"attach-mode reconnect":   {DefaultReconnectInterval},
		"managed Tor restart":     {firstRestart, DefaultRestartBackoff, DefaultMaxRestartBackoff, DefaultStableAfter},
		"bootstrap stall warning": {DefaultBootstrapStall},
	})
}
