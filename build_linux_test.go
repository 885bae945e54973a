package torgate

import (
	"errors"
	"net"
	"os/exec"
	"testing"

	"github.com/torgate/torgate/internal/netns"
	"github.com/torgate/torgate/internal/nstest"
)

// TestNewContextUndoesTUN: a NewContext that created a TUN by name and
// then failed removes it: the name is free again, in a namespace this
// test creates.
func TestNewContextUndoesTUN(t *testing.T) {
	nstest.RequireRoot(t, "ip")
	const ns, name = "tgbuild", "tgbuild0"
	exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, step := range buildSteps[3+1:] { // every step after "device"
		err := netns.Do(ns, func() error {
			_, err := New(Config{TUNName: name, SocksAddr: "127.0.0.1:9", failAt: step})
			if !errors.Is(err, errInjected) {
				t.Errorf("%s: err = %v, want the injected failure", step, err)
			}
			if _, err := net.InterfaceByName(name); err == nil {
				t.Errorf("%s: the TUN %s is still there", step, name)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
