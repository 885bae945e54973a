package ctlport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/torgate/torgate/internal/nstest/gate"
)

// TestStem runs a real controller, Debian's python3-stem, against the
// Server on a loopback listener (each accepted connection handed over as
// a flow from one workstation to the gateway's address): authenticate,
// version, status, the SOCKS listener on the gateway's address, NEWNYM
// for that workstation only, and refusals of address, circuit-status,
// ns/all, SETCONF, SAVECONF and SIGNAL RELOAD. Without python3 and stem
// it skips, except under CI (CI=true), where it fails; the hermetic runs
// under qemu (TORGATE_TEST_HERMETIC=1) skip it as they do every test
// that needs more than the Go toolchain.
func TestStem(t *testing.T) {
	py := stemPython(t)
	h := newHarness(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go h.srv.ServeTCP(&fakeFlow{who: wsA, dst: netip.AddrPortFrom(gw, port), conn: conn})
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/stem_client.py", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	out, err := cmd.CombinedOutput()
	t.Logf("stem client:\n%s", out)
	if err != nil {
		t.Fatalf("stem client: %v", err)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(out)), "ok") {
		t.Fatal("stem client did not finish")
	}
	if got := h.ids.get(); !slices.Equal(got, []netip.Addr{wsA}) {
		t.Errorf("NewIdentity calls %v, want one for %v", got, wsA)
	}
	for _, k := range h.tor.askedKeys() {
		if !torKeys[k] {
			t.Errorf("Tor was asked for %q", k)
		}
	}
	var sent []string
	for c := range commandLabels {
		if n := testutil.ToFloat64(h.srv.m.commands.WithLabelValues(c)); n > 0 {
			sent = append(sent, fmt.Sprintf("%s×%v", c, n))
		}
	}
	slices.Sort(sent)
	t.Logf("commands stem sent: %v", sent)
	if n := testutil.ToFloat64(h.srv.m.commands.WithLabelValues("other")); n > 0 {
		t.Errorf("stem sent %v commands ctlport does not know", n)
	}
}

// stemPython returns a python3 that imports stem, or skips (fails
// under CI).
func stemPython(t *testing.T) string {
	t.Helper()
	if os.Getenv(gate.EnvHermetic) == "1" {
		t.Skip(gate.EnvHermetic + "=1: hermetic tests only")
	}
	missing := func(why string) {
		if gate.CI() {
			t.Fatalf("%s: CI needs python3-stem (apt-get install python3-stem)", why)
		}
		t.Skipf("%s: install python3-stem to run this test", why)
	}
	// The python3 on PATH may be another install (a venv) than the
	// system's, which is where Debian's python3-stem is.
	var tried []string
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		path, err := exec.LookPath(py)
		if err != nil || slices.Contains(tried, path) {
			continue
		}
		tried = append(tried, path)
		out, err := exec.Command(path, "-c", "import stem; print(stem.__version__)").CombinedOutput()
		if err == nil {
			t.Logf("%s: stem %s", path, strings.TrimSpace(string(out)))
			return path
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s: %v", path, err)
		}
	}
	if len(tried) == 0 {
		missing("no python3")
	}
	missing("no stem in " + strings.Join(tried, ", "))
	return ""
}
