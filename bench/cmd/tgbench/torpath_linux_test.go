package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/torgate/torgate/internal/nstest"
)

// TestTorBenchBrief runs tgbench tor with tiny durations on the
// transport and torgate paths: the private Tor network, a client tor per
// path, one round of every test. It asserts only that every path has a
// row for every test, with a figure and without errors or failures; no
// timing. Root, tor, iptables and nsenter are needed (under CI=true a
// missing one fails the test: .ci/run installs them). About 40 s.
func TestTorBenchBrief(t *testing.T) {
	nstest.RequireRoot(t, "nsenter")
	for _, tool := range []string{"tor", "tor-gencert", "iptables"} {
		if _, err := sbinPath(tool); err != nil {
			if nstest.CI() {
				t.Fatalf("%v: .ci/run installs it", err)
			}
			t.Skip(err)
		}
	}
	dir := t.TempDir()
	for name, pkg := range map[string]string{"torgate": "../../../cmd/torgate", "tgbench": "."} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	out := filepath.Join(dir, "out")
	id := fmt.Sprintf("tgt-t%d", os.Getpid())
	var stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), filepath.Join(dir, "tgbench"), "tor", "-torgate", filepath.Join(dir, "torgate"),
		"-repeat", "1", "-fetches", "5", "-conn-time", "1s", "-bulk-time", "1s", "-up-mb", "2", "-id", id, "-out", out)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tgbench tor: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep TorReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rep.Rows {
		seen[r.Path+"/"+r.Test] = true
		if r.Runs != 1 || r.Errors > 0 || r.Failures > 0 || r.Median <= 0 {
			t.Errorf("%s %s: %d runs, %d errors, %d failures, median %g %s", r.Path, r.Test, r.Runs, r.Errors, r.Failures, r.Median, r.Unit)
		}
		if r.Path == torPathTorgate && r.RouterPer <= 0 && r.Test != "ttfb" {
			t.Errorf("%s %s: no router CPU", r.Path, r.Test)
		}
	}
	for _, p := range []string{torPathTransport, torPathTorgate} {
		for _, test := range torTests {
			if !seen[p+"/"+test] {
				t.Errorf("no row for %s %s", p, test)
			}
		}
	}
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), id+"-") {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	if t.Failed() {
		t.Logf("tgbench tor log:\n%s", stderr.String())
	}
}
