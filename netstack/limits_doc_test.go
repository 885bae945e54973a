package netstack

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
	"github.com/torgate/torgate/internal/fair"
)

// TestLimitsDoc holds netstack's rows of docs/limits.md to its constants
// (port 53's pools are dns's).
func TestLimitsDoc(t *testing.T) {
	pending := fair.Default(defaultMaxInFlight, defaultMaxInFlightPerSource)
	doccheck.Limits(t, doccheck.GroupNetstack, map[string][]any{
		"TCP keepalive": {keepaliveIdle, keepaliveCount, keepaliveInterval},
		"handshakes pending (SYN held while Tor dials, then the handshake)": {
			defaultMaxInFlight, defaultMaxInFlightPerSource, pending.Reserve, pending.MinShare, handshakeTimeout,
		},
		"outbound queue to the workstations": {outboundQueueLen, outboundControlLen},
		"TIME_WAIT (torgate closed first)":   {timeWait},
	})
}
