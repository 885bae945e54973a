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
	"log/slog"
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

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/assign"
	"github.com/torgate/torgate/internal/testnet"
)

// tgbench tor: the path through Tor, on the project's private Tor network
// (internal/testnet), for each way of bringing a workstation to one client
// tor:
//
//   - transport: Whonix's path. The client tor has a TransPort and a
//     DNSPort (AutomapHostsOnResolve, VirtualAddrNetworkIPv4 10.192.0.0/10,
//     as Whonix's gateway), and the gateway namespace REDIRECTs the
//     workstation's TCP into the TransPort and its UDP/53 into the DNSPort
//     (iptables -t nat). Tor terminates the TCP itself; no router process.
//   - torgate: torgate attached to the client tor (--tor-control, its
//     SocksPort from there), serving a workstation namespace through its
//     TUN (fd mode, as tgbench run's {tunfd}), DNS through torgate.
//   - hev (with -hev PATH): hev-socks5-tunnel into the SocksPort, DNS
//     through the client tor's DNSPort.
//   - torgate-managed: torgate with its own (managed) tor, which joins the
//     private network through --torrc, on a TUN as the torgate path. No
//     harness client tor.
//   - torgate-n: the same with --tor-instances N (-instances): N client
//     tors behind one torgate, each workstation pinned to one of them.
//
// With -workstations W every path is loaded by W workstations at once:
// W source addresses on the path's workstation namespace (its TUN, or
// the transport path's veth), one tgbench torload process binding every
// socket of workstation i to address i (-src), and the figures are the
// aggregate. For torgate-n the harness writes torgate's instance key
// (STATE_DIR/tor-instances.key) and picks the addresses so that the
// workstations fall evenly on the instances; each tor's own traffic
// counters (GETINFO traffic/read, traffic/written) over a test show
// whether the load did spread.
//
// Layout: "tgbench tor" creates the gateway namespace and runs itself
// again inside it (nsenter --net, so that the private Tor network's
// loopback, the client tor and the routers all live there) with -inner;
// the inner process makes one workstation namespace per path, runs the
// rounds and writes the report; the outer one removes every namespace
// whose name starts with the run's id when the inner one has exited,
// whatever happened. Every tor has Pdeathsig (testnet's and the client
// tor), routers are stopped by the inner process.

// Paths of tgbench tor.
const (
	torPathTransport = "transport"
	torPathTorgate   = "torgate"
	torPathHev       = "hev"
	torPathManaged   = "torgate-managed"
	torPathTorgateN  = "torgate-n"
)

// managedPath reports whether path's tors are torgate's own (no harness
// client tor).
func managedPath(path string) bool { return path == torPathManaged || path == torPathTorgateN }

// torgatePath reports whether path runs torgate.
func torgatePath(path string) bool { return path == torPathTorgate || managedPath(path) }

// The client tor's ports, in the gateway namespace, and the addresses of
// the workstations.
const (
	torSocks     = "127.0.0.1:19050"
	torControl   = "127.0.0.1:19051"
	torTransPort = "19040"
	torDNSPort   = "19053"
	torGWIP      = "198.18.10.1" // the gateway end of the transport workstation's veth
	torGWNet     = "198.18.10.1/24"
	torVethGW    = "tgtv0"
	torVethWS    = "tgtv1" // in the transport workstation
	torTUN       = "tgt0"
	// torWSFirst and torTUNFirst are the first workstation's address on
	// the transport veth and on a TUN; further workstations take the
	// following addresses of the /24 (torWSBits).
	torWSFirst  = "198.18.10.2"
	torTUNFirst = "198.18.2.2"
	torWSBits   = "/24"
	// torTUNDNS is where the TUN workstations send DNS: any address
	// through the TUN; torgate intercepts port 53, and hev's is REDIRECTed
	// like the transport path's.
	torTUNDNS = "198.18.2.1:53"
)

// maxWorkstations bounds -workstations: the addresses come from one /24,
// and torgate-n's even spread skips the addresses of full instances.
const maxWorkstations = 64

// TorTests are the tests of tgbench tor, in run order.
var torTests = []string{"ttfb", "conns", "down-1", "down-8", "up-1"}

type torFlags struct {
	torgate  string
	hev      string
	out      string
	paths    []string
	repeat   int
	fetches  int
	workers  int
	connTime time.Duration
	bulkTime time.Duration
	upMB     int
	// instances is torgate-n's --tor-instances; workstations how many
	// source addresses load each path at once.
	instances    int
	workstations int
	tests        []string
	commit       string
	note         string
	id           string
	inner        bool
}

// TorReport is the JSON of tgbench tor.
type TorReport struct {
	Start  time.Time `json:"start"`
	Host   string    `json:"host"`
	CPUs   int       `json:"cpus"`
	Commit string    `json:"commit,omitempty"`
	Note   string    `json:"note,omitempty"`
	Repeat int       `json:"repeat"`
	// Workstations loaded each path at once; Instances is torgate-n's
	// tor count.
	Workstations int `json:"workstations"`
	Instances    int `json:"instances"`
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end
	// (others may share the machine).
	LoadBefore string      `json:"load_before"`
	LoadAfter  string      `json:"load_after"`
	Flags      []string    `json:"flags"`
	Samples    []TorSample `json:"samples"`
	Rows       []TorRow    `json:"rows"`
}

// TorSample is one test on one path in one round.
type TorSample struct {
	Round int            `json:"round"`
	Path  string         `json:"path"`
	Test  string         `json:"test"`
	Load  *TorLoadResult `json:"load,omitempty"`
	Err   string         `json:"error,omitempty"`
	// CPU seconds over the test: the client tor (all threads; every
	// instance's, summed, on torgate-n), the router process (none on the
	// transport path), the machine's busy time.
	TorCPU     float64 `json:"tor_cpu_s"`
	RouterCPU  float64 `json:"router_cpu_s"`
	MachineCPU float64 `json:"machine_busy_s"`
	Wall       float64 `json:"wall_s"`
	// Where the rest of the machine's CPU went: NetCPU the private
	// network's tors (authorities, relays, exits), WebCPU the harness
	// process (the network's web and DNS servers run in it), ClientCPU
	// the torload process (the workstations' sockets).
	NetCPU    float64 `json:"net_cpu_s"`
	WebCPU    float64 `json:"web_cpu_s"`
	ClientCPU float64 `json:"client_cpu_s"`
	// TorThread is the client tor's busiest thread over the test (its
	// name from /proc, "tor" is the main thread; "K/name" of instance K
	// with several tors) and TorThreadCores its share of one core.
	TorThread      string  `json:"tor_thread"`
	TorThreadCores float64 `json:"tor_thread_cores"`
	RouterCores    float64 `json:"router_cores"`
	MachineShare   float64 `json:"machine_share"`
	Bottleneck     string  `json:"bottleneck"`
	// Tors is each client tor over the test, by instance.
	Tors []TorInstSample `json:"tors"`
}

