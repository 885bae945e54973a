package torgate_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/testnet"
)

// TestTorInstancesIntegration runs torgate with two managed tors on the
// private Tor network and two workstations, one on each instance. Both
// fetch; killing one instance's tor refuses its workstation until the
// instance is back, while the other workstation keeps fetching.
func TestTorInstancesIntegration(t *testing.T) {
	nstest.RequireRoot(t, "curl")
	testnet.Require(t)
	netDir := t.TempDir()
	for _, d := range []string{filepath.Dir(netDir), netDir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	n, err := testnet.Start(ctx, testnet.Config{Dir: netDir, Logger: testlog.New(t, slog.LevelWarn)})
	cancel()
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	g := newGateway(t, torgate.Config{ManagedTor: &torgate.ManagedTor{
		DataDir:        filepath.Join(netDir, "managed-tor"),
		User:           "debian-tor",
		TorrcLines:     append(n.ClientTorrc(), "MapAddress "+byIPAddr+" "+n.WebAddr.Addr().String()),
		Instances:      2,
		RestartBackoff: 3 * time.Second,
	}})
	a := netip.MustParseAddr(sourceA)
	ka := g.router.TorInstance(a)
	var b netip.Addr
	for i := 12; i < 60; i++ {
		c := netip.AddrFrom4([4]byte{10, 152, 152, byte(i)})
		if g.router.TorInstance(c) != ka {
			b = c
			break
		}
	}
	if !b.IsValid() {
		t.Fatal("no address on the other instance")
	}
	kb := g.router.TorInstance(b)
	if out, err := exec.Command("ip", "-n", g.ws.Name, "addr", "add", b.String()+"/18", "dev", "tg0").CombinedOutput(); err != nil {
		t.Fatalf("add %v: %v: %s", b, err, out)
	}
	ctx = t.Context()
	from := func(src netip.Addr, maxTime string) int {
		_, code := g.curl(ctx, "--interface", src.String(), "--max-time", maxTime, ipURL(n, "/"))
		return code
	}
	for _, src := range []netip.Addr{a, b} {
		if code := from(src, "60"); code != 0 {
			t.Fatalf("fetch from %v (instance %d): curl exit %d", src, g.router.TorInstance(src), code)
		}
	}
	pid := g.router.TorOf(kb).PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "instance "+strconv.Itoa(kb)+" not ready", func() bool { return g.router.TorInstanceErr(kb) != nil })
	if code := from(b, "5"); code == 0 {
		t.Error("b fetched while its instance was down")
	}
	if code := from(a, "60"); code != 0 {
		t.Errorf("a (instance %d) while instance %d is down: curl exit %d", ka, kb, code)
	}
	took := waitUntil(t, readyWithin, "instance back", func() bool { return g.router.TorInstanceErr(kb) == nil })
	t.Logf("instance %d back %v after the kill was seen", kb, took.Round(time.Millisecond))
	if code := from(b, "60"); code != 0 {
		t.Errorf("b after its instance came back: curl exit %d", code)
	}
	if g.router.TorOf(kb).PID() == pid {
		t.Error("instance not restarted")
	}
}
