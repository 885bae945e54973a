package torgate_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/testnet"
	"github.com/torgate/torgate/internal/torctl"
)

// The integration tests below run torgate against real Tor: a private Tor
// network (internal/testnet) on loopback, shared by every subtest, and a
// workstation namespace (internal/nstest) whose only route is torgate's
// TUN. curl and dig run inside the namespace; their resolver is torgate
// (10.152.152.10, through /etc/netns/NAME/resolv.conf).
//
// The network's exits can reach loopback only, and torgate drops
// loopback destinations as martians, so the fetch by IP uses a stand-in:
// the workstation connects to byIPAddr, torgate sends that IP literal in
// its SOCKS CONNECT, and the client tor maps it to the web server
// (MapAddress) before an exit connects.

const (
	gatewayDNS  = "10.152.152.10"
	sourceA     = "10.152.152.11" // nstest's default workstation address
	sourceB     = "10.152.152.12" // added for the isolation test
	byIPAddr    = "198.18.0.80"   // RFC 2544 benchmark range; mapped by tor
	readyWithin = 90 * time.Second
)

// gateway is torgate on a workstation namespace, with its Tor (managed
// or attached) run by the Router, as an embedder runs it.
type gateway struct {
	t      *testing.T
	ws     *nstest.Workstation
	tor    *torctl.Tor // the Router's
	router *torgate.Router
	reg    *prometheus.Registry
}

// newGateway builds a router with cfg's upstream on a fresh workstation
// namespace and waits until its Tor is ready.
func newGateway(t *testing.T, cfg torgate.Config) *gateway {
	t.Helper()
	g := &gateway{t: t, reg: prometheus.NewRegistry()}
	g.ws = nstest.New(t, nstest.Options{Nameserver: gatewayDNS})
	cfg.Device = g.ws.Dev
	cfg.Logger = testlog.New(t, slog.LevelInfo)
	cfg.Registerer = g.reg
	began := time.Now()
	r, err := torgate.NewContext(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { r.Close() })
	g.router, g.tor = r, r.Tor()
	ctx, cancel := context.WithTimeout(t.Context(), readyWithin)
	defer cancel()
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("tor ready %v after NewContext", time.Since(began).Round(time.Millisecond))
	return g
}

// downs is the router's tor_down_total: how often it saw Tor go away
// and ended every flow.
func (g *gateway) downs() float64 {
	g.t.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		g.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tor_down_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	g.t.Fatal("no tor_down_total")
	return 0
}

// curl runs curl in the namespace and returns its output and exit code.
func (g *gateway) curl(ctx context.Context, args ...string) (string, int) {
	out, err := g.ws.Run(ctx, "curl", append([]string{"-sS", "--max-time", "60"}, args...)...)
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		g.t.Fatalf("curl: %v", err)
	}
	return out, code
}

// fetch requires a successful GET of url.
func (g *gateway) fetch(ctx context.Context, url string, extra ...string) string {
	g.t.Helper()
	out, code := g.curl(ctx, append(extra, url)...)
	if code != 0 {
		g.t.Fatalf("curl %s: exit %d: %s", url, code, out)
	}
	return out
}

// webURL is the web server by name, resolved by the exit.
func webURL(n *testnet.Network, path string) string {
	return "http://" + n.WebName + ":" + strconv.Itoa(int(n.WebAddr.Port())) + path
}

// ipURL is the web server by IP literal (byIPAddr, which tor maps).
func ipURL(n *testnet.Network, path string) string {
	return "http://" + byIPAddr + ":" + strconv.Itoa(int(n.WebAddr.Port())) + path
}

// viaHostLoopback reports whether a /whoami answer is a host loopback
// address: the exits connect to the web server over the host's loopback,
// which the workstation namespace has no route to. (With OutboundBindAddress
// only applying to non-loopback destinations, the kernel picks 127.0.0.1
// as the exit's source, so the answer cannot name the exit itself.)
func viaHostLoopback(whoami string) bool {
	ap, err := netip.ParseAddrPort(strings.TrimSpace(whoami))
	return err == nil && ap.Addr().IsLoopback()
}

