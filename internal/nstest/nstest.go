// Package nstest builds the standard integration-test host: a network
// namespace whose only route is a real TUN device owned by the test
// process, as a workstation behind torgate would see it. Requires root
// (CAP_NET_ADMIN and CAP_SYS_ADMIN).
//
// Integration is the one gate of every test that needs root, namespaces,
// TUN, a real tor or RSS measurements: they run under CI=true (where a
// missing capability or tool fails the test instead of skipping it) or
// TORGATE_TEST_INTEGRATION=1, and skip otherwise.
package nstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate/internal/netns"
	"github.com/torgate/torgate/internal/nstest/gate"
)

// Integration gates a test that needs more than the Go toolchain: root,
// network namespaces, TUN, a real tor or a private Tor network
// (internal/testnet), or that measures the process's memory. It runs
// under CI=true or TORGATE_TEST_INTEGRATION=1 and skips otherwise;
// TORGATE_TEST_HERMETIC=1 skips it even under CI. gate.Integration says
// more; it lives in a package of its own only so that a test which must
// not link cgo (internal/privs) can call it.
func Integration(tb testing.TB) {
	tb.Helper()
	gate.Integration(tb)
}

// CI reports whether the tests run under CI (CI=true), where a missing
// requirement of an integration test is a failure, not a skip.
func CI() bool { return gate.CI() }

// RequireRoot skips (or, under CI, fails) a test that needs root and the
// given commands. It calls Integration first: without CI=true or
// TORGATE_TEST_INTEGRATION=1 the test skips even as root.
func RequireRoot(tb testing.TB, cmds ...string) {
	tb.Helper()
	Integration(tb)
	fail := tb.Skipf
	if CI() {
		fail = tb.Fatalf
	}
	if os.Geteuid() != 0 {
		fail("needs root (network namespaces and TUN)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		fail("needs /dev/net/tun: %v", err)
	}
	for _, c := range append([]string{"ip"}, cmds...) {
		if _, err := exec.LookPath(c); err != nil {
			fail("needs %s in PATH", c)
		}
	}
}

// Workstation is a network namespace with lo and one TUN.
type Workstation struct {
	// Name of the namespace (ip netns).
	Name string
	// Dev is the TUN; the router reads the workstation's packets from it.
	Dev tun.Device
	// Addr4 and Addr6 are the workstation's own addresses on the TUN.
	Addr4, Addr6 string
	tb           testing.TB
}

// Options for New.
type Options struct {
	MTU int
	// Addr4, Addr6 are the workstation's addresses (CIDR). Defaults
	// 10.152.152.11/18 and fd19:7a2b::11/64.
	Addr4, Addr6 string
	// Nameserver, if set, is written to /etc/netns/NAME/resolv.conf, which
	// "ip netns exec" mounts over /etc/resolv.conf inside the namespace.
	Nameserver string
}

// New creates the namespace and its TUN. Everything is removed in
// tb.Cleanup, also when the test fails; the router must not close Dev
// twice (closing is idempotent enough: errors are ignored).
func New(tb testing.TB, o Options) *Workstation {
	tb.Helper()
	RequireRoot(tb)
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.Addr4 == "" {
		o.Addr4 = "10.152.152.11/18"
	}
	if o.Addr6 == "" {
		o.Addr6 = "fd19:7a2b::11/64"
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	w := &Workstation{Name: "tgtest-" + hex.EncodeToString(rnd[:]), tb: tb, Addr4: o.Addr4, Addr6: o.Addr6}
	run(tb, "ip", "netns", "add", w.Name)
	tb.Cleanup(func() { exec.Command("ip", "netns", "delete", w.Name).Run() })

	if o.Nameserver != "" {
		dir := "/etc/netns/" + w.Name
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.WriteFile(dir+"/resolv.conf", []byte("nameserver "+o.Nameserver+"\n"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}

	dev, err := createTUNIn(w.Name, "tg0", o.MTU)
	if err != nil {
		tb.Fatalf("create tun in %s: %v", w.Name, err)
	}
	w.Dev = dev
	tb.Cleanup(func() { dev.Close() })

	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", o.Addr4, "dev", "tg0"},
		{"-6", "addr", "add", o.Addr6, "dev", "tg0", "nodad"},
		{"link", "set", "tg0", "mtu", fmt.Sprint(o.MTU), "up"},
		{"route", "add", "default", "dev", "tg0"},
		{"-6", "route", "add", "default", "dev", "tg0"},
	} {
		run(tb, "ip", append([]string{"-n", w.Name}, args...)...)
	}
	return w
}

// createTUNIn opens a TUN inside the named namespace.
func createTUNIn(ns, name string, mtu int) (tun.Device, error) {
	var dev tun.Device
	err := netns.Do(ns, func() error {
		var err error
		dev, err = tun.CreateTUN(name, mtu)
		return err
	})
	return dev, err
}

// Command returns a command that runs inside the namespace.
func (w *Workstation) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", w.Name, name}, args...)...)
}

// Run runs a command in the namespace and returns its combined output.
func (w *Workstation) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := w.Command(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func run(tb testing.TB, name string, args ...string) {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
