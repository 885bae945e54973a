package main

// The workstation deployment: the gateway of gateway_linux_test.go with
// two workstations on a switch and a real Tor. torgate runs in gw in
// managed mode; the tor it starts joins the private Tor network of
// internal/testnet, which lives on a 127.A.B.0/24 block of the HOST
// namespace's loopback.
//
//	ws A .11/::11        ws B .12/::12
//	    eth0                 eth0
//	     |                    |
//	 [ br0 in the switch namespace: stp off, forward_delay 0, no snooping ]
//	     |
//	    eth1 10.152.152.10/18, fd52:7b2a:1e00::10/64    gw (forwarding ON)
//	    eth0 198.18.1.1/24, 2001:db8:1e01::1/64 ------- inet eth0 198.18.1.2,
//	    lo: torgate run --lan eth1 (managed tor)            2001:db8:1e01::2:
//	        127.0.0.1:P SOCKS5 relay (the test process)     HTTP :80, capture
//	             |
//	    host namespace: the testnet, 127.A.B.0/24 (relays, DNS, web server)
//
// The managed tor runs where torgate runs, in gw, and no route from gw
// reaches the host's loopback (nor may one: the test adds no route, and
// the kernel routes no LAN packet). So its torrc (--torrc) carries the
// testnet's ClientTorrc lines plus "Socks5Proxy 127.0.0.1:P": tor makes
// every OR connection through that SOCKS5 proxy, and a Tor client fetches
// directory documents over OR connections (BEGIN_DIR), never from a
// DirPort, so the one proxy carries all of it (checkRelay proves it: every
// CONNECT is to an ORPort). The proxy is a sockstest.Server listening on
// gw's loopback (a socket made in gw) whose CONNECT handler runs in the
// test process, in the host namespace, and dials only addresses of the
// testnet's block; everything else is refused. OutboundBindAddress (from
// ClientTorrc) does not apply: tor binds only for non-loopback
// destinations, and the proxy is on loopback.
//
// torgate, as root, runs its tor as debian-tor: the state directory, the
// torrc file and the testnet's directory (GeoIPFile) are made reachable
// (reachableTempDir). The managed tor's control socket is
// STATE/tor-run/control.sock; the harness keeps a connection to it,
// subscribed to STREAM events, so a test can ask Tor which circuit and
// credentials each workstation's streams got (streamsSince,
// streamsByTarget, torCircuits) instead of inferring it.
//
// Helpers for tests that build on this file:
//
//	g := newTorGw(t, "", torGwOptions{})   // testnet + namespaces; torgate not started
//	g.startTorgate()                        // waits for /readyz (tor bootstrapped)
//	g.wsCurl(g.A, args...)                  // curl -sS -g --max-time 30 in workstation A
//	g.wsPython(g.A, script, args...)        // /usr/bin/python3 -c script (python3-stem, scapy)
//	g.wsRun(g.A, d, name, args...)          // any command in A, bounded by d
//	g.fetchWeb(g.B, 6, "/")                 // the testnet's web server by name, over IPv4 or IPv6
//	g.dig(g.A, gwLAN6, name, "AAAA")        // torgate's DNS from a workstation
//	m := g.streamMark(); ...; g.streamsSince(m), g.streamsByTarget(m)
//	g.torCircuits(), g.torControl()         // the managed tor's own view
//	g.restartTorgate(syscall.SIGKILL)       // same state directory
//	g.wsServe(g.A, 80)                      // an HTTP server in a workstation
//	g.checkClean("phase"), g.checkRelay()   // nothing LAN-derived on the uplink; tor only used ORPorts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/netns"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/testnet"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

