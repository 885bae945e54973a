package torgate_test

import (
	"strings"
	"testing"

	"github.com/torgate/torgate"
)

// TestLANExcludesTUN: LAN is one of the device choices, never two.
func TestLANExcludesTUN(t *testing.T) {
	for _, c := range []torgate.Config{
		{LAN: []string{"eth1"}, TUNName: "torgate0", SocksAddr: "127.0.0.1:9050"},
		{LAN: []string{"eth1"}, TUNFD: 3, SocksAddr: "127.0.0.1:9050"},
	} {
		if _, err := torgate.New(c); err == nil || !strings.Contains(err.Error(), "exactly one of Device, TUNFD, TUNName and LAN") {
			t.Errorf("New(%+v): %v", c, err)
		}
	}
}
