//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Addresses, all from 198.18.0.0/15 (RFC 2544 benchmarking), which exist
// only inside the namespaces the harness creates.
const (
	targetIP    = "198.18.1.1"     // the servers, on the server namespace's lo
	targetNet   = "198.18.1.0/24"  // targetIP and the other -dests
	maxDests    = 250              // of targetNet, from targetIP up
	vethGW      = "198.18.0.1/30"  // kernel path, server end
	vethWS      = "198.18.0.2/30"  // kernel path, workstation end
	vethGWAddr  = "198.18.0.1"     //
	upGW        = "198.18.3.1/30"  // the gateway's link to the servers, gateway end
	upSrv       = "198.18.3.2/30"  // and server end
	upSrvAddr   = "198.18.3.2"     //
	upMTU       = "65535"          // the largest a veth takes: close to lo's 65536, which this leg was until 2026-12-05
	tunWS       = "198.18.2.2/24"  // router path, workstation's TUN address
	socksListen = "127.0.0.1:1080" // in the gateway namespace
	socksSock   = "socks.sock"     // the SOCKS server's unix socket, in env.sockDir
	iperfPort   = "5201"
	servePort   = "8080"
	tunPrefix   = "tgb" // router i's TUN is tgb<i>
	vethWSName  = "tgbk0"
	vethGWName  = "tgbk1" // in the server namespace
	upGWName    = "tgbs0"
	upSrvName   = "tgbs1"
)

type runFlags struct {
	routers    []routerSpec
	torgate    string
	out        string
	mtus       string
	largeTests string
	tests      string
	repeat     int
	iperfTime  time.Duration
	loadTime   time.Duration
	openRate   float64
	reconnRate float64
	workers    int
	dests      int
	closer     string
	settle     time.Duration
	vnetHdr    bool
	commit     string
	note       string
	id         string
	fresh      bool
	// upstream is the SOCKS5 server in the gateway namespace: "tgbench"
	// (tgbench socks, TCP and unix socket), "tgbench=PATH" (the socks
	// subcommand of another tgbench build, to compare two versions of
	// the server) or "microsocks".
	upstream string
	// perfStat asks for a second measure of the router's CPU in each
	// short-connection run (perfstat.go).
	perfStat bool
	// paths are the paths measured, in order: pathTUN, pathLAN
	// (lanpath.go).
	paths []string
	// lanRouters are the routers of the LAN path (-lan-router).
	lanRouters []routerSpec
}

// Upstreams: the SOCKS5 servers the routers can be measured behind.
const (
	upstreamTgbench    = "tgbench"
	upstreamMicrosocks = "microsocks"
)