// checkFetches: by name (the exit resolves it), an onion service, and by
// IP, each through the namespace's TUN, torgate and Tor.
func checkFetches(t *testing.T, g *gateway, n *testnet.Network) {
	ctx := t.Context()
	t.Run("ByName", func(t *testing.T) {
		if body := g.fetch(ctx, webURL(n, "/")); body != testnet.WebBody {
			t.Fatalf("body %q", body)
		}
		if who := g.fetch(ctx, webURL(n, "/whoami")); !viaHostLoopback(who) {
			t.Fatalf("web server saw %q, not the host loopback", who)
		}
	})
	t.Run("Onion", func(t *testing.T) {
		if body := g.fetch(ctx, "http://"+n.OnionAddr+"/"); body != testnet.WebBody {
			t.Fatalf("body %q", body)
		}
	})
	t.Run("ByIP", func(t *testing.T) {
		if body := g.fetch(ctx, ipURL(n, "/")); body != testnet.WebBody {
			t.Fatalf("body %q", body)
		}
		if who := g.fetch(ctx, ipURL(n, "/whoami")); !viaHostLoopback(who) {
			t.Fatalf("web server saw %q, not the host loopback", who)
		}
	})
	t.Run("NoDirectPath", func(t *testing.T) {
		// The web server's own address is loopback inside the namespace
		// too: nothing there answers, so the fetches above came through
		// torgate and Tor.
		if out, code := g.curl(ctx, "--max-time", "3", "http://"+n.WebAddr.String()+"/"); code == 0 {
			t.Fatalf("namespace reached %s directly: %s", n.WebAddr, out)
		}
	})
}

// TestTorIntegration runs torgate against a private Tor network, in
// attach mode (the network's client tor) and managed mode (torgate's own
// tor joining the network).
func TestTorIntegration(t *testing.T) {
	nstest.RequireRoot(t, "curl", "dig")
	testnet.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	// Reachable: the managed tor (Managed) runs as debian-tor and reads
	// the network's files.
	netDir := t.TempDir()
	for _, d := range []string{filepath.Dir(netDir), netDir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	n, err := testnet.Start(ctx, testnet.Config{Dir: netDir, Onion: true, Logger: testlog.New(t, slog.LevelWarn)})
	cancel()
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tor logs:\n%s", n.Logs(20))
		}
		n.Close()
	})
	t.Logf("testnet: bootstrap %v, onion %v after launch (keygen %v, cached %v)",
		n.BootstrapTime.Round(time.Millisecond), n.OnionTime.Round(time.Millisecond),
		n.KeygenTime.Round(time.Millisecond), n.KeysCached)
	mapIP := byIPAddr + " " + n.WebAddr.Addr().String()

	t.Run("Attach", func(t *testing.T) {
		ctl, err := n.Control(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer ctl.Close()
		if _, err := ctl.Request(t.Context(), "MAPADDRESS "+strings.Replace(mapIP, " ", "=", 1)); err != nil {
			t.Fatal(err)
		}
		g := newGateway(t, torgate.Config{AttachedTor: &torgate.AttachedTor{ControlAddr: n.ControlAddr}})
		if got := g.tor.SocksAddr(); got != n.SocksAddr {
			t.Fatalf("SocksPort read from tor = %q, want %q", got, n.SocksAddr)
		}
		checkFetches(t, g, n)
		t.Run("FIN", func(t *testing.T) { checkAttachedFIN(t, g, n) })
		t.Run("Relayed", func(t *testing.T) { checkRelayed(t, n) })
		t.Run("Isolation", func(t *testing.T) { checkIsolation(t, g, n, ctl) })
	})

	t.Run("Managed", func(t *testing.T) {
		lines := append(n.ClientTorrc(), "MapAddress "+mapIP)
		// The testnet's directory is reachable (above): tor runs as
		// Debian's tor user, as torgate runs it by default as root.
		g := newGateway(t, torgate.Config{ManagedTor: &torgate.ManagedTor{
			DataDir:    filepath.Join(netDir, "managed-tor"),
			User:       "debian-tor",
			TorrcLines: lines,
			// Long enough to look at the gateway while tor is down.
			RestartBackoff: 3 * time.Second,
		}})
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.tor.PID()))
		if err != nil {
			t.Fatal(err)
		}
		if u, err := user.Lookup("debian-tor"); err != nil || !regexp.MustCompile(`(?m)^Uid:\s+`+u.Uid+`\s`).Match(st) {
			t.Fatalf("managed tor is not debian-tor (%v):\n%s", err, st)
		}
		checkFetches(t, g, n)
		t.Run("FailClosed", func(t *testing.T) { checkFailClosed(t, g, n) })
	})

	t.Run("Example", func(t *testing.T) {
		// Example_managedTor's runGateway, on a workstation namespace
		// instead of a TUN by name and with the test network's torrc.
		ws := nstest.New(t, nstest.Options{Nameserver: gatewayDNS})
		var logs testlog.Buffer
		ctx, stop := context.WithCancel(t.Context())
		defer stop()
		done := make(chan error, 1)
		go func() {
			done <- runGateway(ctx, torgate.Config{
				Device: ws.Dev,
				ManagedTor: &torgate.ManagedTor{
					DataDir:    filepath.Join(netDir, "example-tor"),
					User:       "debian-tor",
					TorrcLines: append(n.ClientTorrc(), "MapAddress "+mapIP),
				},
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
		}()
		waitUntil(t, readyWithin, "the example's ready log", func() bool {
			select {
			case err := <-done:
				t.Fatalf("runGateway ended early: %v\n%s", err, logs.String())
			default:
			}
			return strings.Contains(logs.String(), "tor bootstrapped: forwarding")
		})
		g := &gateway{t: t, ws: ws}
		if body := g.fetch(t.Context(), webURL(n, "/")); body != testnet.WebBody {
			t.Fatalf("body %q", body)
		}
		if body := g.fetch(t.Context(), ipURL(n, "/")); body != testnet.WebBody {
			t.Fatalf("by IP: body %q", body)
		}
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("runGateway after cancel: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("runGateway still running 30s after cancel")
		}
	})

	// Last: it stops and kills tors of its own on the shared network.
	t.Run("Failures", func(t *testing.T) { checkFailures(t, n) })
}

// streamCircuits collects the circuits of torgate's successful streams to
// port from STREAM events, by SOCKS username (torgate's isolation key).
type streamLog struct {
	port   string
	events <-chan torctl.Event
}

// next waits for the next SUCCEEDED stream of a torgate flow to the web
// port and returns its username and circuit.
func (s *streamLog) next(t *testing.T) (user, circ string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-s.events:
			st, ok := testnet.ParseStreamEvent(ev)
			if !ok || st.Status != "SUCCEEDED" || !strings.HasSuffix(st.Target, ":"+s.port) || !strings.HasPrefix(st.SocksUsername, "tg-") {
				continue
			}
			return st.SocksUsername, st.CircuitID
		case <-timeout:
			t.Fatal("no STREAM SUCCEEDED event for a torgate flow")
		}
	}
}