// TorInstSample is one client tor (instance) over one test.
type TorInstSample struct {
	Instance int     `json:"instance"`
	PID      int     `json:"pid"`
	CPU      float64 `json:"cpu_s"`
	Cores    float64 `json:"cores"`
	// Thread is its busiest thread, ThreadCores that thread's share of a
	// core.
	Thread      string  `json:"thread"`
	ThreadCores float64 `json:"thread_cores"`
	// MB is what the tor read plus wrote on all its connections (GETINFO
	// traffic/read + traffic/written), in 10^6 bytes; -1 if unknown.
	MB float64 `json:"mb"`
}

// TorRow is the medians of one test on one path.
type TorRow struct {
	Path   string  `json:"path"`
	Test   string  `json:"test"`
	Unit   string  `json:"unit"`
	Median float64 `json:"median"`
	P99    float64 `json:"p99_ms,omitempty"`
	// FetchP50 is ttfb's median time to the end of the answer.
	FetchP50 float64 `json:"fetch_p50_ms,omitempty"`
	Runs     int     `json:"runs"`
	Errors   int     `json:"errors"`
	Failures int     `json:"failures"`
	// TorPer and RouterPer are CPU per connection (µs) for ttfb and
	// conns, per MB (ms) for the bulk tests.
	TorPer      float64 `json:"tor_cpu_per"`
	RouterPer   float64 `json:"router_cpu_per"`
	PerUnit     string  `json:"per_unit"`
	TorThread   float64 `json:"tor_busiest_thread_cores"`
	Bottlenecks string  `json:"bottlenecks"`
	// Instances are the medians per client tor.
	Instances []TorInstRow `json:"instances,omitempty"`
	// Cores is where the machine's CPU went, medians in cores.
	Cores TorCores `json:"cores"`
}

// TorCores is CPU over a test's wall time, by consumer, in cores: the
// client tor(s), the router, the private network's tors, the harness
// (web and DNS servers), torload, the machine's busy time, and Other,
// what the machine spent beyond those (other users' processes, and
// kernel work not charged to them).
type TorCores struct {
	Tor, Router, Net, Web, Client, Machine, Other float64
}

// cores is the sample's TorCores.
func (s TorSample) cores() TorCores {
	if s.Wall <= 0 {
		return TorCores{}
	}
	c := TorCores{Tor: s.TorCPU, Router: s.RouterCPU, Net: s.NetCPU, Web: s.WebCPU, Client: s.ClientCPU, Machine: s.MachineCPU}
	c.Other = max(0, c.Machine-c.Tor-c.Router-c.Net-c.Web-c.Client)
	for _, v := range []*float64{&c.Tor, &c.Router, &c.Net, &c.Web, &c.Client, &c.Machine, &c.Other} {
		*v = roundCores(*v / s.Wall)
	}
	return c
}

// TorInstRow is the medians of one client tor on one test.
type TorInstRow struct {
	Instance    int     `json:"instance"`
	Cores       float64 `json:"cores"`
	ThreadCores float64 `json:"thread_cores"`
	// Share is its part of the tors' summed traffic (MB), 0 to 1.
	Share float64 `json:"traffic_share"`
}

func cmdTor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tgbench tor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f torFlags
	fs.StringVar(&f.torgate, "torgate", "", "torgate binary (the torgate path)")
	fs.StringVar(&f.hev, "hev", "", "hev-socks5-tunnel binary: adds the hev path")
	fs.StringVar(&f.out, "out", "", "directory for results.json, results.md and logs (default: a new directory under /tmp)")
	paths := fs.String("paths", torPathTransport+","+torPathTorgate, "paths, in order: transport, torgate, hev (hev needs -hev), torgate-managed, torgate-n")
	tests := fs.String("tests", strings.Join(torTests, ","), "tests, in order")
	fs.IntVar(&f.repeat, "repeat", 3, "rounds; each round runs every path, each with a fresh client tor; medians are reported")
	fs.IntVar(&f.fetches, "fetches", 50, "ttfb: sequential fetches by name")
	fs.IntVar(&f.workers, "workers", 4, "conns: closed-loop workers")
	fs.DurationVar(&f.connTime, "conn-time", 10*time.Second, "conns: duration")
	fs.DurationVar(&f.bulkTime, "bulk-time", 10*time.Second, "bulk tests: measured window (plus a quarter of it to warm up)")
	fs.IntVar(&f.upMB, "up-mb", 32, "upload tests: MB (2^20) per stream, timed to the server's answer (Tor queues what it reads at once, so a timed window would measure buffers)")
	fs.IntVar(&f.instances, "instances", 2, "torgate-n: --tor-instances")
	fs.IntVar(&f.workstations, "workstations", 1, "workstations (source addresses) loading each path at once; the figures are their aggregate")
	fs.StringVar(&f.commit, "commit", "", "commit under test, for the report")
	fs.StringVar(&f.note, "note", "", "settings note for the report")
	fs.StringVar(&f.id, "id", "", "prefix of the namespaces (default tgt-RANDOM)")
	fs.BoolVar(&f.inner, "inner", false, "internal: run inside the gateway namespace")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f.paths = strings.Split(*paths, ",")
	for _, p := range f.paths {
		switch p {
		case torPathTransport:
		case torPathTorgate, torPathManaged, torPathTorgateN:
			if f.torgate == "" {
				return fmt.Errorf("the %s path needs -torgate PATH", p)
			}
		case torPathHev:
			if f.hev == "" {
				return errors.New("the hev path needs -hev PATH")
			}
		default:
			return fmt.Errorf("-paths: unknown path %q", p)
		}
	}
	f.tests = strings.Split(*tests, ",")
	for _, t := range f.tests {
		if !slices.Contains(torTests, t) {
			return fmt.Errorf("-tests: unknown test %q (known: %s)", t, strings.Join(torTests, ","))
		}
	}
	if f.repeat < 1 || f.fetches < 1 || f.workers < 1 || f.upMB < 1 {
		return errors.New("-repeat, -fetches, -workers and -up-mb must be at least 1")
	}
	if f.instances < 1 || f.instances > torgate.MaxTorInstances {
		return fmt.Errorf("-instances %d: want 1 to %d", f.instances, torgate.MaxTorInstances)
	}
	if f.workstations < 1 || f.workstations > maxWorkstations {
		return fmt.Errorf("-workstations %d: want 1 to %d", f.workstations, maxWorkstations)
	}
	if f.inner {
		return torInner(ctx, f, args, stdout, stderr)
	}
	if os.Geteuid() != 0 {
		return errors.New("tgbench tor needs root (network namespaces, TUN, iptables)")
	}
	for _, tool := range []string{"ip", "nsenter", "iptables", "tor", "tor-gencert"} {
		if _, err := sbinPath(tool); err != nil {
			return fmt.Errorf("needs %s (Debian: apt install iproute2 util-linux iptables tor)", tool)
		}
	}
	var err error
	for _, b := range []*string{&f.torgate, &f.hev} {
		if *b != "" {
			if *b, err = filepath.Abs(*b); err != nil {
				return err
			}
		}
	}
	if f.id == "" {
		var b [3]byte
		rand.Read(b[:])
		f.id = "tgt-" + hex.EncodeToString(b[:])
	}
	if f.out == "" {
		if f.out, err = os.MkdirTemp("", "tgbench-tor-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(f.out, 0o755); err != nil {
		return err
	}
	if f.out, err = filepath.Abs(f.out); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	gw := f.id + "-gw"
	defer removeNamespaces(f.id)
	// The private network's relays talk over this namespace's loopback.
	// At lo's own MTU (65,536) every cell write is a "small" segment to
	// Nagle, which then waits for the peer relay's delayed ACK (40 ms),
	// and Tor's congestion control shrinks the circuit's window on that
	// round trip: uploads fell to 0.28 of the TransPort's on whichever
	// circuit had the lowest minimum RTT (bench/README.md, "the upload
	// gap", 2026-12-06). Relays meet over Ethernet-sized links in the real
	// network, so the rig's loopback gets their MTU.
	if err := ipBatch(ctx, []string{"netns", "add", gw}, []string{"-n", gw, "link", "set", "lo", "mtu", "1500", "up"}); err != nil {
		return err
	}
	inner := append(append([]string{"--net=/var/run/netns/" + gw, self, "tor"}, args...),
		"-inner", "-id", f.id, "-out", f.out, "-torgate", f.torgate, "-hev", f.hev)
	cmd := exec.CommandContext(ctx, "nsenter", inner...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	return cmd.Run()
}

// sbinPath finds a tool in PATH or in /usr/sbin, /sbin (where tor and
// iptables live, outside some PATHs).
func sbinPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s in PATH, /usr/sbin or /sbin", name)
}

