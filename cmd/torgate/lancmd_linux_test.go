package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/torgate/torgate/internal/nstest"
)

// TestLANCommandsRefuseUnknown: "lan guard" of an interface that does not
// exist, and "lan down" of one torgate never set up, are a one-line error
// and a non-zero exit, and change nothing (issue 22: "lan guard eht1"
// printed "guard rules in place" and exited 0, leaving eth1 unguarded).
// "lan guard --allow-missing" (the boot unit's, for a NIC that appears
// later) guards the name and warns.
func TestLANCommandsRefuseUnknown(t *testing.T) {
	nstest.RequireRoot(t, "nsenter")
	bin := buildTorgate(t)
	var rnd [3]byte
	rand.Read(rnd[:])
	gw := "tglc-" + hex.EncodeToString(rnd[:])
	mustRun(t, "ip", "netns", "add", gw)
	t.Cleanup(func() { killNamespace(gw) })
	typoNS := lanNamespace(t, gw, "eht1")
	lanNamespace(t, gw, "eth9")
	tg := func(args ...string) (stdout, stderr string, err error) {
		var o, e bytes.Buffer
		cmd := tgCommand(gw, bin, args...)
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	rules := func() string {
		return mustRun(t, "ip", "-n", gw, "rule") + mustRun(t, "ip", "-n", gw, "-6", "rule")
	}
	oneLine := func(what, stdout, stderr string, err error, want string) {
		t.Helper()
		if err == nil || exitCode(err) == 0 {
			t.Errorf("%s: exit 0, want non-zero", what)
		}
		if stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
			t.Errorf("%s: stdout %q, stderr %q; want one line on stderr with %q", what, stdout, stderr, want)
		}
	}
	before := rules()

	out, errOut, err := tg("lan", "guard", "eht1")
	oneLine("lan guard eht1", out, errOut, err, "no such interface eht1")
	if got := rules(); got != before {
		t.Errorf("a refused guard changed the rules:\n%s\nthen\n%s", before, got)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", typoNS)); err == nil {
		t.Errorf("a refused guard made the namespace %s", typoNS)
	}

	out, errOut, err = tg("lan", "down", "eth9")
	oneLine("lan down eth9", out, errOut, err, "nothing of torgate's for eth9")
	if got := rules(); got != before {
		t.Errorf("a refused down changed the rules:\n%s\nthen\n%s", before, got)
	}

	out, errOut, err = tg("lan", "guard", "--allow-missing", "eht1")
	if err != nil || !strings.Contains(errOut, "warning: no interface eht1 (yet)") || !strings.Contains(out, "in place for eht1") {
		t.Errorf("lan guard --allow-missing eht1: %v, stdout %q, stderr %q", err, out, errOut)
	}
	if !strings.Contains(rules(), "iif eht1 [detached] blackhole") {
		t.Errorf("--allow-missing installed no guard rule for eht1:\n%s", rules())
	}
	// What was guarded by name can be taken down again.
	if out, errOut, err := tg("lan", "down", "eht1"); err != nil {
		t.Errorf("lan down eht1: %v %s%s", err, out, errOut)
	}
	if got := rules(); got != before {
		t.Errorf("lan down left rules:\n%s\nwas\n%s", got, before)
	}

	// The boot unit reads the interfaces from the config file that
	// torgate.service reads, so that the two cannot disagree; a file run
	// would refuse is refused here too.
	conf := filepath.Join(t.TempDir(), "torgate.toml")
	os.WriteFile(conf, []byte("lan = [\"eth9\"]\n"), 0o644)
	out, errOut, err = tg("lan", "guard", "--allow-missing", "--config", conf)
	if err != nil || !strings.Contains(out, "in place for eth9") {
		t.Errorf("lan guard --config (lan = [eth9]): %v, stdout %q, stderr %q", err, out, errOut)
	}
	if !strings.Contains(rules(), "iif eth9 [detached] blackhole") {
		t.Errorf("lan guard --config installed no guard rule for eth9:\n%s", rules())
	}
	tg("lan", "down", "eth9")
	os.WriteFile(conf, []byte("lna = [\"eth9\"]\n"), 0o644)
	if _, errOut, err = tg("lan", "guard", "--allow-missing", "--config", conf); err == nil || !strings.Contains(errOut, `unknown field "lna"`) {
		t.Errorf("lan guard --config with a typo in a key: %v, stderr %q; want the unknown key named", err, errOut)
	}
	if got := rules(); got != before {
		t.Errorf("lan guard --config left rules:\n%s\nwas\n%s", got, before)
	}
}