// checkIsolation, in Tor itself: two sources' streams are on different
// circuits and one source's streams share one; after a per-source new
// identity that source moves to a new circuit and the other does not.
func checkIsolation(t *testing.T, g *gateway, n *testnet.Network, ctl *testnet.Control) {
	ctx := t.Context()
	if out, err := exec.Command("ip", "-n", g.ws.Name, "addr", "add", sourceB+"/18", "dev", "tg0").CombinedOutput(); err != nil {
		t.Fatalf("second workstation address: %v %s", err, out)
	}
	if err := ctl.SetEvents(ctx, "STREAM"); err != nil {
		t.Fatal(err)
	}
	defer ctl.SetEvents(context.Background())
	sl := &streamLog{port: strconv.Itoa(int(n.WebAddr.Port())), events: ctl.Events()}
	get := func(src string) (user, circ string) {
		// Each source looks the name up itself: a virtual address
		// answers only the source that asked for it (issue 11).
		va, err := g.ws.Run(ctx, "dig", "+short", "+time=2", "+tries=1", "-b", src, "A", n.WebName)
		if err != nil || strings.TrimSpace(va) == "" {
			t.Fatalf("dig from %s: %v %q", src, err, va)
		}
		port := strconv.Itoa(int(n.WebAddr.Port()))
		g.fetch(ctx, webURL(n, "/"), "--interface", src, "--resolve", n.WebName+":"+port+":"+strings.TrimSpace(va))
		return sl.next(t)
	}
	a1u, a1 := get(sourceA)
	a2u, a2 := get(sourceA)
	b1u, b1 := get(sourceB)
	t.Logf("circuits: A %s %s, B %s", a1, a2, b1)
	if a1u != a2u || a1u == b1u {
		t.Fatalf("SOCKS usernames: A %s %s, B %s; want A's equal and B's different", a1u, a2u, b1u)
	}
	if a1 != a2 {
		t.Errorf("one source's streams on circuits %s and %s, want one circuit", a1, a2)
	}
	if a1 == b1 {
		t.Errorf("two sources share circuit %s", a1)
	}

	g.router.NewIdentity(netip.MustParseAddr(sourceA))
	a3u, a3 := get(sourceA)
	b2u, b2 := get(sourceB)
	t.Logf("after new identity for A: A %s, B %s", a3, b2)
	if a3u == a1u || a3 == a1 {
		t.Errorf("after NewIdentity(A): A on %s as %s, was %s as %s; want a new circuit", a3, a3u, a1, a1u)
	}
	if b2u != b1u || b2 != b1 {
		t.Errorf("after NewIdentity(A): B on %s, was %s; want B unchanged", b2, b1)
	}
	if a3 == b2 {
		t.Errorf("sources share circuit %s after new identity", a3)
	}
}

