package dns

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
)

// TestLimitsDoc holds dns's rows of docs/limits.md to its constants and
// to the defaults Config applies.
func TestLimitsDoc(t *testing.T) {
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	doccheck.Limits(t, doccheck.GroupDNS, map[string][]any{
		"a DNS-over-TCP connection": {TCPIdle, TCPMaxLife, TCPMaxQueries},
		"automap entries":           {cfg.MaxEntries, cfg.MaxEntriesPerSource},
	})
}