// All tests, in run order.
var allTests = []string{"tcp-up-1", "tcp-down-1", "tcp-up-8", "tcp-down-8", "conn-closed", "conn-open", "reconnect"}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tgbench run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f runFlags
	fs.Func("router", "router under test: a known peer, NAME or NAME=PATH (PATH its binary), or a command template, [NAME=]TEMPLATE (see the contract in bench/README.md); placeholders {tun} or {tunfd}, {socks} (the SOCKS5 server's host:port), {sockshost}, {socksport}, {socksunix} (the same server's unix socket path, for e.g. --socks unix:{socksunix}), {mtu}, {metrics} (an admin endpoint, unix:PATH, whose /metrics the harness scrapes each second), {torgate}, {tgbench}. Repeat the flag to measure several routers (or settings) in one sitting, each right after the kernel path (default: torgate). Known peers (NAME may carry a -suffix):"+peersUsage(), func(v string) error {
		spec, err := parseRouterSpec(v, len(f.routers))
		if err != nil {
			return err
		}
		f.routers = append(f.routers, spec)
		return nil
	})
	fs.StringVar(&f.torgate, "torgate", "", "torgate binary for {torgate}")
	fs.StringVar(&f.out, "out", "", "directory for results.json, results.md and router.log (default: a new directory under /tmp)")
	fs.StringVar(&f.mtus, "mtus", "1500,9000", "MTUs to measure, comma-separated; the first is the reference")
	fs.StringVar(&f.tests, "tests", strings.Join(allTests, ","), "tests at the reference MTU")
	fs.StringVar(&f.largeTests, "large-tests", "tcp-up-1,tcp-down-1,tcp-up-8,tcp-down-8", "tests at the other MTUs")
	fs.IntVar(&f.repeat, "repeat", 3, "runs of each test per path; medians are reported")
	fs.DurationVar(&f.iperfTime, "iperf-time", 10*time.Second, "iperf3 duration")
	fs.DurationVar(&f.loadTime, "load-time", 10*time.Second, "duration of each short-connection load")
	fs.Float64Var(&f.openRate, "open-rate", 1000, "open-loop rate, connections/s (below both paths' capacity: the figure of interest is latency)")
	fs.Float64Var(&f.reconnRate, "reconnect-rate", 1000, "reconnect test rate, connections/s")
	fs.IntVar(&f.workers, "workers", 16, "closed-loop workers")
	fs.StringVar(&f.closer, "closer", closerServer, "short-connection tests: who closes first, server (it closes after its answer, so the router's side facing the workstation holds TIME_WAIT) or client (the workstation closes once it has the answer and holds TIME_WAIT itself)")
	fs.IntVar(&f.dests, "dests", 1, "short-connection tests: destinations the connections are spread over, round robin (198.18.1.1 and up, 1-250): a router's per-destination state (automap, circuits, timers) grows with them, as a browser's page load meets many hosts")
	fs.DurationVar(&f.settle, "settle", 500*time.Millisecond, "name mode: time the router gets to configure its TUN before it is moved")
	fs.BoolVar(&f.vnetHdr, "vnet-hdr", true, "fd mode: open the TUN with IFF_VNET_HDR (offloads)")
	fs.StringVar(&f.commit, "commit", "", "commit under test, for the report")
	fs.StringVar(&f.note, "note", "", "settings note for the report")
	fs.BoolVar(&f.fresh, "fresh", true, "restart each router before each of its runs, so that CPU and peak RSS are the run's own (not memory kept from an earlier test)")
	fs.StringVar(&f.upstream, "upstream", upstreamTgbench, "SOCKS5 server behind the routers: tgbench (its own, TCP and {socksunix}), tgbench=PATH (the socks subcommand of another tgbench binary, e.g. an older build) or microsocks (Debian's, C, a thread per connection; TCP only, and no-authentication only, so not torgate, which always authenticates)")
	fs.BoolVar(&f.perfStat, "perf-stat", false, "short-connection tests: also measure the router's CPU with perf stat -e task-clock -p PID over the load (or, if perf cannot count, its threads' schedstat run time), reported beside the /proc figure")
	fs.StringVar(&f.id, "id", "", "prefix of the namespaces (default tgb-RANDOM); run.sh passes one so its trap can clean up")
	paths := fs.String("paths", pathTUN, "paths to measure, comma-separated, in order: tun (a workstation namespace whose only route is the router's TUN) and lan (a workstation on a veth whose gateway end the router serves: torgate --lan, the gateway kernel's forwarding, redsocks; see lanpath.go)")
	fs.Func("path", "one path to measure, tun or lan (the same as -paths with one)", func(v string) error { *paths = v; return nil })
	fs.Func("lan-router", "LAN path router: torgate or torgate-SUFFIX=PATH (torgate --lan on the gateway's end of the veth), redsocks or redsocks=PATH (iptables REDIRECT into redsocks), or NAME=TEMPLATE with {lan} (the interface to serve; started with nsenter --net in the gateway namespace). Repeatable; default torgate, and redsocks if installed", func(v string) error {
		spec, err := parseLANRouterSpec(v)
		if err != nil {
			return err
		}
		f.lanRouters = append(f.lanRouters, spec)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}

	if os.Geteuid() != 0 {
		return errors.New("tgbench run needs root (network namespaces, TUN)")
	}
	for _, tool := range []string{"ip", "iperf3", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s in PATH", tool)
		}
	}
	if f.closer != closerServer && f.closer != closerClient {
		return fmt.Errorf("--closer %q: want %s or %s", f.closer, closerServer, closerClient)
	}
	if f.closer == closerClient && slices.Contains(strings.Split(f.tests+","+f.largeTests, ","), "reconnect") {
		// The reconnect test reuses 4-tuples the far side still holds in
		// TIME_WAIT; with the client closing first it is the client that
		// holds them, and the test measures its own kernel.
		return errors.New("--closer client: leave out the reconnect test (-tests), whose point is the far side's TIME_WAIT")
	}
	if f.dests < 1 || f.dests > maxDests {
		return fmt.Errorf("--dests %d: want 1-%d", f.dests, maxDests)
	}
	mtus, err := parseInts(f.mtus)
	if err != nil || len(mtus) == 0 {
		return fmt.Errorf("--mtus: %q", f.mtus)
	}
	if f.paths, err = parsePaths(*paths); err != nil {
		return err
	}
	if len(f.routers) == 0 && slices.Contains(f.paths, pathTUN) {
		torgate, _ := findPeer("torgate")
		f.routers = []routerSpec{torgate.spec("torgate", "")}
	}
	if !slices.Contains(f.paths, pathTUN) {
		f.routers = nil
	}
	if slices.Contains(f.paths, pathLAN) {
		if len(f.lanRouters) == 0 {
			f.lanRouters = defaultLANRouters(stderr)
		}
		if err := checkLANRouters(f.lanRouters, f.torgate); err != nil {
			return err
		}
	} else {
		f.lanRouters = nil
	}
	if err := checkUpstream(f.upstream, slices.Concat(f.routers, f.lanRouters)); err != nil {
		return err
	}
	if _, err := exec.LookPath("microsocks"); f.upstream == upstreamMicrosocks && err != nil {
		return errors.New("-upstream microsocks: no microsocks in PATH (Debian: apt install microsocks)")
	}
	if err := checkRouters(f.routers, f.torgate); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if f.id == "" {
		var id [3]byte
		rand.Read(id[:])
		f.id = "tgb-" + hex.EncodeToString(id[:])
	}
	e := &env{f: f, self: self, id: f.id, log: stderr}
	e.gw, e.srv, e.wsK = e.id+"-gw", e.id+"-srv", e.id+"-wsk"
	for i, spec := range f.routers {
		e.tunRouters = append(e.tunRouters, &routerInst{
			spec: spec,
			tun:  fmt.Sprintf("%s%d", tunPrefix, i),
			ws:   fmt.Sprintf("%s-ws%d", e.id, i),
		})
	}
	e.newLANRouters()
	if f.out == "" {
		f.out = filepath.Join(os.TempDir(), e.id)
	}
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return err
	}
	e.f.out = f.out
	defer e.teardown()

	rep := &Report{
		Date:       time.Now().UTC().Format(time.RFC3339),
		Commit:     f.commit,
		Routers:    f.routers,
		Note:       f.note,
		CPUs:       runtime.NumCPU(),
		Kernel:     kernelRelease(),
		Repeat:     f.repeat,
		IperfS:     f.iperfTime.Seconds(),
		LoadS:      f.loadTime.Seconds(),
		Workers:    f.workers,
		Dests:      f.dests,
		Closer:     f.closer,
		Upstream:   f.upstream,
		Paths:      f.paths,
		LANRouters: f.lanRouters,
	}
	if err := e.setup(ctx); err != nil {
		return err
	}
	if err := e.setupLAN(ctx, mtus[0]); err != nil {
		return err
	}
	for _, path := range f.paths {
		e.usePath(path)
		for i, mtu := range mtus {
			if path == pathLAN && i > 0 {
				// The LAN path runs at the reference MTU only: its
				// veths are made with it (lanpath.go).
				break
			}
			tests := f.tests
			if i > 0 {
				tests = f.largeTests
			}
			rows, err := e.measureMTU(ctx, mtu, strings.Split(tests, ","))
			rep.Rows = append(rep.Rows, rows...)
			if err != nil {
				e.writeReport(rep, stdout)
				return err
			}
		}
	}
	return e.writeReport(rep, stdout)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for p := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func kernelRelease() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return ""
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// checkUpstream validates -upstream against the routers. microsocks
// serves TCP only, and offers username/password only with one fixed user,
// whose credentials it checks; torgate always authenticates, with
// credentials derived per source for stream isolation (even with
// --isolation none), so microsocks refuses its every stream. Rather than
// a row of failures, such routers are refused here: torgate is measured
// behind tgbench's server, and the two servers are compared with the
// routers that offer no authentication (hev, tun2socks).
func checkUpstream(upstream string, routers []routerSpec) error {
	switch name, path, _ := strings.Cut(upstream, "="); {
	case name == upstreamTgbench && path == "" && upstream == name:
		return nil
	case name == upstreamTgbench && path != "":
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("-upstream %s: %w", upstream, err)
		}
		return nil
	case upstream == upstreamMicrosocks:
	default:
		return fmt.Errorf("-upstream %q: want %s, %s=PATH or %s", upstream, upstreamTgbench, upstreamTgbench, upstreamMicrosocks)
	}
	for _, r := range routers {
		switch {
		case r.uses("socksunix"):
			return fmt.Errorf("-router %s: -upstream microsocks has no unix socket for {socksunix}; use {socks}, or -upstream tgbench", r.Name)
		case r.Peer == "torgate" || r.uses("torgate") || r.uses("tgbench"):
			return fmt.Errorf("-router %s: torgate authenticates every stream with its own isolation credentials, which microsocks (one fixed user, or none) refuses; measure it with -upstream tgbench", r.Name)
		}
	}
	return nil
}

