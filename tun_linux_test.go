package torgate_test

import (
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/nstest"
)

// TestTUNNameTaken: a TUN name another process holds is a one-line error
// that names the cause, not a capability hint.
func TestTUNNameTaken(t *testing.T) {
	nstest.RequireRoot(t)
	const name = "tgtaken0"
	dev, err := tun.CreateTUN(name, 1500)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	_, err = torgate.New(torgate.Config{TUNName: name, SocksAddr: "127.0.0.1:9"})
	if err == nil || !strings.Contains(err.Error(), "taken") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v, want one line saying the name is taken", err)
	}
	t.Log(err)
}
