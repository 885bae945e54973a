package main

import (
	"encoding/json"
	"fmt"
	"os"
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
	id := fmt.Sprintf("tgt-t%d", os.Getpid())
	b, log := runBuilt(t, "tor", "-repeat", "1", "-fetches", "5", "-conn-time", "1s", "-bulk-time", "1s", "-up-mb", "2", "-id", id)
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
		t.Logf("tgbench tor log:\n%s", log)
	}
}
