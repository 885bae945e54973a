package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/torgate/torgate/internal/nstest"
)

// TestSystemBenchBrief runs the system benchmark (tgbench run) briefly on
// both paths, so that it keeps working: the TUN path with torgate, the
// LAN path with torgate --lan and redsocks, each beside its kernel path.
// It asserts only that every path has its rows, without errors or failed
// connections; no timing. Root, iperf3, nsenter, redsocks and iptables
// are needed (under CI=true a missing one fails the test: .ci/run
// installs them).
func TestSystemBenchBrief(t *testing.T) {
	nstest.RequireRoot(t, "iperf3", "nsenter", "ip")
	if _, ok := redsocksBin(); !ok {
		if nstest.CI() {
			t.Fatal("no redsocks (Debian: apt install redsocks): .ci/run installs it")
		}
		t.Skip("no redsocks")
	}
	b, log := runBuilt(t, "run", "-paths", "tun,lan", "-lan-router", "torgate", "-lan-router", "redsocks",
		"-mtus", "1500", "-tests", "tcp-up-1,conn-closed", "-repeat", "1", "-iperf-time", "2s", "-load-time", "1s")
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"tun/torgate": false, "lan/torgate": false, "lan/redsocks": false}
	for _, r := range rep.Rows {
		path := r.Path
		if path == "" {
			path = pathTUN
		}
		key := path + "/" + r.Router
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected row %s %s", key, r.Test)
			continue
		}
		want[key] = true
		if r.Errors > 0 || r.KernelMedian <= 0 || r.RouterMedian <= 0 {
			t.Errorf("%s %s: %d runs failed, kernel %.0f, router %.0f %s", key, r.Test, r.Errors, r.KernelMedian, r.RouterMedian, r.Unit)
		}
		if strings.HasPrefix(r.Test, "conn-") && (r.KernelFailures > 0 || r.RouterFailures > 0) {
			t.Errorf("%s %s: failures kernel %d, router %d", key, r.Test, r.KernelFailures, r.RouterFailures)
		}
	}
	for k, ok := range want {
		if !ok {
			t.Errorf("no rows for %s", k)
		}
	}
	if t.Failed() {
		t.Logf("tgbench log:\n%s", log)
	}
}

// runBuilt builds torgate and tgbench (CGO_ENABLED=0, as released), runs
// "tgbench SUB -torgate BIN ARGS... -out DIR" and returns its
// results.json and its log (stderr).
func runBuilt(t *testing.T, sub string, args ...string) (results []byte, log string) {
	t.Helper()
	dir := t.TempDir()
	for name, pkg := range map[string]string{"torgate": "../../../cmd/torgate", "tgbench": "."} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	out := filepath.Join(dir, "out")
	var stderr bytes.Buffer
	args = append([]string{sub, "-torgate", filepath.Join(dir, "torgate")}, append(args, "-out", out)...)
	cmd := exec.CommandContext(t.Context(), filepath.Join(dir, "tgbench"), args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tgbench %s: %v\n%s", sub, err, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b, stderr.String()
}