// checkRouters validates the routers before anything starts.
func checkRouters(routers []routerSpec, torgate string) error {
	names := map[string]bool{}
	for _, r := range routers {
		if r.uses("torgate") && torgate == "" {
			return fmt.Errorf("-router %s: -torgate is needed by the template", r.Name)
		}
		if !r.uses("tun") && !r.uses("tunfd") {
			return fmt.Errorf("-router %s: %q must contain {tun} or {tunfd}", r.Name, r.Template)
		}
		if names[r.Name] {
			return fmt.Errorf("two routers named %q", r.Name)
		}
		names[r.Name] = true
	}
	return nil
}

// routerSpec is one router under test. Without -router it is the torgate
// peer: name mode, the SOCKS server over a unix socket as torgate reaches
// its managed Tor in production. Other routers (and torgate for a
// like-for-like row) use {socks}, the TCP endpoint.
type routerSpec struct {
	Name     string `json:"name"`
	Template string `json:"template"`
	// Peer is the known peer the template came from (peers.go), if any.
	Peer string `json:"peer,omitempty"`
	// Config, if set, is written (placeholders filled) to a file for each
	// start of the router, whose path is {config}.
	Config string `json:"config,omitempty"`
}

// uses reports whether the template or the config file has placeholder
// {name}.
func (r routerSpec) uses(name string) bool {
	ph := "{" + name + "}"
	return strings.Contains(r.Template, ph) || strings.Contains(r.Config, ph)
}