// removeNamespaces deletes every namespace whose name starts with id.
func removeNamespaces(id string) {
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), id+"-") {
			exec.Command("ip", "netns", "del", e.Name()).Run()
		}
	}
}

// torEnv is the inner process's state.
type torEnv struct {
	f    torFlags
	self string
	log  io.Writer
	net  *testnet.Network
	ws   map[string]string       // path -> workstation namespace
	srcs map[string][]netip.Addr // path -> its workstations' addresses
	// instKey is torgate-n's instance key, written to its state
	// directory before its first start.
	instKey      []byte
	torDir       string
	torrc        string
	managedTorrc string // torgate's --torrc on the managed paths
	empty        string
}

// torProc is one client tor the harness measures: the harness's own
// (attached paths) or one of torgate's managed instances.
type torProc struct {
	instance int
	pid      int
	// ctlNet and ctlAddr reach its control port ("tcp") or socket
	// ("unix").
	ctlNet, ctlAddr string
}

func (e *torEnv) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "%s tgbench tor: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func torInner(ctx context.Context, f torFlags, args []string, stdout, stderr io.Writer) (err error) {
	e := &torEnv{f: f, log: stderr, ws: make(map[string]string), srcs: make(map[string][]netip.Addr)}
	if e.self, err = os.Executable(); err != nil {
		return err
	}
	rep := &TorReport{Start: time.Now().UTC(), CPUs: runtime.NumCPU(), Commit: f.commit, Note: f.note, Repeat: f.repeat, Flags: args,
		Workstations: f.workstations, Instances: f.instances, LoadBefore: loadAvg()}
	rep.Host, _ = os.Hostname()
	e.logf("starting the private Tor network")
	tnLog, err := os.Create(filepath.Join(f.out, "testnet.log"))
	if err != nil {
		return err
	}
	defer tnLog.Close()
	e.net, err = testnet.Start(ctx, testnet.Config{Dir: filepath.Join(f.out, "testnet"), Logger: slog.New(slog.NewTextHandler(tnLog, nil))})
	if err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	defer e.net.Close()
	e.logf("network up in %s (block %s, web %s)", e.net.BootstrapTime.Round(time.Second), e.net.Block, e.net.WebName)
	if err := e.setupWorkstations(ctx); err != nil {
		return err
	}
	defer e.teardownWorkstations()
	if err := e.writeTorrc(); err != nil {
		return err
	}
	for round := 1; round <= f.repeat; round++ {
		for _, path := range f.paths {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rep.Samples = append(rep.Samples, e.runPath(ctx, round, path)...)
		}
	}
	rep.Rows = torRows(rep.Samples, f.paths, f.tests)
	rep.LoadAfter = loadAvg()
	return writeTorReport(rep, f.out, stdout)
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	fs := strings.Fields(string(b))
	return strings.Join(fs[:min(3, len(fs))], " ")
}