const (
	// Workstation B's addresses (A has wsAddr4, wsAddr6).
	wsB4 = "10.152.152.12"
	wsB6 = "fd52:7b2a:1e00::12"
	// testnetORPort is every testnet relay's ORPort (internal/testnet
	// doc.go, "Layout"): the only port the managed tor may reach.
	testnetORPort = 18001
	// torReadyTimeout bounds torgate's /readyz in managed mode: tor
	// bootstraps through the relay in a few seconds (a fresh DataDirectory
	// fetches the consensus and descriptors), more on a loaded box.
	torReadyTimeout = 60 * time.Second
	// torFetchTime bounds one fetch through Tor: the first on a new
	// circuit pays for building it.
	torFetchTime = 30 * time.Second
	// pythonPath is Debian's interpreter, which imports python3-stem and
	// python3-scapy (a python3 earlier in PATH may not).
	pythonPath = "/usr/bin/python3"
)

// wsHost is one workstation of a torGw.
type wsHost struct {
	Name         string // "A", "B"
	NS           string // its network namespace
	Addr4, Addr6 string
}

// torGwOptions shapes a torGw.
type torGwOptions struct {
	// Onion starts the testnet's onion-service host (testnet.Config.Onion;
	// g.net.OnionAddr, whose port 80 is the testnet's web server). Start
	// then also waits for its descriptor (about 2 s more). A workstation
	// reaches it by name through the transparent path (torgate automaps
	// .onion), each on its own HS_CLIENT_REND circuit: tried 2026-12-05.
	Onion bool
	// Torrc are extra lines for the managed tor's --torrc file, after the
	// testnet's and the relay's.
	Torrc []string
	// Args are extra "torgate run" flags.
	Args []string
}

// torGw is the deployment with a real Tor.
type torGw struct {
	t            *testing.T
	id           string
	sw, gw, inet string // namespaces: switch, gateway, "Internet"
	lanNS        string // the namespace torgate pins for eth1
	A, B         *wsHost
	bin          string
	stateDir     string // torgate's --state-dir, kept across restarts
	torrc        string // the --torrc file
	opts         torGwOptions
	net          *testnet.Network
	relay        *sockstest.Server // the SOCKS5 proxy the managed tor reaches the testnet through
	cap          *capture          // inet's eth0
	webAccepts   atomic.Int64      // connections inet's HTTP server accepted
	ports        atomic.Int64      // switch ports made, for unique names
	tg           *tgProc           // the running torgate, if any

	ctlMu sync.Mutex
	ctl   *testnet.Control // to the managed tor; guarded by ctlMu

	streamMu  sync.Mutex
	streamLog []testnet.Stream // every STREAM event of the managed tor(s), in order; guarded by streamMu
}

// newTorGw builds the deployment and boots the testnet; torgate is not
// started (startTorgate). bin is the torgate binary; "" builds it while
// the testnet boots. Everything is removed in t.Cleanup, also on failure.
func newTorGw(t *testing.T, bin string, o torGwOptions) *torGw {
	t.Helper()
	nstest.RequireRoot(t, "curl", "dig")
	testnet.Require(t)
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	g := &torGw{t: t, id: id, sw: "tgts-" + id, gw: "tgtg-" + id, inet: "tgti-" + id, opts: o}

	// The testnet boots (about 12 s) while the rest is built. Its
	// directory must be reachable by the managed tor's user (GeoIPFile).
	type started struct {
		n   *testnet.Network
		err error
	}
	netc := make(chan started, 1)
	netDir := reachableTempDir(t)
	netBegan := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		n, err := testnet.Start(ctx, testnet.Config{Dir: netDir, Onion: o.Onion, Logger: slog.New(slog.DiscardHandler)})
		netc <- started{n, err}
	}()
	var once sync.Once
	var res started
	wait := func() started { once.Do(func() { res = <-netc }); return res }
	// Registered first, so it runs last: after torgate and its tor are
	// gone.
	t.Cleanup(func() {
		if r := wait(); r.n != nil {
			r.n.Close()
		}
	})

	if bin == "" {
		bin = buildTorgate(t)
	}
	g.bin = bin
	g.stateDir = reachableTempDir(t)

	for _, ns := range []string{g.sw, g.gw, g.inet} {
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { killNamespace(ns) })
	}
	g.lanNS = lanNamespace(t, g.gw, lanIface)

	// The switch adds no frames of its own (IPv6 off) and floods every
	// multicast frame, as a plain switch does (no snooping).
	mustRun(t, "ip", "netns", "exec", g.sw, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	mustRun(t, "ip", "-n", g.sw, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
	mustRun(t, "ip", "-n", g.sw, "link", "set", "br0", "up")
	g.plug(g.gw, lanIface)
	wireGateway(t, g.gw, g.inet, lanIface)
	g.A = g.addWorkstation("A", wsAddr4, wsAddr6)
	g.B = g.addWorkstation("B", wsB4, wsB6)
	g.cap = startCapture(t, g.inet, "eth0")
	g.startInetWeb()

	r := wait()
	if r.err != nil {
		t.Fatalf("testnet: %v", r.err)
	}
	g.net = r.n
	t.Logf("testnet %s ready %v after its start (keygen %v, cached %v; bootstrap %v)", g.net.Block,
		time.Since(netBegan).Round(time.Millisecond), g.net.KeygenTime.Round(time.Millisecond), g.net.KeysCached,
		g.net.BootstrapTime.Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testnet logs:\n%s", g.net.Logs(10))
		}
	})
	g.startRelay()

	lines := append(g.net.ClientTorrc(), "Socks5Proxy "+g.relay.Addr())
	lines = append(lines, o.Torrc...)
	g.torrc = filepath.Join(g.stateDir, "extra.torrc")
	if err := os.WriteFile(g.torrc, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return g
}

