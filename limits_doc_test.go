//go:build linux

// Linux only: the TUN's txqueuelen is set where torgate creates a TUN
// (tun_linux.go).

package torgate

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
	"github.com/torgate/torgate/internal/torctl"
)

// TestLimitsDoc holds the root package's rows of docs/limits.md to the
// constants.
func TestLimitsDoc(t *testing.T) {
	doccheck.Limits(t, doccheck.GroupTorgate, map[string][]any{
		"TUN txqueuelen (created TUN)":     {tunQueueLen},
		"FIN on an upstream end of stream": {torctl.DefaultProbeDeadline, eofGrace},
	})
}