// checkFailClosed kills the managed tor in the middle of a transfer: the
// transfer ends, a new flow gets a RST and DNS a SERVFAIL at once, then
// torgate restarts tor and service returns, with the same router.
func checkFailClosed(t *testing.T, g *gateway, n *testnet.Network) {
	ctx := t.Context()
	// A download whose end is the end of the connection (HTTP/1.0, no
	// Content-Length) that would take 10 minutes: when tor is killed, its
	// sockets close cleanly; the process check (torctl.Tor.ProcessState)
	// or else Confirm, which a dead Tor never answers, turns that end into
	// a RST before readiness falls; a FIN would make curl exit 0 with a
	// truncated body.
	web := slowServer(t, n.WebAddr.Addr())
	tr := startTransfer(t, g.ws, "http://"+byIPAddr+":"+strconv.Itoa(int(web.Port()))+"/")

	pid := g.tor.PID()
	downsBefore := g.downs()
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for g.tor.Ready() {
		if time.Since(killed) > 5*time.Second {
			t.Fatal("still ready 5s after tor was killed")
		}
		time.Sleep(time.Millisecond)
	}
	notReady := time.Since(killed)

	// New flows: a RST (curl: "Couldn't connect", exit 7) and SERVFAIL,
	// while tor is down (restart backoff 3 s).
	out, code := g.curl(ctx, "--max-time", "5", ipURL(n, "/"))
	rstAfter := time.Since(killed)
	if code != 7 {
		t.Errorf("new flow while tor is down: curl exit %d (%s), want 7 (connection refused)", code, strings.TrimSpace(out))
	}
	dig, _ := g.ws.Run(ctx, "dig", "+time=2", "+tries=1", "A", "other.test.lan")
	if !strings.Contains(dig, "status: SERVFAIL") {
		t.Errorf("DNS while tor is down:\n%s\nwant SERVFAIL", dig)
	}
	if g.tor.Ready() {
		t.Fatalf("tor came back before the checks ran (%v after kill); the checks above are not meaningful", time.Since(killed))
	}

	code = tr.wait(t, 10*time.Second)
	if code == 0 {
		t.Errorf("curl exited 0 for a download without Content-Length cut off by the kill: a truncation looked complete (%s)", tr.stderr.String())
	}
	t.Logf("transfer ended %v after the kill: curl exit %d %s", time.Since(killed).Round(time.Millisecond), code, strings.TrimSpace(tr.stderr.String()))
	if g.downs() == downsBefore {
		t.Errorf("tor_down_total did not grow: the router did not see tor go away")
	}

	wctx, cancel := context.WithTimeout(ctx, readyWithin)
	defer cancel()
	if err := g.tor.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	back := time.Since(killed)
	if g.tor.PID() == pid {
		t.Errorf("same tor PID %d after restart", pid)
	}
	if body := g.fetch(ctx, webURL(n, "/")); body != testnet.WebBody {
		t.Fatalf("after restart: body %q", body)
	}
	if body := g.fetch(ctx, ipURL(n, "/")); body != testnet.WebBody {
		t.Fatalf("after restart, by IP: body %q", body)
	}
	t.Logf("%s", fmt.Sprintf("kill -> not ready %v, -> RST seen %v, -> ready again %v (first restart after 200ms)",
		notReady.Round(time.Microsecond), rstAfter.Round(time.Millisecond), back.Round(time.Millisecond)))

	// SIGTERM: tor closes the download's stream itself, before the
	// kernel marks it exiting, so the process check says alive; only the
	// confirmation over the control port (torctl.Tor.Confirm, never
	// answered by a Tor past its main loop) makes that end a RST.
	tr = startTransfer(t, g.ws, "http://"+byIPAddr+":"+strconv.Itoa(int(web.Port()))+"/")
	pid = g.tor.PID()
	termed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code = tr.wait(t, 10*time.Second)
	if code == 0 {
		t.Errorf("curl exited 0 for a download without Content-Length cut off by tor's SIGTERM: a truncation looked complete (%s)", tr.stderr.String())
	}
	t.Logf("SIGTERM: transfer ended %v later: curl exit %d %s", time.Since(termed).Round(time.Millisecond), code, strings.TrimSpace(tr.stderr.String()))
	wctx2, cancel2 := context.WithTimeout(ctx, readyWithin)
	defer cancel2()
	if err := g.tor.WaitReady(wctx2); err != nil {
		t.Fatal(err)
	}
	if body := g.fetch(ctx, ipURL(n, "/")); body != testnet.WebBody {
		t.Fatalf("after the SIGTERM restart, by IP: body %q", body)
	}
}