// plug connects namespace ns to the switch with a veth named dev there.
func (g *torGw) plug(ns, dev string) {
	g.t.Helper()
	port := "p" + strconv.FormatInt(g.ports.Add(1), 10)
	mustRun(g.t, "ip", "-n", g.sw, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns)
	mustRun(g.t, "ip", "-n", g.sw, "link", "set", port, "master", "br0")
	mustRun(g.t, "ip", "-n", g.sw, "link", "set", port, "up")
}

// addWorkstation creates a workstation on the switch, dual-stack, with
// the gateway as its router and DNS server (IPv4 first in resolv.conf).
func (g *torGw) addWorkstation(name, addr4, addr6 string) *wsHost {
	t := g.t
	t.Helper()
	ns := "tgt" + strings.ToLower(name) + "-" + g.id
	mustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { killNamespace(ns) })
	etc := "/etc/netns/" + ns
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(etc+"/resolv.conf", []byte("nameserver "+gwLAN4+"\nnameserver "+gwLAN6+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g.plug(ns, "eth0")
	for _, c := range [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", addr4 + "/18", "dev", "eth0"},
		{"-n", ns, "-6", "addr", "add", addr6 + "/64", "dev", "eth0", "nodad"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", "default", "via", gwLAN4},
		{"-n", ns, "-6", "route", "add", "default", "via", gwLAN6},
	} {
		mustRun(t, "ip", c...)
	}
	return &wsHost{Name: name, NS: ns, Addr4: addr4, Addr6: addr6}
}

// startInetWeb is the Internet's web site. Nothing may reach it: the
// testnet's exits can reach only loopback.
func (g *torGw) startInetWeb() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "inet-direct\n") })
	for _, a := range [][2]string{{"tcp4", inetAddr4 + ":80"}, {"tcp6", "[" + inetAddr6 + "]:80"}} {
		srv := &http.Server{Handler: h}
		go srv.Serve(countingListener{listenIn(g.t, g.inet, a[0], a[1]), &g.webAccepts})
		g.t.Cleanup(func() { srv.Close() })
	}
}

// startRelay starts the SOCKS5 proxy on gw's loopback through which the
// managed tor reaches the testnet. Its CONNECT handler runs in the test
// process (host namespace) and dials only the testnet's block.
func (g *torGw) startRelay() {
	block := g.net.Block
	route := func(dst socks.Addr) string {
		ip := dst.IP.Unmap()
		if dst.Name != "" || !block.Contains(ip) {
			return "" // ReplyHostUnreachable, never dialled
		}
		return netip.AddrPortFrom(ip, dst.Port).String()
	}
	if err := netns.Do(g.gw, func() error {
		g.relay = sockstest.NewServer(g.t, sockstest.Config{Connect: sockstest.DialTo(route)})
		return nil
	}); err != nil {
		g.t.Fatal(err)
	}
}