// setupWorkstations makes one namespace per path: for transport a veth to
// the gateway with the REDIRECT rules, for the TUN paths an empty one the
// router's TUN will be the only route of. It picks every path's
// workstation addresses.
func (e *torEnv) setupWorkstations(ctx context.Context) error {
	for _, path := range e.f.paths {
		ns := e.f.id + "-" + path
		if err := ipBatch(ctx, []string{"netns", "add", ns}, []string{"-n", ns, "link", "set", "lo", "up"}); err != nil {
			return err
		}
		e.ws[path] = ns
		srcs, err := e.pickSources(path)
		if err != nil {
			return err
		}
		e.srcs[path] = srcs
	}
	if ns, ok := e.ws[torPathTransport]; ok {
		cmds := [][]string{
			{"link", "add", torVethGW, "type", "veth", "peer", "name", torVethWS, "netns", ns},
			{"addr", "add", torGWNet, "dev", torVethGW},
			{"link", "set", torVethGW, "up"},
		}
		for _, a := range e.srcs[torPathTransport] {
			cmds = append(cmds, []string{"-n", ns, "addr", "add", a.String() + torWSBits, "dev", torVethWS})
		}
		cmds = append(cmds,
			[]string{"-n", ns, "link", "set", torVethWS, "up"},
			[]string{"-n", ns, "route", "add", "default", "via", torGWIP},
		)
		if err := ipBatch(ctx, cmds...); err != nil {
			return err
		}
		// Whonix's gateway: the workstation's TCP into the TransPort, its
		// DNS into the DNSPort. The rules live in the gateway namespace
		// and go with it.
		for _, r := range [][]string{
			{"-t", "nat", "-A", "PREROUTING", "-i", torVethGW, "-p", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", torDNSPort},
			{"-t", "nat", "-A", "PREROUTING", "-i", torVethGW, "-p", "tcp", "--syn", "-j", "REDIRECT", "--to-ports", torTransPort},
		} {
			ipt, err := sbinPath("iptables")
			if err != nil {
				return err
			}
			if out, err := exec.CommandContext(ctx, ipt, r...).CombinedOutput(); err != nil {
				return fmt.Errorf("iptables %s: %w: %s", strings.Join(r, " "), err, bytes.TrimSpace(out))
			}
		}
	}
	return nil
}

// pickSources returns path's -workstations addresses: consecutive from
// the first workstation's, except on torgate-n, where workstation i takes
// the next address that torgate's instance key puts on instance i mod N,
// so that the workstations spread evenly (a random set of W addresses
// would often load one instance more: the measurement is of N tors
// sharing the load, not of the hash's luck).
func (e *torEnv) pickSources(path string) ([]netip.Addr, error) {
	first := netip.MustParseAddr(torTUNFirst)
	if path == torPathTransport {
		first = netip.MustParseAddr(torWSFirst)
	}
	var out []netip.Addr
	if path != torPathTorgateN {
		for a := first; len(out) < e.f.workstations; a = a.Next() {
			out = append(out, a)
		}
		return out, nil
	}
	if e.instKey == nil {
		e.instKey = make([]byte, assign.KeyLen)
		rand.Read(e.instKey)
	}
	pick := assign.New(e.instKey, e.f.instances) // torgate's own assignment
	for a := first; len(out) < e.f.workstations; a = a.Next() {
		if a.As4()[3] == 255 {
			return nil, fmt.Errorf("%s: no even spread of %d workstations on %d instances in %s%s", path, e.f.workstations, e.f.instances, first, torWSBits)
		}
		if pick.Pick(a) == len(out)%e.f.instances {
			out = append(out, a)
		}
	}
	return out, nil
}

func (e *torEnv) teardownWorkstations() {
	if ipt, err := sbinPath("iptables"); err == nil {
		exec.Command(ipt, "-t", "nat", "-F", "PREROUTING").Run()
	}
	exec.Command("ip", "link", "del", torVethGW).Run()
	for _, ns := range e.ws {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// writeTorrc writes the client tor's torrc, the same for every path and
// round: the network's ClientTorrc plus the ports of every path.
func (e *torEnv) writeTorrc() error {
	e.torDir = filepath.Join(e.f.out, "client-tor")
	if err := os.MkdirAll(e.torDir, 0o700); err != nil {
		return err
	}
	e.empty = filepath.Join(e.f.out, "torrc-defaults")
	if err := os.WriteFile(e.empty, nil, 0o644); err != nil {
		return err
	}
	lines := append(e.net.ClientTorrc(),
		"DataDirectory "+e.torDir,
		"Log notice file "+filepath.Join(e.f.out, "client-tor.log"),
		"SocksPort "+torSocks,
		"ControlPort "+torControl,
		"CookieAuthentication 1",
	)
	if _, ok := e.ws[torPathTransport]; ok {
		// On the transport veth's gateway address, which exists only
		// when that path is measured.
		lines = append(lines, "TransPort "+torGWIP+":"+torTransPort, "DNSPort "+torGWIP+":"+torDNSPort)
	}
	lines = append(lines,
		// Whonix's gateway settings for names: the DNSPort answers with
		// a virtual address, which the TransPort maps back to the name
		// (so the exit resolves it). "." automaps every name, not just
		// .onion and .exit: the testnet's web server is on loopback, which
		// a real answer would send the workstation to its own lo.
		"AutomapHostsOnResolve 1",
		"AutomapHostsSuffixes .",
		"VirtualAddrNetworkIPv4 10.192.0.0/10",
	)
	e.torrc = filepath.Join(e.f.out, "client-torrc")
	if err := os.WriteFile(e.torrc, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	// The managed paths' --torrc: just the network's lines; torgate sets
	// the DataDirectory, SocksPort and ControlSocket of each instance.
	e.managedTorrc = filepath.Join(e.f.out, "managed-torrc")
	return os.WriteFile(e.managedTorrc, []byte(strings.Join(e.net.ClientTorrc(), "\n")+"\n"), 0o644)
}

// startTor starts the client tor and waits for PROGRESS=100.
func (e *torEnv) startTor(ctx context.Context) (*exec.Cmd, error) {
	torBin, err := sbinPath("tor")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(torBin, "-f", e.torrc, "--defaults-torrc", e.empty)
	logf, err := os.OpenFile(filepath.Join(e.f.out, "client-tor.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start client tor: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			stopTor(cmd)
		}
	}()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, errors.New("client tor did not bootstrap in 90 s (see client-tor.log)")
		}
		if syscall.Kill(cmd.Process.Pid, 0) != nil || exitedZombie(cmd.Process.Pid) {
			return nil, errors.New("client tor exited (see client-tor.log)")
		}
		if done, _ := torBootstrapped(ctx); done {
			ok = true
			return cmd, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// exitedZombie reports whether pid has exited and waits to be reaped.
func exitedZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || bytes.HasPrefix(b[i+1:], []byte(" Z"))
}

func torBootstrapped(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := testnet.DialControl(ctx, torControl)
	if err != nil {
		return false, err
	}
	defer c.Close()
	info, err := c.GetInfo(ctx, "status/bootstrap-phase", "status/circuit-established")
	if err != nil {
		return false, err
	}
	return strings.Contains(info["status/bootstrap-phase"], "PROGRESS=100") && info["status/circuit-established"] == "1", nil
}

func stopTor(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// runPath runs every test on one path with a fresh client tor (or
// torgate's managed ones) and router. A set-up failure becomes an error
// sample for every test.
func (e *torEnv) runPath(ctx context.Context, round int, path string) []TorSample {
	fail := func(err error) []TorSample {
		e.logf("round %d %s: %v", round, path, err)
		var out []TorSample
		for _, t := range e.f.tests {
			out = append(out, TorSample{Round: round, Path: path, Test: t, Err: err.Error()})
		}
		return out
	}
	t0 := time.Now()
	var tors []torProc
	if !managedPath(path) {
		tor, err := e.startTor(ctx)
		if err != nil {
			return fail(err)
		}
		defer stopTor(tor)
		e.logf("round %d %s: client tor pid %d bootstrapped in %s", round, path, tor.Process.Pid, time.Since(t0).Round(100*time.Millisecond))
		tors = []torProc{{pid: tor.Process.Pid, ctlNet: "tcp", ctlAddr: torControl}}
	}
	var router *routerProc
	dns := torGWIP + ":53"
	if path != torPathTransport {
		var err error
		if router, err = e.startTUNRouter(ctx, path); err != nil {
			return fail(err)
		}
		defer router.stop()
		dns = torTUNDNS
	}
	if managedPath(path) {
		var err error
		if tors, err = e.managedTors(path); err != nil {
			return fail(err)
		}
		pids := make([]int, len(tors))
		for i, t := range tors {
			pids[i] = t.pid
		}
		e.logf("round %d %s: torgate ready with managed tor pids %v in %s", round, path, pids, time.Since(t0).Round(100*time.Millisecond))
	}
	// Warm up: the first fetch waits for a circuit.
	if _, err := e.client(ctx, path, dns, "-mode", torModeTTFB, "-n", "3"); err != nil {
		return fail(fmt.Errorf("warm-up: %w", err))
	}
	var out []TorSample
	for _, test := range e.f.tests {
		s := e.measureTor(ctx, round, path, dns, test, tors, router)
		out = append(out, s)
	}
	return out
}

// stateDir is torgate's --state-dir on path.
func (e *torEnv) stateDir(path string) string {
	if path == torPathTorgate {
		return filepath.Join(e.f.out, "torgate-state")
	}
	return filepath.Join(e.f.out, "torgate-state-"+path)
}

// instances is how many tors path has.
func (e *torEnv) instances(path string) int {
	if path == torPathTorgateN {
		return e.f.instances
	}
	return 1
}

// managedTors finds torgate's managed tors on path: instance 0's
// DataDirectory is STATE_DIR/tor, instance k's STATE_DIR/tor-k, each with
// its control socket in the run directory beside it (DataDirectory+"-run",
// internal/torctl). The PID is the process whose command line carries
// --DataDirectory with that directory.
func (e *torEnv) managedTors(path string) ([]torProc, error) {
	var out []torProc
	for k := range e.instances(path) {
		dd := filepath.Join(e.stateDir(path), "tor")
		if k > 0 {
			dd += "-" + strconv.Itoa(k)
		}
		pid := pidByArgs("--DataDirectory", dd)
		if pid == 0 {
			return nil, fmt.Errorf("no tor with --DataDirectory %s", dd)
		}
		out = append(out, torProc{instance: k, pid: pid, ctlNet: "unix", ctlAddr: filepath.Join(dd+"-run", "control.sock")})
	}
	return out, nil
}

// pidByArgs is the PID of a live process whose command line has flag
// followed by value, 0 if none.
func pidByArgs(flag, value string) int {
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == flag && args[i+1] == value {
				return pid
			}
		}
	}
	return 0
}

// torTraffic is tor's bytes read plus written on all its connections
// (GETINFO traffic/read, traffic/written), -1 if it cannot be read.
func torTraffic(ctx context.Context, t torProc) int64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := testnet.DialControlAt(ctx, t.ctlNet, t.ctlAddr)
	if err != nil {
		return -1
	}
	defer c.Close()
	info, err := c.GetInfo(ctx, "traffic/read", "traffic/written")
	if err != nil {
		return -1
	}
	r, err1 := strconv.ParseInt(info["traffic/read"], 10, 64)
	w, err2 := strconv.ParseInt(info["traffic/written"], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return r + w
}

// startTUNRouter starts torgate or hev in the gateway namespace, serving
// the path's workstation namespace through a TUN: torgate gets one created
// in the workstation (fd 3); hev, whose command line takes no descriptor,
// creates its own by name, which is then moved into the workstation, as
// tgbench run's name mode does.
func (e *torEnv) startTUNRouter(ctx context.Context, path string) (*routerProc, error) {
	ws := e.ws[path]
	configure := func() error {
		var cmds [][]string
		for _, a := range e.srcs[path] {
			cmds = append(cmds, []string{"-n", ws, "addr", "add", a.String() + torWSBits, "dev", torTUN})
		}
		return ipBatch(ctx, append(cmds,
			[]string{"-n", ws, "link", "set", torTUN, "mtu", "1500", "up"},
			[]string{"-n", ws, "route", "add", "default", "dev", torTUN},
		)...)
	}
	var command string
	var extra []*os.File
	admin := filepath.Join(e.f.out, "torgate-admin.sock")
	switch path {
	case torPathTorgate, torPathManaged, torPathTorgateN:
		tf, err := openTUNIn(ws, torTUN, true)
		if err != nil {
			return nil, err
		}
		defer tf.Close() // torgate has its own copy
		extra = []*os.File{tf}
		if err := configure(); err != nil {
			return nil, err
		}
		os.Remove(admin)
		state := e.stateDir(path)
		command = fmt.Sprintf("%s run --tun-fd 3 --addr '' --mtu 1500 --admin unix:%s --state-dir %s --socks-ports off --control-port 0",
			shellQuote(e.f.torgate), shellQuote(admin), shellQuote(state))
		if path == torPathTorgate {
			command += " --tor-control " + torControl
			break
		}
		// Managed: tor as root, as the harness's own client tor runs
		// (torgate's default, debian-tor, could not read the harness's
		// 0700 output directory).
		command += fmt.Sprintf(" --torrc %s --tor-user root --tor-instances %d", shellQuote(e.managedTorrc), e.instances(path))
		if path == torPathTorgateN {
			if err := os.MkdirAll(state, 0o700); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(state, assign.KeyFile), e.instKey, 0o600); err != nil {
				return nil, err
			}
		}
	case torPathHev:
		// mapdns is hev's automap: it answers A queries to 198.18.2.1:53
		// with addresses of 10.192.0.0/10 and dials the name through
		// SOCKS.
		conf := filepath.Join(e.f.out, "hev.yml")
		host, port, _ := strings.Cut(torSocks, ":")
		y := fmt.Sprintf("tunnel:\n  name: %s\n  mtu: 1500\nsocks5:\n  address: %s\n  port: %s\nmapdns:\n  address: 198.18.2.1\n  port: 53\n  network: 10.192.0.0\n  netmask: 255.192.0.0\n  cache-size: 10000\nmisc:\n  log-file: stderr\n  log-level: warn\n", torTUN, host, port)
		if err := os.WriteFile(conf, []byte(y), 0o644); err != nil {
			return nil, err
		}
		command = shellQuote(e.f.hev) + " " + shellQuote(conf)
	}
	logName := "router-" + path + ".log"
	p, err := startRouter([]string{"env"}, command, filepath.Join(e.f.out, logName), extra)
	if err != nil {
		return nil, err
	}
	if path == torPathHev {
		if !waitFor(ctx, 10*time.Second, func() bool { return !p.alive() || exec.Command("ip", "link", "show", "dev", torTUN).Run() == nil }) || !p.alive() {
			p.stop()
			return nil, fmt.Errorf("hev did not create %s (see %s)", torTUN, logName)
		}
		time.Sleep(500 * time.Millisecond) // let it configure the device before it is taken
		if err := ip(ctx, "link", "set", torTUN, "netns", ws); err != nil {
			p.stop()
			return nil, err
		}
		if err := configure(); err != nil {
			p.stop()
			return nil, err
		}
	}
	ready := func() bool { return !p.alive() || !torgatePath(path) || readyz(ctx, "unix:"+admin) }
	if !waitFor(ctx, 90*time.Second, ready) || !p.alive() {
		p.stop()
		return nil, fmt.Errorf("%s not ready in 90 s (see %s)", path, logName)
	}
	return p, nil
}

// client runs tgbench torload in path's workstation namespace, from every
// workstation address at once.
func (e *torEnv) client(ctx context.Context, path, dns string, args ...string) (*TorLoadResult, error) {
	srcs := make([]string, len(e.srcs[path]))
	for i, a := range e.srcs[path] {
		srcs[i] = a.String()
	}
	args = append([]string{"--net=/var/run/netns/" + e.ws[path], e.self, "torload", "-name", e.net.WebName, "-port", strconv.Itoa(int(e.net.WebAddr.Port())), "-dns", dns,
		"-src", strings.Join(srcs, ",")}, args...)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("torload: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var r TorLoadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("torload output: %w", err)
	}
	// nsenter --net execs torload in place: the rusage is torload's.
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.clientCPU = roundUS(time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds())
	}
	if r.OK == 0 {
		return &r, fmt.Errorf("torload %s: nothing succeeded: %v", r.Mode, r.Kinds)
	}
	return &r, nil
}

// measureTor runs one test and reads the CPU of each client tor (and its
// threads) and its traffic, the router's and the machine's around it.
func (e *torEnv) measureTor(ctx context.Context, round int, path, dns, test string, tors []torProc, router *routerProc) TorSample {
	s := TorSample{Round: round, Path: path, Test: test}
	var args []string
	switch test {
	case "ttfb":
		args = []string{"-mode", torModeTTFB, "-n", strconv.Itoa(e.f.fetches)}
	case "conns":
		args = []string{"-mode", torModeConns, "-workers", strconv.Itoa(e.f.workers), "-time", e.f.connTime.String()}
	default:
		mode, n, _ := strings.Cut(test, "-")
		args = []string{"-mode", mode, "-streams", n, "-time", e.f.bulkTime.String(), "-up-bytes", strconv.Itoa(e.f.upMB << 20)}
	}
	threads0 := make([]map[string]threadUse, len(tors))
	tor0 := make([]float64, len(tors))
	traffic0 := make([]int64, len(tors))
	for i, t := range tors {
		traffic0[i] = torTraffic(ctx, t)
		threads0[i] = threadCPU(t.pid)
		tor0[i], _ = cpuSeconds(t.pid)
	}
	var r0 float64
	if router != nil {
		r0, _ = cpuSeconds(router.pid)
	}
	net0, web0 := e.netCPU(), selfCPU()
	m0, _ := machineBusySeconds()
	t0 := time.Now()
	res, err := e.client(ctx, path, dns, args...)
	s.Wall = time.Since(t0).Seconds()
	m1, _ := machineBusySeconds()
	s.NetCPU, s.WebCPU = roundUS(e.netCPU()-net0), roundUS(selfCPU()-web0)
	if res != nil {
		s.ClientCPU = res.clientCPU
	}
	var torCPU float64
	for i, t := range tors {
		c1, _ := cpuSeconds(t.pid)
		in := TorInstSample{Instance: t.instance, PID: t.pid, CPU: roundUS(c1 - tor0[i]), MB: -1}
		in.Cores = roundCores(in.CPU / s.Wall)
		for tid, c1 := range threadCPU(t.pid) {
			if d := c1.cpu - threads0[i][tid].cpu; d/s.Wall > in.ThreadCores {
				in.ThreadCores, in.Thread = roundCores(d/s.Wall), c1.name
			}
		}
		if b1 := torTraffic(ctx, t); b1 >= 0 && traffic0[i] >= 0 {
			in.MB = float64(b1-traffic0[i]) / 1e6
		}
		torCPU += c1 - tor0[i]
		if in.ThreadCores > s.TorThreadCores {
			s.TorThreadCores, s.TorThread = in.ThreadCores, in.Thread
			if len(tors) > 1 {
				s.TorThread = fmt.Sprintf("%d/%s", t.instance, in.Thread)
			}
		}
		s.Tors = append(s.Tors, in)
	}
	if router != nil {
		r1, _ := cpuSeconds(router.pid)
		s.RouterCPU = roundUS(r1 - r0)
	}
	s.TorCPU, s.MachineCPU = roundUS(torCPU), roundUS(m1-m0)
	s.Load = res
	if err != nil {
		s.Err = err.Error()
	}
	if uneven := unevenTors(s.Tors); uneven != "" && test != "ttfb" {
		e.logf("round %d %s %s: the load did not spread over the tors: %s", round, path, test, uneven)
	}
	s.RouterCores = roundCores(s.RouterCPU / s.Wall)
	s.MachineShare = roundCores(s.MachineCPU / s.Wall / float64(runtime.NumCPU()))
	s.Bottleneck = torBottleneck(s)
	e.logf("round %d %s %s: %s; tor %.2fs (busiest thread %s %.2f), router %.2fs, bottleneck %s%s",
		round, path, test, res.summary(err), s.TorCPU, s.TorThread, s.TorThreadCores, s.RouterCPU, s.Bottleneck, instancesSummary(s.Tors))
	return s
}

// unevenTors names the tors that moved less than a quarter of an even
// share of the traffic, "" if none (or fewer than two tors, or traffic
// unknown). ttfb moves too little to judge.
func unevenTors(tors []TorInstSample) string {
	var sum float64
	for _, t := range tors {
		if t.MB < 0 {
			return ""
		}
		sum += t.MB
	}
	if len(tors) < 2 || sum <= 0 {
		return ""
	}
	var low []string
	for _, t := range tors {
		if share := t.MB / sum; share < 0.25/float64(len(tors)) {
			low = append(low, fmt.Sprintf("tor %d %.0f %%", t.Instance, share*100))
		}
	}
	return strings.Join(low, ", ")
}

// netCPU is the CPU seconds so far of the private network's tors.
func (e *torEnv) netCPU() float64 {
	var sum float64
	for _, pid := range e.net.PIDs() {
		c, _ := cpuSeconds(pid)
		sum += c
	}
	return sum
}

// selfCPU is this process's CPU seconds so far.
func selfCPU() float64 {
	c, _ := cpuSeconds(os.Getpid())
	return c
}

// instancesSummary is "; tor 0: 1.20 s, main 0.40, 12.3 MB; tor 1: ..."
// with several tors, else "".
func instancesSummary(tors []TorInstSample) string {
	if len(tors) < 2 {
		return ""
	}
	var b strings.Builder
	for _, t := range tors {
		fmt.Fprintf(&b, "; tor %d: %.2f s, %s %.2f, %.1f MB", t.Instance, t.CPU, t.Thread, t.ThreadCores, t.MB)
	}
	return b.String()
}

func (r *TorLoadResult) summary(err error) string {
	if r == nil {
		return "error: " + err.Error()
	}
	v := fmt.Sprintf("%d ok, %d failed", r.OK, r.Failures)
	switch r.Mode {
	case torModeTTFB:
		return fmt.Sprintf("ttfb p50 %.1f ms p99 %.1f ms, whole fetch p50 %.1f ms, %s", r.P50ms, r.P99ms, r.FetchP50ms, v)
	case torModeConns:
		return fmt.Sprintf("%.1f conn/s, %s", r.ConnsPerSec, v)
	}
	return fmt.Sprintf("%.2f MB/s, %s", r.MBps, v)
}

// torBottleneck names what bounded a test: a client tor thread at 0.9 of
// a core or more (tor does its cell crypto and relaying on its main
// thread), else the router at 0.9 cores or more, else the machine at
// 90 % busy, else none (the rate is set by latency).
func torBottleneck(s TorSample) string {
	switch {
	case s.TorThreadCores >= 0.9:
		return fmt.Sprintf("tor:%s %.2f", s.TorThread, s.TorThreadCores)
	case s.RouterCores >= 0.9:
		return fmt.Sprintf("router %.2f", s.RouterCores)
	case s.MachineShare >= 0.9:
		return fmt.Sprintf("machine %.0f %%", s.MachineShare*100)
	}
	return fmt.Sprintf("none %.0f %%", s.MachineShare*100)
}

type threadUse struct {
	name string
	cpu  float64
}

// threadCPU is the CPU seconds so far of each of pid's live threads, by
// thread id, with the thread's name.
func threadCPU(pid int) map[string]threadUse {
	out := make(map[string]threadUse)
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, _ := os.ReadDir(dir)
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "stat"))
		if err != nil {
			continue
		}
		c, err := parseStatCPU(b)
		if err != nil {
			continue
		}
		name := ""
		if i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')'); i >= 0 && j > i {
			name = string(b[i+1 : j])
		}
		if t.Name() == strconv.Itoa(pid) {
			name += " (main)"
		}
		out[t.Name()] = threadUse{name: name, cpu: c.user + c.sys}
	}
	return out
}