// routerInst is a router in this sitting: its own TUN and workstation
// namespace, all sharing the gateway namespace and its servers.
type routerInst struct {
	spec routerSpec
	// tun is the router's device: its TUN, or on the LAN path the
	// gateway's end of its veth (lan.gwIf).
	tun string
	ws  string
	// lan is set for a router of the LAN path (lanpath.go).
	lan  *lanLink
	proc *routerProc
	// metrics is the admin endpoint given as {metrics} (unix:PATH), ""
	// when the template does not serve one.
	metrics string
}

// env is one sitting: the namespaces, the servers and the routers.
type env struct {
	f    runFlags
	self string
	id   string
	// gw holds the routers and the SOCKS server, srv the target and
	// iperf3, wsK the kernel path's workstation. The servers are not in
	// gw because a router may refuse its own addresses as destinations
	// (torgate does since 2026-12-04: through an exit they would reach
	// the gateway itself).
	gw, srv, wsK string
	// routers are the current path's (usePath): tunRouters or
	// lanRouters.
	routers                []*routerInst
	tunRouters, lanRouters []*routerInst
	// path is the path being measured, pathTUN or pathLAN; tunWSK and
	// lanWSK are the kernel path's workstation on each (wsK is the
	// current one).
	path           string
	tunWSK, lanWSK string
	// lanKernel is the LAN path's kernel workstation's link.
	lanKernel *lanLink
	log       io.Writer
	procs     []*exec.Cmd // servers in the gateway and server namespaces
	nsMade    []string
	// The servers' pids, whose CPU each run measures (ip netns exec execs
	// the server in place, so these are the servers themselves).
	socksPID, targetPID, iperfPID int
	// sockDir holds the SOCKS server's unix socket; removed in teardown.
	sockDir string
}

// makeSockDir makes a short private directory for the unix sockets: the
// SOCKS server's and the routers' metrics endpoints (the output directory
// may be too long a path for sun_path). Unix socket paths are not per
// network namespace, so a router in the gateway namespace reaches the
// SOCKS server there like the TCP endpoint, and the harness scrapes the
// routers' metrics from outside their namespace.
func (e *env) makeSockDir() error {
	dir, err := os.MkdirTemp("", e.id+"-")
	if err != nil {
		return err
	}
	e.sockDir = dir
	for _, r := range slices.Concat(e.tunRouters, e.lanRouters) {
		if r.spec.uses("metrics") {
			r.metrics = "unix:" + filepath.Join(dir, "metrics-"+r.tun+".sock")
		}
	}
	return nil
}