// checkRelay wants every CONNECT the managed tor sent through the relay to
// be to a testnet relay's ORPort (no DirPort, nothing outside the block),
// and at least one.
func (g *torGw) checkRelay() {
	g.t.Helper()
	reqs := g.relay.Requests()
	if len(reqs) == 0 {
		g.t.Errorf("the managed tor made no connection through the relay")
	}
	dsts := map[string]int{}
	for _, r := range reqs {
		dsts[r.Dst.String()]++
		if r.Command != socks.CmdConnect || r.Dst.Name != "" || !g.net.Block.Contains(r.Dst.IP.Unmap()) || r.Dst.Port != testnetORPort {
			g.t.Errorf("relay request %d to %s: want CONNECT to an ORPort (:%d) in %s", r.Command, r.Dst, testnetORPort, g.net.Block)
		}
	}
	if errs := g.relay.Errors(); len(errs) > 0 {
		g.t.Errorf("relay: protocol errors from the managed tor: %v", errs)
	}
	g.t.Logf("relay: %d CONNECTs from the managed tor, to %v (stats %+v)", len(reqs), dsts, g.relay.Stats())
}

// startTorgate runs torgate in the gateway in managed mode and waits
// (bounded by torReadyTimeout) for /readyz, i.e. for its tor to have
// bootstrapped through the relay. It then connects to the managed tor's
// control socket (torControl). It returns how long /readyz took.
func (g *torGw) startTorgate() time.Duration {
	g.t.Helper()
	if g.tg != nil {
		g.t.Fatal("torgate already running")
	}
	p := &tgProc{out: &testlog.Buffer{}, done: make(chan struct{})}
	args := append([]string{"run", "--lan", lanIface, "--state-dir", g.stateDir, "--torrc", g.torrc,
		"--admin", gwAdmin, "--log-level", "debug"}, g.opts.Args...)
	p.cmd = tgCommand(g.gw, g.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	began := time.Now()
	if err := p.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	g.tg = p
	g.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if g.t.Failed() {
			g.t.Logf("torgate (pid %d) output (end):\n%s", p.cmd.Process.Pid, tail(p.out.String(), 80))
		}
	})
	client := g.adminClient()
	deadline := began.Add(torReadyTimeout)
	for {
		select {
		case <-p.done:
			g.tg = nil
			g.t.Fatalf("torgate run --lan %s exited before ready: %v\n%s", lanIface, p.err, tail(p.out.String(), 60))
		default:
		}
		resp, err := client.Get("http://" + gwAdmin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("torgate not ready within %v (last: %v)\n%s", torReadyTimeout, err, tail(p.out.String(), 60))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ready := time.Since(began)
	g.torControl()
	return ready
}

// stopTorgate signals torgate (SIGTERM or SIGKILL) and waits, bounded,
// for it and then for its tor to exit, so that a new start does not find
// the DataDirectory locked.
func (g *torGw) stopTorgate(sig syscall.Signal) {
	g.t.Helper()
	p := g.tg
	if p == nil {
		g.t.Fatal("torgate not running")
	}
	g.tg = nil
	torPID := g.torPID(p)
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		g.t.Fatalf("torgate did not exit within 20s of %v\n%s", sig, tail(p.out.String(), 40))
	}
	if sig == syscall.SIGTERM && p.err != nil {
		g.t.Errorf("torgate after SIGTERM: %v\n%s", p.err, tail(p.out.String(), 40))
	}
	// A managed tor exits when torgate's control connection (which took
	// ownership) closes.
	for end := time.Now().Add(15 * time.Second); torPID > 0 && syscall.Kill(torPID, 0) == nil; {
		if time.Now().After(end) {
			g.t.Errorf("managed tor %d still runs 15s after torgate exited (%v)", torPID, sig)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restartTorgate stops torgate with sig and starts it again on the same
// state directory. It returns how long the new start took to be ready.
func (g *torGw) restartTorgate(sig syscall.Signal) time.Duration {
	g.t.Helper()
	g.stopTorgate(sig)
	return g.startTorgate()
}

var torStartedRe = regexp.MustCompile(`msg="tor started".* pid=(\d+)`)

// torPID is the PID of the last tor torgate p started, 0 if none.
func (g *torGw) torPID(p *tgProc) int {
	m := torStartedRe.FindAllStringSubmatch(p.out.String(), -1)
	if len(m) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(m[len(m)-1][1])
	return pid
}

// adminClient talks to torgate's admin endpoint on the gateway's loopback.
func (g *torGw) adminClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, g.gw, network, addr)
		},
	}}
}

