package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/nstest"
)

// lanSnapshot is what a check must leave as it found it in namespace ns:
// links (with details), addresses, rules, routes, whether the LAN
// namespace lanNS exists (other tests' namespaces come and go) and the
// state directory.
func lanSnapshot(t *testing.T, ns, lanNS, stateDir string) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-n", ns, "-d", "link"}, {"-n", ns, "addr"}, {"-n", ns, "rule"}, {"-n", ns, "-6", "rule"},
		{"-n", ns, "route"}, {"-n", ns, "-6", "route"},
	} {
		b.WriteString(mustRun(t, "ip", args...))
	}
	if _, err := os.Stat(filepath.Join("/run/netns", lanNS)); err == nil {
		b.WriteString("LAN namespace " + lanNS + "\n")
	}
	entries, err := os.ReadDir(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b.WriteString("state: " + e.Name() + "\n")
	}
	return b.String()
}

// TestValidateLANReadOnly: with a LAN interface, "config check" and a
// refused "run" read the interface's prefixes and change nothing: the
// pool that overlaps the LAN (issue 22: refused only after the interface
// was taken and the automap state rewritten) and a missing interface are
// refused before anything is touched; a taken interface (in its LAN
// namespace, its addresses in its alias) is read there.
func TestValidateLANReadOnly(t *testing.T) {
	nstest.RequireRoot(t, "nsenter")
	bin := buildTorgate(t)
	var rnd [3]byte
	rand.Read(rnd[:])
	gw := "tgcc-" + hex.EncodeToString(rnd[:])
	mustRun(t, "ip", "netns", "add", gw)
	t.Cleanup(func() { killNamespace(gw) })
	lanNS := lanNamespace(t, gw, "eth1")
	for _, c := range [][]string{
		{"-n", gw, "link", "add", "eth1", "type", "veth", "peer", "name", "ws0"},
		{"-n", gw, "addr", "add", "10.152.152.10/18", "dev", "eth1"},
		{"-n", gw, "link", "set", "eth1", "up"},
		{"-n", gw, "link", "set", "ws0", "up"},
	} {
		mustRun(t, "ip", c...)
	}
	state := t.TempDir()
	tg := func(args ...string) (stdout, stderr string, err error) {
		var o, e bytes.Buffer
		cmd := tgCommand(gw, bin, args...)
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	common := []string{"--lan", "eth1", "--socks", "127.0.0.1:9050", "--state-dir", state}
	before := lanSnapshot(t, gw, lanNS, state)
	unchanged := func(what string) {
		t.Helper()
		if after := lanSnapshot(t, gw, lanNS, state); after != before {
			t.Errorf("%s changed the system:\nbefore:\n%s\nafter:\n%s", what, before, after)
		}
	}

	out, errOut, err := tg(append([]string{"config", "check"}, common...)...)
	if err != nil || !strings.Contains(out, "# lan eth1: gateway 10.152.152.10/18") || !strings.Contains(out, "(in the gateway's namespace)") || !strings.Contains(out, `lan = ["eth1"]`) {
		t.Errorf("config check: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, "# warning: lan eth1 had no guard rules") {
		t.Errorf("config check of an unguarded LAN gives no warning:\n%s", out)
	}
	unchanged("config check")

	_, errOut, err = tg(append([]string{"config", "check", "--dns-pool4", "10.152.152.0/24"}, common...)...)
	want := "--dns-pool4 10.152.152.0/24 overlaps eth1's network 10.152.128.0/18"
	if exitCode(err) != 1 || !strings.Contains(errOut, want) {
		t.Errorf("config check, pool on the LAN: %v %q, want exit 1 and %q", err, errOut, want)
	}
	unchanged("config check of a bad pool")

	start := time.Now()
	_, errOut, err = tg(append([]string{"run", "--dns-pool4", "10.152.152.0/24"}, common...)...)
	if err == nil || !strings.Contains(errOut, want) {
		t.Errorf("run, pool on the LAN: %v %q, want %q", err, errOut, want)
	}
	unchanged("a run refused for its pool")

	_, errOut, err = tg("run", "--lan", "eth9", "--socks", "127.0.0.1:9050", "--state-dir", state)
	if err == nil || !strings.Contains(errOut, "--lan eth9: no such interface eth9") || time.Since(start) > 10*time.Second {
		t.Errorf("run --lan eth9: %v %q after %v, want a quick \"no such interface eth9\"", err, errOut, time.Since(start))
	}
	unchanged("a run refused for a missing interface")

	// Taken: "lan guard" moves eth1 into its LAN namespace, its addresses
	// into its alias; config check reads them there.
	if out, err := tgCommand(gw, bin, "lan", "guard", "eth1").CombinedOutput(); err != nil {
		t.Fatalf("lan guard: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", lanNS)); err != nil {
		t.Fatalf("lan guard made no namespace %s: %v", lanNS, err)
	}
	before = lanSnapshot(t, gw, lanNS, state)
	inside := mustRun(t, "ip", "-n", lanNS, "-d", "link")
	out, errOut, err = tg(append([]string{"config", "check"}, common...)...)
	if err != nil || !strings.Contains(out, "# lan eth1: gateway 10.152.152.10/18") || !strings.Contains(out, "(in its LAN namespace already)") {
		t.Errorf("config check of a taken interface: %v\n%s%s", err, out, errOut)
	}
	if strings.Contains(out, "# warning") {
		t.Errorf("config check of a guarded LAN warns:\n%s", out)
	}
	_, errOut, err = tg(append([]string{"config", "check", "--dns-pool4", "10.152.152.0/24"}, common...)...)
	if exitCode(err) != 1 || !strings.Contains(errOut, want) {
		t.Errorf("config check of a taken interface, pool on the LAN: %v %q", err, errOut)
	}
	unchanged("config check of a taken interface")
	if got := mustRun(t, "ip", "-n", lanNS, "-d", "link"); got != inside {
		t.Errorf("config check changed the LAN namespace:\n%s\nthen\n%s", inside, got)
	}
}