// torUnit is the unit of a test's figure.
func torUnit(test string) string {
	switch test {
	case "ttfb":
		return "ms (p50)"
	case "conns":
		return "conn/s"
	}
	return "MB/s"
}

// value is a sample's figure in torUnit.
func (s TorSample) value() float64 {
	if s.Load == nil || s.Err != "" {
		return 0
	}
	switch s.Test {
	case "ttfb":
		return s.Load.P50ms
	case "conns":
		return s.Load.ConnsPerSec
	}
	return s.Load.MBps
}

// perWork is the sample's CPU per connection (µs) or per MB (ms).
func (s TorSample) perWork(cpu float64) (float64, string) {
	if s.Load == nil {
		return 0, ""
	}
	switch s.Test {
	case "ttfb", "conns":
		if s.Load.OK == 0 {
			return 0, "µs/conn"
		}
		return cpu / float64(s.Load.OK) * 1e6, "µs/conn"
	}
	if s.Load.Bytes == 0 {
		return 0, "ms/MB"
	}
	return cpu / (float64(s.Load.Bytes) / 1e6) * 1e3, "ms/MB"
}

// torRows takes the medians over rounds of every test on every path.
func torRows(samples []TorSample, paths, tests []string) []TorRow {
	var rows []TorRow
	for _, test := range tests {
		for _, path := range paths {
			row := TorRow{Path: path, Test: test, Unit: torUnit(test)}
			var ok []TorSample
			var verdicts []string
			for _, s := range samples {
				if s.Path != path || s.Test != test {
					continue
				}
				row.Runs++
				if s.Load != nil {
					row.Failures += s.Load.Failures
				}
				if s.Err != "" {
					row.Errors++
					continue
				}
				ok = append(ok, s)
				verdicts = append(verdicts, strings.Fields(s.Bottleneck)[0])
			}
			if len(ok) > 0 {
				row.Median = medianBy(ok, TorSample.value)
				if test == "ttfb" {
					row.P99 = medianBy(ok, func(s TorSample) float64 { return s.Load.P99ms })
					row.FetchP50 = medianBy(ok, func(s TorSample) float64 { return s.Load.FetchP50ms })
				}
				row.TorPer = medianBy(ok, func(s TorSample) float64 { v, _ := s.perWork(s.TorCPU); return v })
				row.RouterPer = medianBy(ok, func(s TorSample) float64 { v, _ := s.perWork(s.RouterCPU); return v })
				_, row.PerUnit = ok[0].perWork(0)
				row.TorThread = medianBy(ok, func(s TorSample) float64 { return s.TorThreadCores })
				row.Bottlenecks = countVerdicts(verdicts)
				row.Instances = instanceRows(ok)
				row.Cores = TorCores{
					Tor:     medianBy(ok, func(s TorSample) float64 { return s.cores().Tor }),
					Router:  medianBy(ok, func(s TorSample) float64 { return s.cores().Router }),
					Net:     medianBy(ok, func(s TorSample) float64 { return s.cores().Net }),
					Web:     medianBy(ok, func(s TorSample) float64 { return s.cores().Web }),
					Client:  medianBy(ok, func(s TorSample) float64 { return s.cores().Client }),
					Machine: medianBy(ok, func(s TorSample) float64 { return s.cores().Machine }),
					Other:   medianBy(ok, func(s TorSample) float64 { return s.cores().Other }),
				}
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// instanceRows takes the medians per client tor over samples (each has
// the same tors).
func instanceRows(samples []TorSample) []TorInstRow {
	n := 0
	for _, s := range samples {
		n = max(n, len(s.Tors))
	}
	var out []TorInstRow
	for k := range n {
		var have []TorSample
		for _, s := range samples {
			if k < len(s.Tors) {
				have = append(have, s)
			}
		}
		row := TorInstRow{Instance: k}
		row.Cores = medianBy(have, func(s TorSample) float64 { return s.Tors[k].Cores })
		row.ThreadCores = medianBy(have, func(s TorSample) float64 { return s.Tors[k].ThreadCores })
		row.Share = medianBy(have, func(s TorSample) float64 {
			var sum float64
			for _, t := range s.Tors {
				if t.MB < 0 {
					return -1
				}
				sum += t.MB
			}
			if sum <= 0 {
				return -1
			}
			return s.Tors[k].MB / sum
		})
		out = append(out, row)
	}
	return out
}

// countVerdicts is "tor:tor ×2, none ×1".
func countVerdicts(vs []string) string {
	counts := map[string]int{}
	var order []string
	for _, v := range vs {
		if counts[v] == 0 {
			order = append(order, v)
		}
		counts[v]++
	}
	parts := make([]string, len(order))
	for i, v := range order {
		parts[i] = fmt.Sprintf("%s ×%d", v, counts[v])
	}
	return strings.Join(parts, ", ")
}

// Markdown is the report's tables: the figures per path with each path's
// ratio to the transport path, then the CPU per path.
func (rep *TorReport) Markdown(paths, tests []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "tgbench tor, %s, %s, %d CPUs, %d rounds", rep.Start.Format("2006-01-02 15:04 UTC"), rep.Host, rep.CPUs, rep.Repeat)
	if rep.Commit != "" {
		fmt.Fprintf(&b, ", commit %s", rep.Commit)
	}
	if rep.Note != "" {
		fmt.Fprintf(&b, ", %s", rep.Note)
	}
	if rep.Workstations > 1 {
		fmt.Fprintf(&b, ", %d workstations per path (figures are their aggregate)", rep.Workstations)
	}
	if slices.Contains(paths, torPathTorgateN) {
		fmt.Fprintf(&b, ", torgate-n with %d tor instances", rep.Instances)
	}
	if rep.LoadBefore != "" {
		fmt.Fprintf(&b, ", load average %s before, %s after", rep.LoadBefore, rep.LoadAfter)
	}
	b.WriteString("\n\n| test | unit |")
	for _, p := range paths {
		fmt.Fprintf(&b, " %s |", p)
		if p != torPathTransport && slices.Contains(paths, torPathTransport) {
			fmt.Fprintf(&b, " %s/transport |", p)
		}
	}
	b.WriteString("\n| --- | --- |")
	for _, p := range paths {
		b.WriteString(" ---: |")
		if p != torPathTransport && slices.Contains(paths, torPathTransport) {
			b.WriteString(" ---: |")
		}
	}
	b.WriteString("\n")
	find := func(path, test string) TorRow {
		for _, r := range rep.Rows {
			if r.Path == path && r.Test == test {
				return r
			}
		}
		return TorRow{}
	}
	for _, t := range tests {
		fmt.Fprintf(&b, "| %s | %s |", t, torUnit(t))
		base := find(torPathTransport, t)
		for _, p := range paths {
			r := find(p, t)
			cell := "–"
			if r.Median > 0 {
				cell = fmt.Sprintf("%.4g", r.Median)
				if r.P99 > 0 {
					cell += fmt.Sprintf(" (p99 %.4g; to EOF %.4g)", r.P99, r.FetchP50)
				}
			}
			if r.Errors > 0 || r.Failures > 0 {
				cell += fmt.Sprintf(" [%d err, %d fail]", r.Errors, r.Failures)
			}
			fmt.Fprintf(&b, " %s |", cell)
			if p != torPathTransport && slices.Contains(paths, torPathTransport) {
				if base.Median > 0 && r.Median > 0 {
					fmt.Fprintf(&b, " %.3f |", r.Median/base.Median)
				} else {
					b.WriteString(" – |")
				}
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\nCPU (medians): the client tor's and the router's CPU per connection (ttfb, conns) or per MB moved (bulk); the tor's busiest thread in cores; the bottleneck verdicts of the rounds (a tor thread or the router at 0.9 of a core or more, else the machine at 90 % busy, else none).\n\n")
	b.WriteString("| test | path | tor CPU | router CPU | unit | tor busiest thread | bottleneck |\n| --- | --- | ---: | ---: | --- | ---: | --- |\n")
	for _, t := range tests {
		for _, p := range paths {
			r := find(p, t)
			router := fmt.Sprintf("%.4g", r.RouterPer)
			if p == torPathTransport {
				router = "– (kernel)"
			}
			fmt.Fprintf(&b, "| %s | %s | %.4g | %s | %s | %.2f | %s |\n", t, p, r.TorPer, router, r.PerUnit, r.TorThread, orDash(r.Bottlenecks))
		}
	}
	fmt.Fprintf(&b, "\nWhere the CPU went (medians, in cores of the %d): the client tor(s), the router, the private network's tors, the harness (the network's web and DNS servers), torload (the workstations), the machine's busy time, and the rest of it (other users' processes, kernel work charged to none of these). Machine busy is /proc/stat's tick sample, which undercounts processes that sleep between ticks (short fetches: it can fall below the processes' sum, and other is then 0); the processes' figures are scaled to the scheduler's run time.\n\n", rep.CPUs)
	b.WriteString("| test | path | client tor | router | network tors | web+DNS | torload | machine busy | other |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, t := range tests {
		for _, p := range paths {
			c := find(p, t).Cores
			fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", t, p, c.Tor, c.Router, c.Net, c.Web, c.Client, c.Machine, c.Other)
		}
	}
	several := false
	for _, r := range rep.Rows {
		several = several || len(r.Instances) > 1
	}
	if !several {
		return b.String()
	}
	b.WriteString("\nPer client tor (medians; paths with several tors): its CPU and its busiest thread in cores, and its share of the tors' traffic (GETINFO traffic/read + traffic/written over the test).\n\n")
	b.WriteString("| test | path | tor | cores | busiest thread | traffic share |\n| --- | --- | --- | ---: | ---: | ---: |\n")
	for _, t := range tests {
		for _, p := range paths {
			r := find(p, t)
			if len(r.Instances) < 2 {
				continue
			}
			for _, in := range r.Instances {
				share := "–"
				if in.Share >= 0 {
					share = fmt.Sprintf("%.2f", in.Share)
				}
				fmt.Fprintf(&b, "| %s | %s | %d | %.2f | %.2f | %s |\n", t, p, in.Instance, in.Cores, in.ThreadCores, share)
			}
		}
	}
	return b.String()
}

func writeTorReport(rep *TorReport, out string, stdout io.Writer) error {
	paths, tests := []string{}, []string{}
	for _, r := range rep.Rows {
		if !slices.Contains(paths, r.Path) {
			paths = append(paths, r.Path)
		}
		if !slices.Contains(tests, r.Test) {
			tests = append(tests, r.Test)
		}
	}
	md := rep.Markdown(paths, tests)
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "results.json"), j, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\nresults: %s\n", md, out)
	return err
}
