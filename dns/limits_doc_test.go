package dns

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
	"github.com/torgate/torgate/internal/fair"
)

// TestLimitsDoc holds dns's rows of docs/limits.md to its constants and
// to the defaults Config applies.
func TestLimitsDoc(t *testing.T) {
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	udp := fair.Default(DefaultWorkers, DefaultWorkersPerSource)
	tcp := fair.Default(DefaultTCPConns, DefaultTCPConnsPerSource)
	doccheck.Limits(t, doccheck.GroupDNS, map[string][]any{
		"UDP DNS answers in progress": {DefaultWorkers, DefaultWorkersPerSource, udp.Reserve, udp.MinShare},
		"DNS-over-TCP connections":    {DefaultTCPConns, DefaultTCPConnsPerSource, tcp.Reserve, tcp.MinShare},
		"a DNS-over-TCP connection":   {TCPIdle, TCPMaxLife, TCPMaxQueries},
		"automap entries":             {cfg.MaxEntries, cfg.MaxEntriesPerSource},
	})
}
