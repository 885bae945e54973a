package netstack

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
	"github.com/torgate/torgate/internal/fair"
)

// TestLimitsDocDNS holds the rows of docs/limits.md for the DNS worker
// and DNS-over-TCP pools to their defaults. A file of its own, so that it
// moves whole with the pools.
func TestLimitsDocDNS(t *testing.T) {
	udp := fair.Default(defaultDNSWorkers, defaultDNSWorkersPerSource)
	tcp := fair.Default(defaultDNSTCPConns, defaultDNSTCPConnsPerSource)
	doccheck.Limits(t, doccheck.GroupNetstackDNS, map[string][]any{
		"UDP DNS answers in progress": {defaultDNSWorkers, defaultDNSWorkersPerSource, udp.Reserve, udp.MinShare},
		"DNS-over-TCP connections":    {defaultDNSTCPConns, defaultDNSTCPConnsPerSource, tcp.Reserve, tcp.MinShare},
	})
}
