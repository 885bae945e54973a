//go:build linux

// Linux only: the TUN's txqueuelen is set where torgate creates a TUN
// (tun_linux.go).

package torgate

import (
	"testing"
	"time"

	"github.com/torgate/torgate/internal/doccheck"
	"github.com/torgate/torgate/internal/torctl"
)

// TestLimitsDoc holds the root package's rows of docs/limits.md, and those
// of Tor's supervision (torctl's exported defaults, which the router
// uses), to the constants.
func TestLimitsDoc(t *testing.T) {
	// TODO(issue 20): torctl's firstRestart (200 ms) is unexported; a
	// limits_doc_test.go in internal/torctl should check this row.
	const firstRestart = 200 * time.Millisecond
	doccheck.Limits(t, doccheck.GroupTorgate, map[string][]any{
		"TUN txqueuelen (created TUN)":     {tunQueueLen},
		"Tor control probe":                {torctl.DefaultPollInterval, torctl.DefaultProbeDeadline},
		"attach-mode reconnect":            {torctl.DefaultReconnectInterval},
		"managed Tor restart":              {firstRestart, torctl.DefaultRestartBackoff, torctl.DefaultMaxRestartBackoff, torctl.DefaultStableAfter},
		"FIN on an upstream end of stream": {eofGrace, eofGrace},
		"bootstrap stall warning":          {torctl.DefaultBootstrapStall},
	})
}