// socksUnix is the path of the SOCKS server's unix socket ({socksunix}).
func (e *env) socksUnix() string { return filepath.Join(e.sockDir, socksSock) }

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// setup creates the namespaces, the kernel path and the servers.
func (e *env) setup(ctx context.Context) error {
	if err := e.makeSockDir(); err != nil {
		return err
	}
	e.tunWSK = e.wsK
	nss := []string{e.gw, e.srv, e.wsK}
	for _, r := range e.tunRouters {
		nss = append(nss, r.ws)
	}
	for _, ns := range nss {
		if err := ip(ctx, "netns", "add", ns); err != nil {
			return err
		}
		e.nsMade = append(e.nsMade, ns)
		if err := ip(ctx, "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	e.logf("namespaces %s", strings.Join(nss, ", "))
	if err := ipBatch(ctx,
		[]string{"link", "add", vethWSName, "netns", e.wsK, "type", "veth", "peer", "name", vethGWName, "netns", e.srv},
		[]string{"-n", e.wsK, "addr", "add", vethWS, "dev", vethWSName},
		[]string{"-n", e.srv, "addr", "add", vethGW, "dev", vethGWName},
		[]string{"-n", e.wsK, "link", "set", vethWSName, "up"},
		[]string{"-n", e.srv, "link", "set", vethGWName, "up"},
		[]string{"-n", e.wsK, "route", "add", "default", "via", vethGWAddr},
		[]string{"link", "add", upGWName, "netns", e.gw, "mtu", upMTU, "type", "veth", "peer", "name", upSrvName, "netns", e.srv, "mtu", upMTU},
		[]string{"-n", e.gw, "addr", "add", upGW, "dev", upGWName},
		[]string{"-n", e.srv, "addr", "add", upSrv, "dev", upSrvName},
		[]string{"-n", e.gw, "link", "set", upGWName, "up"},
		[]string{"-n", e.srv, "link", "set", upSrvName, "up"},
		[]string{"-n", e.gw, "route", "add", targetNet, "via", upSrvAddr},
	); err != nil {
		return err
	}
	// The destinations of the short-connection tests, targetIP and the
	// next dests-1 addresses, all on the server namespace's lo.
	var addrs [][]string
	for a, i := netip.MustParseAddr(targetIP), 0; i < e.f.dests; a, i = a.Next(), i+1 {
		addrs = append(addrs, []string{"-n", e.srv, "addr", "add", a.String() + "/32", "dev", "lo"})
	}
	if err := ipBatch(ctx, addrs...); err != nil {
		return err
	}
	// The SOCKS server the router uses (TCP and unix socket, one
	// process) in the gateway namespace; the short-connection target and
	// iperf3 in the server namespace, which the gateway reaches over a
	// veth (the SOCKS server's dials) and the kernel path's workstation
	// over another (its only route).
	socksBin := e.self
	if path, ok := strings.CutPrefix(e.f.upstream, upstreamTgbench+"="); ok {
		socksBin = path
	}
	socksCmd := append([]string{socksBin, "socks", "-listen", socksListen, "-unix", e.socksUnix()}, e.socksArgs()...)
	if e.f.upstream == upstreamMicrosocks {
		host, port, _ := net.SplitHostPort(socksListen)
		socksCmd = []string{"microsocks", "-i", host, "-p", port}
	}
	for _, s := range []struct {
		pid  *int
		ns   string
		args []string
	}{
		{&e.socksPID, e.gw, socksCmd},
		{&e.targetPID, e.srv, []string{e.self, "serve", "-listen", "0.0.0.0:" + servePort, "-closer", e.f.closer}},
		{&e.iperfPID, e.srv, []string{"iperf3", "-s", "-B", targetIP, "-p", iperfPort}},
	} {
		pid, err := e.startServer(s.ns, s.args...)
		if err != nil {
			return err
		}
		*s.pid = pid
	}
	// Wait until they listen.
	for _, l := range []struct{ ns, addr string }{{e.gw, socksListen}, {e.srv, "0.0.0.0:" + servePort}, {e.srv, targetIP + ":" + iperfPort}} {
		addr := l.addr
		if !waitFor(ctx, 5*time.Second, func() bool { return listening(l.ns, addr) }) {
			return fmt.Errorf("server on %s did not start (see %s)", addr, filepath.Join(e.f.out, "servers.log"))
		}
	}
	if e.f.upstream != upstreamMicrosocks && !waitFor(ctx, 5*time.Second, func() bool { return unixListening(e.socksUnix()) }) {
		return fmt.Errorf("SOCKS server on %s did not start (see %s)", e.socksUnix(), filepath.Join(e.f.out, "servers.log"))
	}
	// The rig's CPU figures are only right if these are the servers and
	// not an ip(8) that forked them.
	self := filepath.Base(e.self)
	self = self[:min(len(self), 15)] // comm is truncated to TASK_COMM_LEN-1
	socksName := filepath.Base(socksBin)
	socksName = socksName[:min(len(socksName), 15)]
	if e.f.upstream == upstreamMicrosocks {
		socksName = "microsocks"
	}
	for pid, want := range map[int]string{e.socksPID: socksName, e.targetPID: self, e.iperfPID: "iperf3"} {
		if got := procName(pid); got != want {
			e.logf("warning: pid %d is %q, not %s: its CPU figures are not the server's", pid, got, want)
		}
	}
	return nil
}

// unixListening reports whether a unix stream socket at path accepts.
func unixListening(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// socksArgs are extra flags for the SOCKS server (a pprof socket when
// TGBENCH_SOCKS_PPROF names one).
func (e *env) socksArgs() []string {
	if p := os.Getenv("TGBENCH_SOCKS_PPROF"); p != "" {
		return []string{"-pprof", p}
	}
	return nil
}

// startServer starts a server in namespace ns and returns its pid.
func (e *env) startServer(ns string, args ...string) (int, error) {
	log, err := os.OpenFile(filepath.Join(e.f.out, "servers.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer log.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", args[0], err)
	}
	e.procs = append(e.procs, cmd)
	return cmd.Process.Pid, nil
}

// listening reports whether something listens on addr in namespace ns.
func listening(ns, addr string) bool {
	out, err := exec.Command("ip", "netns", "exec", ns, "ss", "-Hltn", "src", addr).Output()
	return err == nil && len(bytes.TrimSpace(out)) > 0
}

// teardown stops every process the harness started and deletes the
// namespaces. It runs on every exit path, interrupts included.
func (e *env) teardown() {
	e.stopRouters()
	for _, c := range e.procs {
		c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range e.procs {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
	e.procs = nil
	for _, ns := range e.nsMade {
		// Anything still inside was started by this run: stop it by pid.
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for p := range strings.FieldsSeq(string(out)) {
				if pid, err := strconv.Atoi(p); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		exec.Command("ip", "netns", "del", ns).Run()
	}
	e.nsMade = nil
	if e.sockDir != "" {
		os.RemoveAll(e.sockDir)
		e.sockDir = ""
	}
}

// startRouter starts one router for one MTU and wires its TUN into its
// workstation namespace.
func (e *env) startRouter(ctx context.Context, r *routerInst, mtu int) error {
	if r.lan != nil {
		return e.startLANRouter(ctx, r)
	}
	command, logPath, err := e.routerCommand(r, mtu)
	if err != nil {
		return err
	}
	fdMode := r.spec.uses("tunfd")
	var extra []*os.File
	if fdMode {
		tf, err := openTUNIn(r.ws, r.tun, e.f.vnetHdr)
		if err != nil {
			return err
		}
		defer tf.Close() // the router has its own copy
		extra = []*os.File{tf}
		if err := e.configureTUN(ctx, r, mtu); err != nil {
			return err
		}
	}
	p, err := startRouter(ipNetnsExec(e.gw), command, logPath, extra)
	if err != nil {
		return err
	}
	r.proc = p
	if !fdMode {
		if !waitFor(ctx, 10*time.Second, func() bool { return linkExists(e.gw, r.tun) || !p.alive() }) || !p.alive() {
			return fmt.Errorf("router %s did not create TUN %s (see %s)", r.spec.Name, r.tun, logPath)
		}
		// Give the router time to configure its device, then take it.
		waitFor(ctx, e.f.settle, func() bool { return false })
		if !p.alive() {
			return fmt.Errorf("router %s exited (see %s)", r.spec.Name, logPath)
		}
		if err := ip(ctx, "-n", e.gw, "link", "set", r.tun, "netns", r.ws); err != nil {
			return err
		}
		if err := e.configureTUN(ctx, r, mtu); err != nil {
			return err
		}
	}
	time.Sleep(200 * time.Millisecond)
	if !p.alive() {
		return fmt.Errorf("router %s exited after start (see %s)", r.spec.Name, logPath)
	}
	e.logf("router %s pid %d, mtu %d: %s", r.spec.Name, p.pid, mtu, command)
	return nil
}

// routerCommand fills r's template (and writes its config file, if any)
// for one start, and returns the command and the router's log file.
func (e *env) routerCommand(r *routerInst, mtu int) (command, logPath string, err error) {
	host, port, _ := net.SplitHostPort(socksListen)
	vars := map[string]string{
		"tun":       r.tun,
		"tunfd":     "3",
		"socks":     socksListen,
		"sockshost": host,
		"socksport": port,
		"socksunix": e.socksUnix(),
		"mtu":       strconv.Itoa(mtu),
		"metrics":   r.metrics,
		"torgate":   e.f.torgate,
		"tgbench":   e.self,
	}
	if r.lan != nil {
		maps.Copy(vars, r.lan.vars())
	}
	if r.spec.Config != "" {
		path := filepath.Join(e.f.out, "router-"+r.spec.Name+".conf")
		if err := os.WriteFile(path, []byte(expandRouter(r.spec.Config, vars)), 0o644); err != nil {
			return "", "", fmt.Errorf("router %s config: %w", r.spec.Name, err)
		}
		vars["config"] = shellQuote(path)
	}
	return expandRouter(r.spec.Template, vars), filepath.Join(e.f.out, "router-"+r.spec.Name+".log"), nil
}

func (e *env) configureTUN(ctx context.Context, r *routerInst, mtu int) error {
	return ipBatch(ctx,
		[]string{"-n", r.ws, "addr", "add", tunWS, "dev", r.tun},
		[]string{"-n", r.ws, "link", "set", r.tun, "mtu", strconv.Itoa(mtu), "up"},
		[]string{"-n", r.ws, "route", "add", "default", "dev", r.tun},
	)
}

// stopRouters stops the routers of every path.
func (e *env) stopRouters() {
	for _, r := range slices.Concat(e.tunRouters, e.lanRouters) {
		e.stopRouter(r)
	}
}

func (e *env) stopRouter(r *routerInst) {
	if r.proc != nil {
		r.proc.stop()
		r.proc = nil
	}
	// A TUN the router created goes with its descriptor; a persistent one
	// (or a slow exit) is removed here. A LAN path's veth stays.
	if r.lan == nil && linkExists(r.ws, r.tun) {
		exec.Command("ip", "-n", r.ws, "link", "del", r.tun).Run()
	}
}

// measureMTU runs the tests at one MTU: for each repetition and test, the
// kernel path and then each router, back to back.
func (e *env) measureMTU(ctx context.Context, mtu int, tests []string) ([]Row, error) {
	if e.path == pathTUN {
		if err := ipBatch(ctx,
			[]string{"-n", e.wsK, "link", "set", vethWSName, "mtu", strconv.Itoa(mtu)},
			[]string{"-n", e.srv, "link", "set", vethGWName, "mtu", strconv.Itoa(mtu)},
		); err != nil {
			return nil, err
		}
	}
	defer e.stopRouters()
	for _, r := range e.routers {
		if err := e.startRouter(ctx, r, mtu); err != nil {
			return nil, err
		}
	}
	// One warm-up second through each path, so that first-use costs (the
	// routers' pools, the SOCKS server's) are not measured.
	e.load(ctx, e.wsK, "closed", 1, 0, time.Second)
	for _, r := range e.routers {
		e.load(ctx, r.ws, "closed", 1, 0, time.Second)
	}

	// rows[test][router]
	rows := make([][]Row, len(tests))
	for i, t := range tests {
		rows[i] = make([]Row, len(e.routers))
		for j, r := range e.routers {
			rows[i][j] = Row{MTU: mtu, Test: t, Router: r.spec.Name, Path: e.path}
		}
	}
	flat := func() []Row {
		var out []Row
		for _, rs := range rows {
			out = append(out, finish(rs)...)
		}
		return out
	}
	for run := range e.f.repeat {
		for i, t := range tests {
			if ctx.Err() != nil {
				return flat(), ctx.Err()
			}
			k := e.measureLogged(ctx, nil, mtu, run, t)
			for j, r := range e.routers {
				if ctx.Err() != nil {
					return flat(), ctx.Err()
				}
				if !r.proc.alive() {
					return flat(), fmt.Errorf("router %s died (see %s)", r.spec.Name, filepath.Join(e.f.out, "router-"+r.spec.Name+".log"))
				}
				if e.f.fresh && (run > 0 || i > 0) {
					e.stopRouter(r)
					if err := e.startRouter(ctx, r, mtu); err != nil {
						return flat(), err
					}
				}
				rows[i][j].KernelRuns = append(rows[i][j].KernelRuns, k)
				rows[i][j].RouterRuns = append(rows[i][j].RouterRuns, e.measureLogged(ctx, r, mtu, run, t))
			}
		}
	}
	return flat(), nil
}

func (e *env) measureLogged(ctx context.Context, r *routerInst, mtu, run int, test string) Sample {
	s, err := e.measure(ctx, r, test)
	name := "kernel"
	if r != nil {
		name = r.spec.Name
	}
	if err != nil {
		e.logf("mtu %d run %d %s %s: %v", mtu, run+1, test, name, err)
		s.Err = err.Error()
	} else {
		goPeak := ""
		if s.Go != nil {
			goPeak = fmt.Sprintf(" heap %.1fMiB goroutines %.0f", s.Go.HeapInuseMiB, s.Go.Goroutines)
		}
		e.logf("mtu %d run %d %-11s %-8s %10.1f %s  cpu %.2fs (user %.2f sys %.2f) ctxsw %d rss %.1fMiB%s%s  %s", mtu, run+1, test, name, s.Value, unitOf(test), s.CPU, s.CPUUser, s.CPUSys, s.CtxSwitches, s.RSSMiB, goPeak, s.extra(), s.Rig)
		if s.Bottleneck != nil {
			e.logf("mtu %d run %d %-11s %-8s bottleneck %s%s", mtu, run+1, test, name, s.Bottleneck, s.perfNote())
		}
	}
	return s
}

// measure runs one test on the kernel path (r nil) or through router r.
func (e *env) measure(ctx context.Context, r *routerInst, test string) (Sample, error) {
	ns := e.wsK
	var u routerUsage
	var scr *scraper
	var perf *perfStat
	if r != nil {
		ns = r.ws
		if e.f.perfStat && isConnTest(test) {
			perf = startPerfStat(r.proc.pid)
		}
		u = beginUsage(r.proc.pid)
		if r.metrics != "" {
			var err error
			if scr, err = startScrape(ctx, r.metrics); err != nil {
				e.logf("router %s: metrics: %v", r.spec.Name, err)
			}
		}
	}
	rig := e.rigBegin()
	var s Sample
	var err error
	var client float64 // the client's CPU seconds
	switch test {
	case "tcp-up-1", "tcp-down-1", "tcp-up-8", "tcp-down-8":
		streams := 1
		if strings.HasSuffix(test, "-8") {
			streams = 8
		}
		s.Value, client, err = e.iperf(ctx, ns, streams, strings.Contains(test, "down"))
	case "conn-closed":
		var lr *LoadResult
		lr, client, err = e.load(ctx, ns, "closed", e.f.workers, 0, e.f.loadTime)
		if lr != nil {
			s.Value, s.Load = lr.ConnPerSec, lr
		}
	case "conn-open":
		var lr *LoadResult
		lr, client, err = e.load(ctx, ns, "open", 0, e.f.openRate, e.f.loadTime)
		if lr != nil {
			s.Value, s.Load = lr.ConnPerSec, lr
		}
	case "reconnect":
		var lr *LoadResult
		lr, client, err = e.load(ctx, ns, "reconnect", 0, e.f.reconnRate, e.f.loadTime)
		if lr != nil {
			s.Value, s.Load = lr.ConnPerSec, lr
		}
	default:
		return s, fmt.Errorf("unknown test %q", test)
	}
	if r != nil {
		u.end(&s)
	}
	if perf != nil {
		var perr error
		if s.PerfRouter, s.PerfSource, perr = perf.stop(); perr != nil {
			s.PerfErr = perr.Error()
			e.logf("router %s: second CPU source: %v", r.spec.Name, perr)
		}
	}
	if scr != nil {
		// A missing scrape costs the run its Go figures, not its result.
		if g, err := scr.stop(ctx); err != nil {
			e.logf("router %s: metrics: %v", r.spec.Name, err)
		} else {
			s.Go = &g
		}
	}
	s.Rig = e.rigEnd(rig, client)
	util := utilisation(s.CPU, s.Rig, runtime.NumCPU())
	bn := util.bottleneck()
	s.Util, s.Bottleneck = &util, &bn
	return s, err
}

// iperf runs an iperf3 client in ns and returns the receiver's Mbit/s and
// the client's CPU seconds.
func (e *env) iperf(ctx context.Context, ns string, streams int, reverse bool) (mbps, cpu float64, err error) {
	secs := int(e.f.iperfTime.Seconds())
	args := []string{"netns", "exec", ns, "iperf3", "-c", targetIP, "-p", iperfPort,
		"-t", strconv.Itoa(secs), "-O", "1", "-P", strconv.Itoa(streams), "-J", "--connect-timeout", "5000"}
	if reverse {
		args = append(args, "-R")
	}
	ctx, cancel := context.WithTimeout(ctx, e.f.iperfTime+90*time.Second)
	defer cancel()
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	for busy := 0; ; busy++ {
		cmd := exec.CommandContext(ctx, "ip", args...)
		var out []byte
		out, err = cmd.Output()
		cpu += exitedCPU(cmd)
		res.Error = ""
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			return 0, cpu, fmt.Errorf("iperf3: %v; %v", err, jerr)
		}
		// The server runs one test at a time. A router that is slow to
		// tear down the previous test's streams (seen with tun2socks
		// after -R) keeps it busy for a while: wait for it, up to 30 s.
		if strings.Contains(res.Error, "server is busy") && busy < 30 {
			time.Sleep(time.Second)
			continue
		}
		break
	}
	if res.Error != "" {
		return 0, cpu, fmt.Errorf("iperf3: %s", res.Error)
	}
	if err != nil {
		return 0, cpu, fmt.Errorf("iperf3: %w", err)
	}
	return res.End.SumReceived.BitsPerSecond / 1e6, cpu, nil
}

// load runs the load generator in ns and returns its result and its CPU
// seconds.
func (e *env) load(ctx context.Context, ns, mode string, workers int, rate float64, d time.Duration) (*LoadResult, float64, error) {
	args := []string{"netns", "exec", ns, e.self, "load", "-target", targetIP + ":" + servePort,
		"-dests", strconv.Itoa(e.f.dests), "-closer", e.f.closer, "-mode", mode, "-duration", d.String()}
	if workers > 0 {
		args = append(args, "-workers", strconv.Itoa(workers))
	}
	if rate > 0 {
		args = append(args, "-rate", strconv.FormatFloat(rate, 'f', -1, 64))
	}
	ctx, cancel := context.WithTimeout(ctx, d+60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	cpu := exitedCPU(cmd)
	if err != nil {
		return nil, cpu, fmt.Errorf("load: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var lr LoadResult
	if err := json.Unmarshal(out, &lr); err != nil {
		return nil, cpu, fmt.Errorf("load output: %w", err)
	}
	return &lr, cpu, nil
}

// isConnTest reports whether test is a short-connection test.
func isConnTest(test string) bool { return !strings.HasPrefix(test, "tcp-") }

func unitOf(test string) string {
	if strings.HasPrefix(test, "tcp-") {
		return "Mbit/s"
	}
	return "conn/s"
}
