package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/torgate/torgate/internal/nstest"
)

// TestTorBenchBrief runs tgbench tor with tiny durations on every path
// but hev, from two workstations: the private Tor network, a client tor
// per attached path, torgate's managed tor (one, then two instances),
// one round of every test but down-1. It asserts only that every path has a row for
// every test, with a figure and without errors or failures, that both
// workstations loaded it, and that on torgate-n both tors carried
// traffic; no timing. Root, tor, iptables and nsenter are needed (under
// CI=true a missing one fails the test: .ci/run installs them). About
// 60 s.
func TestTorBenchBrief(t *testing.T) {
	briefPaths := []string{torPathTransport, torPathTorgate, torPathManaged, torPathTorgateN}
	// down-1 left out for time: down-8 runs the same code with more
	// streams.
	briefTests := []string{"ttfb", "conns", "down-8", "up-1"}
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
	b, log := runBuilt(t, "tor", "-repeat", "1", "-fetches", "5", "-conn-time", "1s", "-bulk-time", "1s", "-up-mb", "2", "-id", id,
		"-paths", strings.Join(briefPaths, ","), "-tests", strings.Join(briefTests, ","), "-workstations", "2", "-instances", "2")
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
		if torgatePath(r.Path) && r.RouterPer <= 0 && r.Test != "ttfb" {
			t.Errorf("%s %s: no router CPU", r.Path, r.Test)
		}
	}
	for _, s := range rep.Samples {
		if s.Load != nil && s.Load.Sources != 2 {
			t.Errorf("%s %s: %d workstations, want 2", s.Path, s.Test, s.Load.Sources)
		}
		if s.Path == torPathTorgateN && s.Test != "ttfb" {
			if len(s.Tors) != 2 {
				t.Errorf("%s %s: %d tors, want 2", s.Path, s.Test, len(s.Tors))
			}
			for _, tor := range s.Tors {
				if tor.MB <= 0 {
					t.Errorf("%s %s: tor %d moved %g MB: the workstations did not spread over the instances", s.Path, s.Test, tor.Instance, tor.MB)
				}
			}
		}
	}
	for _, p := range briefPaths {
		for _, test := range briefTests {
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
