package socksport

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
	"github.com/torgate/torgate/internal/fair"
)

// TestLimitsDoc holds the SOCKS ports' rows of docs/limits.md to their
// constants.
func TestLimitsDoc(t *testing.T) {
	hs := fair.Default(DefaultMaxHandshakes, DefaultMaxHandshakesPerSource)
	doccheck.Limits(t, doccheck.GroupSocksport, map[string][]any{
		"SOCKS-port handshake":              {DefaultHandshakeTimeout},
		"SOCKS-port handshakes in progress": {DefaultMaxHandshakes, DefaultMaxHandshakesPerSource, hs.Reserve, hs.MinShare},
	})
}