// controlSocket is the managed tor's ControlSocket (torctl: DataDir+"-run").
func (g *torGw) controlSocket() string {
	return filepath.Join(g.stateDir, "tor-run", "control.sock")
}

// torControl returns a control connection to the managed tor, dialled on
// first use and again once torgate restarted its tor; it fails the test if
// it cannot. The connection is subscribed to STREAM events, recorded for
// streamsSince. Root reads the cookie that tor names (group-readable in
// the run directory).
func (g *torGw) torControl() *testnet.Control {
	g.t.Helper()
	g.ctlMu.Lock()
	defer g.ctlMu.Unlock()
	if g.ctl != nil && g.ctl.Err() == nil {
		return g.ctl
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := testnet.DialControlAt(ctx, "unix", g.controlSocket())
	if err != nil {
		g.t.Fatalf("managed tor's control socket: %v", err)
	}
	if err := c.SetEvents(ctx, "STREAM"); err != nil {
		c.Close()
		g.t.Fatalf("managed tor: SETEVENTS STREAM: %v", err)
	}
	g.t.Cleanup(func() { c.Close() })
	go g.recordStreams(c)
	g.ctl = c
	return c
}

// recordStreams appends c's STREAM events to streamLog until c closes.
func (g *torGw) recordStreams(c *testnet.Control) {
	for {
		select {
		case ev := <-c.Events():
			if s, ok := testnet.ParseStreamEvent(ev); ok {
				g.streamMu.Lock()
				g.streamLog = append(g.streamLog, s)
				g.streamMu.Unlock()
			}
		case <-c.Done():
			return
		}
	}
}

// torStream is one stream of the managed tor, summed up from its STREAM
// events.
type torStream struct {
	ID        string
	Target    string // as first requested (a later REMAP may replace it by the address)
	Status    string // the last event's
	CircuitID string // the last non-zero one ("0" if never attached)
	Username  string // SOCKS_USERNAME: torgate's isolation credentials
	Succeeded bool   // a SUCCEEDED event was seen
}

// streamMark returns a mark for streamsSince: the events recorded so far.
func (g *torGw) streamMark() int {
	g.streamMu.Lock()
	defer g.streamMu.Unlock()
	return len(g.streamLog)
}

// streamsSince returns the streams with STREAM events after mark, in
// order of their first event there. Stream IDs are per tor process, so a
// mark taken before restartTorgate must not be used across it. Tor's own
// directory streams appear too (BEGIN_DIR, e.g. to an HSDir before an
// onion connection: target "IP.$FPR.exit:18001", no Username); select by
// Target or Username.
func (g *torGw) streamsSince(mark int) []torStream {
	// Events of a stream that just ended may still be on their way.
	time.Sleep(200 * time.Millisecond)
	g.streamMu.Lock()
	evs := append([]testnet.Stream(nil), g.streamLog[min(mark, len(g.streamLog)):]...)
	g.streamMu.Unlock()
	var out []torStream
	idx := map[string]int{}
	for _, e := range evs {
		i, ok := idx[e.ID]
		if !ok {
			i = len(out)
			idx[e.ID] = i
			out = append(out, torStream{ID: e.ID, Target: e.Target, CircuitID: "0"})
		}
		s := &out[i]
		s.Status = e.Status
		if e.CircuitID != "0" && e.CircuitID != "" {
			s.CircuitID = e.CircuitID
		}
		if e.SocksUsername != "" {
			s.Username = e.SocksUsername
		}
		if e.Status == "SUCCEEDED" {
			s.Succeeded = true
		}
	}
	return out
}

// streamsByTarget groups streamsSince(mark) by target host:port.
func (g *torGw) streamsByTarget(mark int) map[string][]torStream {
	m := map[string][]torStream{}
	for _, s := range g.streamsSince(mark) {
		m[s.Target] = append(m[s.Target], s)
	}
	return m
}

// torCircuits returns the managed tor's circuits (GETINFO circuit-status).
func (g *torGw) torCircuits() []testnet.Circuit {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	circs, err := g.torControl().Circuits(ctx)
	if err != nil {
		g.t.Fatalf("managed tor: circuit-status: %v", err)
	}
	return circs
}

// wsRun runs a command in workstation w, bounded by d, and returns its
// combined output.
func (g *torGw) wsRun(w *wsHost, d time.Duration, name string, args ...string) (string, error) {
	return runIn(w.NS, d, name, args...)
}

// wsCurl runs "curl -sS -g --max-time 30 ARGS" in workstation w.
func (g *torGw) wsCurl(w *wsHost, args ...string) (string, error) {
	secs := int(torFetchTime / time.Second)
	return g.wsRun(w, torFetchTime+5*time.Second, "curl", append([]string{"-sS", "-g", "--max-time", strconv.Itoa(secs)}, args...)...)
}

// wsPython runs Debian's python3 with script (-c) and args in workstation
// w, bounded by 60 s.
func (g *torGw) wsPython(w *wsHost, script string, args ...string) (string, error) {
	return g.wsRun(w, 60*time.Second, pythonPath, append([]string{"-c", script}, args...)...)
}

// webURL is the testnet's web server by name, as a workstation reaches it.
func (g *torGw) webURL(path string) string {
	return "http://" + net.JoinHostPort(g.net.WebName, strconv.Itoa(int(g.net.WebAddr.Port()))) + path
}

// dig asks server (an address of the gateway) for name's records of
// qtype (A or AAAA) from workstation w and returns the addresses.
func (g *torGw) dig(w *wsHost, server, name, qtype string) ([]netip.Addr, error) {
	out, err := g.wsRun(w, 20*time.Second, "dig", "+short", "+time=3", "+tries=3", "@"+server, name, qtype)
	if err != nil {
		return nil, fmt.Errorf("dig @%s %s %s from %s: %v\n%s", server, name, qtype, w.Name, err, out)
	}
	var addrs []netip.Addr
	for _, f := range strings.Fields(out) {
		if a, err := netip.ParseAddr(f); err == nil {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("dig @%s %s %s from %s: no address:\n%s", server, name, qtype, w.Name, out)
	}
	return addrs, nil
}

// fetchWeb GETs path from the testnet's web server by name through the
// transparent path and returns the body. family 4: the name from the
// system resolver (resolv.conf: the gateway's IPv4 address), over IPv4.
// family 6: the name's AAAA from the gateway's IPv6 address, over IPv6.
// Either way the address is a virtual one of torgate's automap and the
// exit resolves the name.
func (g *torGw) fetchWeb(w *wsHost, family int, path string) (string, error) {
	switch family {
	case 4:
		return g.wsCurl(w, "-4", g.webURL(path))
	case 6:
		addrs, err := g.dig(w, gwLAN6, g.net.WebName, "AAAA")
		if err != nil {
			return "", err
		}
		port := strconv.Itoa(int(g.net.WebAddr.Port()))
		return g.wsCurl(w, "-6", "--resolve", g.net.WebName+":"+port+":["+addrs[0].String()+"]", g.webURL(path))
	}
	return "", fmt.Errorf("family %d", family)
}

// waitWeb polls fetchWeb until it serves testnet.WebBody, up to bound, and
// returns how long that took.
func (g *torGw) waitWeb(w *wsHost, family int, bound time.Duration) (time.Duration, error) {
	began := time.Now()
	var last string
	for time.Since(began) < bound {
		body, err := g.fetchWeb(w, family, "/")
		if err == nil && body == testnet.WebBody {
			return time.Since(began), nil
		}
		last = fmt.Sprintf("%v: %s", err, strings.TrimSpace(body))
		time.Sleep(250 * time.Millisecond)
	}
	return time.Since(began), fmt.Errorf("ws %s IPv%d: web page not served within %v (last: %s)", w.Name, family, bound, last)
}

// wsServe runs an HTTP server in workstation w on port (both families),
// answering "ws-NAME-PORT\n" to every request, and returns the count of
// connections it accepted. It stops in Cleanup.
func (g *torGw) wsServe(w *wsHost, port int) *atomic.Int64 {
	g.t.Helper()
	var n atomic.Int64
	body := fmt.Sprintf("ws-%s-%d\n", w.Name, port)
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, body) })}
	go srv.Serve(countingListener{listenIn(g.t, w.NS, "tcp", ":"+strconv.Itoa(port)), &n})
	g.t.Cleanup(func() { srv.Close() })
	return &n
}

// checkClean asserts the uplink capture and the Internet's server saw
// nothing from the LAN, and logs the phase's counts.
func (g *torGw) checkClean(phase string) {
	g.t.Helper()
	s := g.cap.phase()
	g.t.Logf("capture %s: %d frames (%d ARP, %d ND/MLD, %d other), %d LAN-derived", phase, s.frames, s.arp, s.nd, s.frames-s.arp-s.nd, len(s.bad))
	if len(s.bad) > 0 {
		g.t.Errorf("%s: %d frames on the uplink derived from the LAN:\n%s\nlast frames:\n%s", phase, len(s.bad), strings.Join(s.bad, "\n"), g.cap.recentSummary())
	}
	if n := g.webAccepts.Load(); n != 0 {
		g.t.Errorf("%s: the Internet's HTTP server accepted %d connections", phase, n)
	}
}

// isExitHop reports whether a circuit's last hop ("$FPR~nick") is one of
// the testnet's exits (nicknames exit0, exit1, ...).
func isExitHop(path []string) bool {
	if len(path) == 0 {
		return false
	}
	_, nick, _ := strings.Cut(path[len(path)-1], "~")
	return strings.HasPrefix(nick, "exit")
}

// TestWorkstationTor proves the harness: two workstations use the gateway
// over IPv4 and IPv6 with a real managed Tor on the private network; Tor
// gives them different circuits (read from its control socket); nothing
// LAN-derived reaches the uplink; a restart (SIGTERM, then SIGKILL)
// keeps the service.
func TestWorkstationTor(t *testing.T) {
	t.Parallel() // one of the deployment tests run two at a time: see TestGatewayDeployment
	began := time.Now()
	g := newTorGw(t, "", torGwOptions{})
	t.Logf("deployment built and testnet up %v after the start", time.Since(began).Round(time.Millisecond))
	g.checkClean("before torgate")
	ready := g.startTorgate()
	t.Logf("torgate ready %v after its start (tor bootstrapped through the relay)", ready.Round(time.Millisecond))
	checkTorUser(t, g.tg.out.String())

	// 1. Each workstation fetches over each family; Tor's STREAM events
	// say which credentials and circuit each fetch got.
	type use struct{ user, circ string }
	uses := map[string]use{} // "A4", "B6", ...
	for _, w := range []*wsHost{g.A, g.B} {
		for _, fam := range []int{4, 6} {
			key := fmt.Sprintf("%s%d", w.Name, fam)
			mark := g.streamMark()
			fb := time.Now()
			body, err := g.fetchWeb(w, fam, "/")
			if err != nil || body != testnet.WebBody {
				t.Errorf("ws %s IPv%d: fetch %s: %v\n%s", w.Name, fam, g.webURL("/"), err, body)
				continue
			}
			took := time.Since(fb)
			var got []torStream
			for _, s := range g.streamsByTarget(mark)[net.JoinHostPort(g.net.WebName, strconv.Itoa(int(g.net.WebAddr.Port())))] {
				if s.Succeeded {
					got = append(got, s)
				}
			}
			if len(got) != 1 || got[0].Username == "" || got[0].CircuitID == "0" {
				t.Errorf("ws %s IPv%d: want one SUCCEEDED stream to the web server with credentials and a circuit, tor saw %+v (all: %+v)", w.Name, fam, got, g.streamsSince(mark))
				continue
			}
			uses[key] = use{got[0].Username, got[0].CircuitID}
			t.Logf("ws %s IPv%d: fetched in %v, stream %s on circuit %s", w.Name, fam, took.Round(time.Millisecond), got[0].ID, got[0].CircuitID)
		}
	}
	// 2. Different circuits for A and B, as circuit-status says: every
	// circuit a fetch used is BUILT, ends at an exit and is bound to that
	// fetch's credentials. (The web server cannot tell: an exit connects
	// to a loopback destination unbound, from 127.0.0.1.)
	circs := map[string]testnet.Circuit{}
	for _, c := range g.torCircuits() {
		circs[c.ID] = c
	}
	for key, u := range uses {
		c, ok := circs[u.circ]
		switch {
		case !ok:
			t.Errorf("%s: circuit %s not in circuit-status", key, u.circ)
		case c.SocksUsername != u.user:
			t.Errorf("%s: circuit %s has SOCKS_USERNAME %q, the stream %q", key, c.ID, c.SocksUsername, u.user)
		case c.Status != "BUILT":
			t.Errorf("%s: circuit %s is %s", key, c.ID, c.Status)
		case !isExitHop(c.Path):
			t.Errorf("%s: circuit %s does not end at an exit: %v", key, c.ID, c.Path)
		}
	}
	for _, a := range []string{"A4", "A6"} {
		for _, b := range []string{"B4", "B6"} {
			ua, oka := uses[a]
			ub, okb := uses[b]
			if !oka || !okb {
				continue
			}
			if ua.circ == ub.circ || ua.user == ub.user {
				t.Errorf("%s and %s share circuit %s/%s or credentials (%t)", a, b, ua.circ, ub.circ, ua.user == ub.user)
			}
		}
	}
	if len(uses) == 4 {
		t.Logf("circuits: A %s/%s, B %s/%s (IPv4/IPv6); one workstation's two families share credentials: A %t, B %t",
			uses["A4"].circ, uses["A6"].circ, uses["B4"].circ, uses["B6"].circ,
			uses["A4"].user == uses["A6"].user, uses["B4"].user == uses["B6"].user)
	}
	// An address on the Internet goes to Tor too, whose exits cannot
	// reach it (OutboundBindAddress): the fetch fails, and nothing
	// reaches the Internet's server or the uplink.
	if body, err := g.wsCurl(g.A, "http://"+inetAddr4+"/"); err == nil {
		t.Errorf("ws A fetched http://%s/ (only the testnet is reachable through Tor): %q", inetAddr4, body)
	}
	// The servers the onion-service assertions will publish (80) and
	// keep unpublished (8080) answer in workstation A.
	for _, port := range []int{80, 8080} {
		accepts := g.wsServe(g.A, port)
		want := fmt.Sprintf("ws-A-%d\n", port)
		if body, err := g.wsCurl(g.A, fmt.Sprintf("http://127.0.0.1:%d/", port)); err != nil || body != want || accepts.Load() != 1 {
			t.Errorf("ws A's server on :%d: %q, %v, %d accepts", port, body, err, accepts.Load())
		}
	}
	g.checkRelay()
	g.checkClean("service")

	// 3. Restarts keep the service (the same state directory).
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		rb := time.Now()
		ready := g.restartTorgate(sig)
		for _, wf := range []struct {
			w   *wsHost
			fam int
		}{{g.A, 4}, {g.B, 6}} {
			if _, err := g.waitWeb(wf.w, wf.fam, torFetchTime); err != nil {
				t.Errorf("after %v: %v", sig, err)
			}
		}
		t.Logf("restart after %v: ready %v, both workstations served %v after the stop", sig, ready.Round(time.Millisecond), time.Since(rb).Round(time.Millisecond))
		g.checkClean("restarted after " + sig.String())
	}
	g.checkRelay()
	t.Logf("whole test: %v", time.Since(began).Round(time.Second))
}
