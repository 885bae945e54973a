package main

// The hostile-LAN test (issue 19): the gateway deployed on a switched LAN
// where one machine, A, attacks with crafted frames while the
// workstations B, C (and D, a machine arriving during an attack) must keep
// their service, and nothing derived from the LAN, nor any ICMP error, may
// leave through the gateway's uplink.
//
//	A .20/::20  B .11/::11  C .12/::12  (D .13/::13, only in some recipes)
//	   eth0        eth0        eth0         eth0
//	    |           |           |            |
//	 [ br0 in the "switch" namespace: stp off, forward_delay 0, no snooping ]
//	    |
//	   eth1 10.152.152.10/18, fd52:7b2a:1e00::10/64   gw (forwarding ON)
//	   eth0 198.18.1.1/24, 2001:db8:1e01::1/64 ------ inet eth0 198.18.1.2,
//	   lo: SOCKS server (plays Tor), :2222 service        2001:db8:1e01::2:
//	                                                      HTTP :80, capture
//
// eth1 is a plain interface (a veth whose peer is a bridge port), as on a
// router. inet routes the LAN prefixes back via gw, so whatever the gateway
// forwarded or answered would arrive and be seen. A's frames come from
// scapy scripts in testdata/hostile, run inside A's namespace.
//
// Recipes (numbered as in the issue): 1 ICMPv6 errors provoked by an
// unknown hop-by-hop option to ff02::1; 2 ICMP errors provoked by a
// malformed IPv4 option (both while torgate runs, after SIGTERM, after
// SIGKILL, after a restart); 3 Internet -> LAN through a neighbour entry
// completed by a broadcast ARP reply (or unsolicited NA); 4 SYNs spoofed
// with another workstation's address, or with addresses nobody answers
// for; 5 one machine as 300 addresses holding flows; 6 automap flood from
// made-up sources; 7 neighbour-table flood; 8 curl -6 by name, the
// gateway's uplink addresses as destinations, a claim on the gateway's own
// LAN address. The workstation services (SOCKS ports, the filtered
// control port; issue 21) have their own recipes, in
// hostile_services_linux_test.go.
//
// TORGATE_TEST_BIN, if set, is the torgate binary to test instead of one
// built from this package (to play the recipes against another revision).

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/torgate/torgate/internal/netns"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

const (
	// hangPort: the SOCKS server never answers a CONNECT to it, as Tor
	// waiting for a circuit; a flow to it stays pending in torgate.
	hangPort = 81
	// holdPort: the SOCKS server accepts a CONNECT to it and then only
	// reads; a flow to it stays open.
	holdPort = 9
	// normalTime bounds what a workstation waits for a fetch or an answer
	// while the LAN is under attack: a few seconds, as on a quiet LAN.
	normalTime = 5 * time.Second
	// lanIface is the gateway's LAN interface.
	lanIface = "eth1"
)

// lanHost is one machine on the LAN.
type lanHost struct {
	name         string // A, B, C, D
	ns           string
	addr4, addr6 string
	mac          string
	port         string // its port on the switch
}

// hostileNet is the switched deployment.
type hostileNet struct {
	t              *testing.T
	id             string
	sw, gw, inet   string // namespaces
	gwIno          uint64 // inode of the gateway namespace (names torgate's LAN namespace)
	gwMAC          string // eth1's MAC, read before torgate may move eth1 away
	hosts          map[string]*lanHost
	ports          atomic.Int64 // switch ports made, for unique names
	names          atomic.Int64 // names resolved, for unique names
	bin, stateDir  string
	python         string // an interpreter that imports scapy
	scripts        string // absolute path of testdata/hostile
	socks          *sockstest.Server
	up             *frameCapture // inet's eth0: what the gateway sends out
	webAccepts     atomic.Int64  // connections inet's HTTP server accepted
	serviceAccepts atomic.Int64  // connections the gateway's own :2222 accepted
	tg             *tgProc
}

// hostileBinary builds torgate from this package, or takes
// TORGATE_TEST_BIN.
func hostileBinary(t *testing.T) string {
	if bin := os.Getenv("TORGATE_TEST_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("TORGATE_TEST_BIN: %v", err)
		}
		t.Logf("testing %s (TORGATE_TEST_BIN)", bin)
		return bin
	}
	return buildTorgate(t)
}

// scapyPython finds an interpreter that imports scapy (Debian's
// python3-scapy installs for /usr/bin/python3, which a python3 earlier in
// PATH may not be). Under CI=true a missing one fails the test.
func scapyPython(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import scapy").Run() == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs python3 with scapy (Debian: python3-scapy)")
	}
	t.Skip("needs python3 with scapy (Debian: python3-scapy)")
	return ""
}

func newHostileNet(t *testing.T, bin string) *hostileNet {
	t.Helper()
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	h := &hostileNet{t: t, id: id, sw: "tghs-" + id, gw: "tghg-" + id, inet: "tghi-" + id,
		hosts: map[string]*lanHost{}, bin: bin, stateDir: t.TempDir(), python: scapyPython(t)}
	var err error
	if h.scripts, err = filepath.Abs("testdata/hostile"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{h.sw, h.gw, h.inet} {
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { killNamespace(ns) })
	}
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+h.gw, &st); err != nil {
		t.Fatal(err)
	}
	h.gwIno = st.Ino
	// torgate pins a namespace of its own for eth1, tg-eth1-INODE when
	// the gateway is itself a namespace. Registered after the namespace
	// cleanups, it runs before them, and after every torgate is killed
	// (those cleanups are registered later still).
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", h.lanNS()).Run() })

	// The switch: IPv6 off so that it adds no frames of its own, and
	// no multicast snooping: a plain switch floods every multicast frame
	// to every port, which is the attacker's best case (with snooping,
	// Linux's bridge dropped recipe 1's frames to ff02::1, measured
	// 2026-12-04 on 6.18).
	mustRun(t, "ip", "netns", "exec", h.sw, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	mustRun(t, "ip", "-n", h.sw, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
	mustRun(t, "ip", "-n", h.sw, "link", "set", "br0", "up")
	h.plug(t, h.gw, lanIface)

	wireGateway(t, h.gw, h.inet, lanIface)
	h.gwMAC = linkMAC(t, h.gw, lanIface)

	h.addHost(t, "A", "10.152.152.20", "fd52:7b2a:1e00::20")
	h.addHost(t, "B", wsAddr4, wsAddr6)
	h.addHost(t, "C", "10.152.152.12", "fd52:7b2a:1e00::12")

	h.up = startFrameCapture(t, h.inet, "eth0", judgeUplink)
	h.startServices()
	return h
}

// lanNS is the name of the namespace torgate pins for eth1.
func (h *hostileNet) lanNS() string {
	return "tg-" + lanIface + "-" + strconv.FormatUint(h.gwIno, 10)
}

// plug connects namespace ns to the switch with a veth named dev there,
// and returns the name of the switch's port.
func (h *hostileNet) plug(t *testing.T, ns, dev string) string {
	t.Helper()
	port := "p" + strconv.FormatInt(h.ports.Add(1), 10)
	mustRun(t, "ip", "-n", h.sw, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns)
	mustRun(t, "ip", "-n", h.sw, "link", "set", port, "master", "br0")
	mustRun(t, "ip", "-n", h.sw, "link", "set", port, "up")
	return port
}

// addHost creates a machine on the LAN; it goes in t's cleanup (a
// subtest's for a machine that arrives during a recipe).
func (h *hostileNet) addHost(t *testing.T, name, addr4, addr6 string) *lanHost {
	t.Helper()
	// Numbered like its switch port: a D made again must not meet its
	// predecessor, whose namespace the kernel may still be tearing down.
	ns := "tgh" + strings.ToLower(name) + strconv.FormatInt(h.ports.Load()+1, 10) + "-" + h.id
	mustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { killNamespace(ns) })
	etc := "/etc/netns/" + ns
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(etc+"/resolv.conf", []byte("nameserver "+gwLAN4+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := h.plug(t, ns, "eth0")
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
	host := &lanHost{name: name, ns: ns, addr4: addr4, addr6: addr6, mac: linkMAC(t, ns, "eth0"), port: port}
	h.hosts[name] = host
	return host
}

// linkMAC reads dev's MAC in namespace ns.
func linkMAC(t *testing.T, ns, dev string) string {
	t.Helper()
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "ip", "-j", "-n", ns, "link", "show", dev)), &links); err != nil || len(links) != 1 {
		t.Fatalf("MAC of %s in %s: %v %v", dev, ns, err, links)
	}
	return links[0].Address
}

// startServices: inet's web site (which must never see a connection), a
// service on the gateway's own addresses (which the LAN must never reach)
// and the SOCKS server playing Tor on the gateway's loopback.
func (h *hostileNet) startServices() {
	t := h.t
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "inet-direct\n") })
	for _, a := range [][2]string{{"tcp4", inetAddr4 + ":80"}, {"tcp6", "[" + inetAddr6 + "]:80"}} {
		srv := &http.Server{Handler: web}
		go srv.Serve(countingListener{listenIn(t, h.inet, a[0], a[1]), &h.webAccepts})
		t.Cleanup(func() { srv.Close() })
	}
	for _, a := range [][2]string{{"tcp4", "0.0.0.0:" + gwServicePort}, {"tcp6", "[::]:" + gwServicePort}} {
		ln := listenIn(t, h.gw, a[0], a[1])
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				h.serviceAccepts.Add(1)
				c.Close()
			}
		}()
	}

	// Port 80 of any name or address gets the marker site, hangPort
	// hangs, holdPort holds; private addresses are refused as a Tor exit
	// refuses them, every other port is refused.
	pl := newPipeListener()
	srv := &http.Server{Handler: http.HandlerFunc(serveMarker)}
	go srv.Serve(pl)
	t.Cleanup(func() { srv.Close(); pl.Close() })
	connect := func(req sockstest.Request) (socks.Reply, net.Conn) {
		if ip := req.Dst.IP; ip.IsValid() && (ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast()) {
			return socks.ReplyNotAllowed, nil
		}
		switch req.Dst.Port {
		case 80:
			if c, ok := pl.dial(); ok {
				return socks.ReplySucceeded, c
			}
			return socks.ReplyGeneralFailure, nil
		case hangPort:
			return sockstest.Hang(req)
		case holdPort:
			return sockstest.Discard(req)
		}
		return socks.ReplyConnectionRefused, nil
	}
	if err := netns.Do(h.gw, func() error {
		h.socks = sockstest.NewServer(t, sockstest.Config{Connect: connect})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// torgateCmd is the one place that says how torgate is launched in the
// gateway.
func (h *hostileNet) torgateCmd(args ...string) *exec.Cmd {
	return tgCommand(h.gw, h.bin, args...)
}

// startTorgate runs torgate and waits (bounded) for /readyz.
func (h *hostileNet) startTorgate(t *testing.T) {
	t.Helper()
	if h.tg != nil {
		t.Fatal("torgate already running")
	}
	p := &tgProc{out: &testlog.Buffer{}, done: make(chan struct{})}
	p.cmd = h.torgateCmd("run", "--lan", lanIface, "--socks", h.socks.Addr(), "--admin", gwAdmin,
		"--state-dir", h.stateDir, "--log-level", "debug")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	h.tg = p
	// On the deployment's t: a torgate outlives the subtest that started
	// it.
	h.t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	client := h.adminClient()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			h.tg = nil
			t.Fatalf("torgate exited before ready: %v\n%s", p.err, tail(p.out.String(), 40))
		default:
		}
		resp, err := client.Get("http://" + gwAdmin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("torgate not ready within 30s (last: %v)\n%s", err, tail(p.out.String(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopTorgate signals torgate and waits (bounded) for it to exit.
func (h *hostileNet) stopTorgate(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p := h.tg
	if p == nil {
		t.Fatal("torgate not running")
	}
	h.tg = nil
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("torgate did not exit within 20s of %v\n%s", sig, tail(p.out.String(), 40))
	}
	if sig == syscall.SIGTERM && p.err != nil {
		t.Errorf("torgate after SIGTERM: %v\n%s", p.err, tail(p.out.String(), 40))
	}
}

// freshTorgate starts a new torgate (stopping a running one with SIGTERM)
// with a new state directory, so that a recipe does not inherit another's
// flows, neighbours, automap table and counters. (The directory is the
// deployment's: the torgate may outlive the subtest and write its state
// when the next one stops it.)
func (h *hostileNet) freshTorgate(t *testing.T) {
	t.Helper()
	if h.tg != nil {
		h.stopTorgate(t, syscall.SIGTERM)
	}
	h.stateDir = h.t.TempDir()
	h.startTorgate(t)
	h.logOnFailure(t)
}

// logOnFailure logs the end of torgate's output if t fails.
func (h *hostileNet) logOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() && h.tg != nil {
			t.Logf("torgate output (end):\n%s", tail(h.tg.out.String(), 60))
		}
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func (h *hostileNet) adminClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, h.gw, network, addr)
		},
	}}
}

// metrics returns torgate's /metrics lines whose name contains one of
// words and whose value is not 0.
func (h *hostileNet) metrics(t *testing.T, words ...string) []string {
	t.Helper()
	resp, err := h.adminClient().Get("http://" + gwAdmin + "/metrics")
	if err != nil {
		t.Errorf("GET /metrics: %v", err)
		return nil
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if strings.HasPrefix(line, "#") || len(f) < 2 || f[len(f)-1] == "0" {
			continue
		}
		for _, w := range words {
			if strings.Contains(f[0], w) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// runIn runs a command in namespace ns, bounded by timeout.
func runIn(ns string, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	return string(out), err
}

// fetch GETs url with curl from host, bounded by normalTime.
func (h *hostileNet) fetch(host *lanHost, url string, curlArgs ...string) (string, time.Duration, error) {
	began := time.Now()
	args := append([]string{"-sS", "-g", "--max-time", strconv.Itoa(int(normalTime / time.Second))}, curlArgs...)
	out, err := runIn(host.ns, normalTime+5*time.Second, "curl", append(args, url)...)
	return out, time.Since(began), err
}

// mustServe wants host to fetch url's marker content within normalTime.
func (h *hostileNet) mustServe(t *testing.T, host *lanHost, what, url string, curlArgs ...string) bool {
	t.Helper()
	body, took, err := h.fetch(host, url, curlArgs...)
	if err != nil || !strings.Contains(body, gwMarker) {
		t.Errorf("%s: %s fetching %s %v: %v after %v: %s", what, host.name, url, curlArgs, err, took.Round(time.Millisecond), strings.TrimSpace(body))
		return false
	}
	t.Logf("%s: %s fetched %s in %v", what, host.name, url, took.Round(time.Millisecond))
	return true
}

// resolve asks the gateway for name's A record from host and wants an
// answer within normalTime; it returns the address ("" on failure).
func (h *hostileNet) resolve(t *testing.T, host *lanHost, what, name string) string {
	t.Helper()
	began := time.Now()
	out, err := runIn(host.ns, normalTime+5*time.Second, "dig", "+time=2", "+tries=2", "+short", "@"+gwLAN4, name, "A")
	took := time.Since(began)
	for _, line := range strings.Fields(out) {
		if a, perr := netip.ParseAddr(line); perr == nil && a.Is4() && took <= normalTime {
			return a.String()
		}
	}
	t.Errorf("%s: %s resolving %s: %v after %v: %s", what, host.name, name, err, took.Round(time.Millisecond), strings.TrimSpace(out))
	return ""
}

// served wants host to fetch by address and by name and to resolve, each
// within normalTime.
func (h *hostileNet) served(t *testing.T, host *lanHost, what string) {
	t.Helper()
	h.mustServe(t, host, what, url4)
	name := fmt.Sprintf("%s%d-%s.example.test", strings.ToLower(host.name), h.names.Add(1), h.id)
	h.resolve(t, host, what, name)
	h.mustServe(t, host, what, "http://"+name+"/")
}

// mark returns the SOCKS server's request count, for connectsSince.
func (h *hostileNet) mark() int { return len(h.socks.Requests()) }

// connectsSince returns the CONNECTs since mark m that match (nil: all).
func (h *hostileNet) connectsSince(m int, match func(sockstest.Request) bool) []sockstest.Request {
	var out []sockstest.Request
	for _, r := range h.socks.Requests()[m:] {
		if r.Command == socks.CmdConnect && (match == nil || match(r)) {
			out = append(out, r)
		}
	}
	return out
}

// awaitNoConnects polls for up to d for CONNECTs since m that match; it
// returns early when one shows (absence can only be shown by waiting).
func (h *hostileNet) awaitNoConnects(m int, d time.Duration, match func(sockstest.Request) bool) []sockstest.Request {
	end := time.Now().Add(d)
	for {
		c := h.connectsSince(m, match)
		if len(c) > 0 || time.Now().After(end) {
			// A little longer once they flow, to count them.
			if len(c) > 0 {
				time.Sleep(time.Second)
				c = h.connectsSince(m, match)
			}
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func toDst(hostport string) func(sockstest.Request) bool {
	dst := socks.AddrFromAddrPort(netip.MustParseAddrPort(hostport))
	return func(r sockstest.Request) bool { return r.Dst == dst }
}

// checkUplink asserts the uplink capture saw, since the last check,
// nothing LAN-derived and no ICMP or ICMPv6 error from the gateway, and
// that inet's web server and the gateway's own service accepted nothing.
func (h *hostileNet) checkUplink(t *testing.T, what string) {
	t.Helper()
	s := h.up.phase()
	t.Logf("uplink %s: gateway sent %d frames (%d ARP, %d ND/MLD), %d LAN-derived or ICMP errors (%d ICMP errors); inet sent %d",
		what, s.in, s.arp, s.nd, s.badN, s.icmpErr, s.out)
	if s.badN > 0 {
		t.Errorf("uplink %s: %d frames LAN-derived or ICMP errors (%d ICMP errors), e.g.:\n%s", what, s.badN, s.icmpErr, strings.Join(s.bad, "\n"))
	}
	if n := h.webAccepts.Load(); n != 0 {
		t.Errorf("uplink %s: the Internet's HTTP server accepted %d connections", what, n)
	}
	if n := h.serviceAccepts.Load(); n != 0 {
		t.Errorf("%s: the gateway's own service on :%s accepted %d connections", what, gwServicePort, n)
	}
}

// frameCapture records the frames of one interface with an AF_PACKET
// socket. Frames the namespace sends are only counted; frames it
// receives are judged.
type frameCapture struct {
	fd    int
	judge frameJudge
	stop  atomic.Bool
	wg    sync.WaitGroup
	mu    sync.Mutex
	cur   frameStats // guarded by mu
}

// frameJudge says why a received frame is bad ("" if it is not), and
// whether it is an ICMP or ICMPv6 error message.
type frameJudge func(f []byte) (summary, bad string, icmpErr bool)

type frameStats struct {
	in, out, arp, nd int
	badN, icmpErr    int
	bad              []string // the first 20
}

// startFrameCapture differs from startCapture in what it judges: only
// frames arriving (on the uplink: what the gateway sends, not what inet
// itself sends to the LAN in recipe 3), by judge.
func startFrameCapture(t *testing.T, ns, dev string, judge frameJudge) *frameCapture {
	t.Helper()
	c := &frameCapture{fd: -1, judge: judge}
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.Timeval{Usec: 200_000} // lets the loop notice stop
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, ns, err)
	}
	c.wg.Go(c.readLoop)
	t.Cleanup(func() {
		c.stop.Store(true)
		c.wg.Wait()
		unix.Close(c.fd)
	})
	return c
}

func (c *frameCapture) readLoop() {
	buf := make([]byte, 65536)
	for !c.stop.Load() {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // timeout or EINTR
		}
		f := buf[:n]
		c.mu.Lock()
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			c.cur.out++
			c.mu.Unlock()
			continue
		}
		c.cur.in++
		kind, _, _ := classifyFrame(f)
		switch kind {
		case "arp":
			c.cur.arp++
		case "nd":
			c.cur.nd++
		}
		c.mu.Unlock()
		summary, bad, icmpErr := c.judge(f)
		if bad == "" && !icmpErr {
			continue
		}
		c.mu.Lock()
		c.cur.badN++
		if icmpErr {
			c.cur.icmpErr++
		}
		if len(c.cur.bad) < 20 {
			c.cur.bad = append(c.cur.bad, summary+": "+bad)
		}
		c.mu.Unlock()
	}
}

// phase returns the counts since the last call and starts new ones, once
// the interface has been quiet for 700 ms (at most 5 s): the kernel's
// answers can lag what provoked them by a second (multicast through a
// macvtap goes through a work queue; an error may wait for its next hop's
// neighbour resolution), and they belong to this phase.
func (c *frameCapture) phase() frameStats {
	const quiet, most = 700 * time.Millisecond, 5 * time.Second
	end := time.Now().Add(most)
	last, since := -1, time.Now()
	for time.Now().Before(end) {
		c.mu.Lock()
		n := c.cur.in + c.cur.out
		c.mu.Unlock()
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.cur
	c.cur = frameStats{}
	return s
}

// judgeUplink: what classifyFrame calls LAN-derived (any IP traffic but
// neighbour discovery from the uplink's own addresses), and any ICMP
// error, which classifyFrame folds into IPv4 traffic in general and
// redirects among.
func judgeUplink(f []byte) (string, string, bool) {
	_, summary, bad := classifyFrame(f)
	if src, _, ok := ipAddrs(f); ok && bad == "LAN address" && (src.String() == inetAddr4 || src.String() == inetAddr6) {
		// Recipe 3's probes coming back: the gateway routes the LAN's
		// prefix out of its uplink (a loop until the TTL runs out).
		bad = "the Internet's packet to the LAN sent back out of the uplink"
	}
	typ, isErr := icmpError(f)
	if isErr {
		summary += fmt.Sprintf(" ICMP error type %d", typ)
		if bad == "" {
			bad = "ICMP error"
		}
	}
	return summary, bad, isErr
}

// icmpError reports an ICMPv4 error (destination unreachable, source
// quench, redirect, time exceeded, parameter problem) or an ICMPv6 error
// (types 1-4), after IPv6 extension headers.
func icmpError(f []byte) (int, bool) {
	if len(f) < 14 {
		return 0, false
	}
	p := f[14:]
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		if len(p) < 20 {
			return 0, false
		}
		ihl := int(p[0]&0x0f) * 4
		if p[9] == 1 && len(p) > ihl && (isICMPError4(p[ihl]) || p[ihl] == 5) {
			return int(p[ihl]), true
		}
	case 0x86dd:
		if len(p) < 40 {
			return 0, false
		}
		nh, off := p[6], 40
		for (nh == 0 || nh == 43 || nh == 60) && len(p) >= off+8 {
			nh, off = p[off], off+(int(p[off+1])+1)*8
		}
		if nh == 58 && len(p) > off && p[off] >= 1 && p[off] <= 4 {
			return int(p[off]), true
		}
	}
	return 0, false
}

// ipAddrs returns an IP frame's source and destination.
func ipAddrs(f []byte) (src, dst netip.Addr, ok bool) {
	if len(f) < 14 {
		return src, dst, false
	}
	p := f[14:]
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		if len(p) >= 20 {
			return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), true
		}
	case 0x86dd:
		if len(p) >= 40 {
			return netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), true
		}
	}
	return src, dst, false
}

// judgeFromInternet flags IP packets from the Internet host (in a
// workstation's namespace: the gateway forwarded them).
func judgeFromInternet(f []byte) (string, string, bool) {
	if src, _, ok := ipAddrs(f); ok && (src.String() == inetAddr4 || src.String() == inetAddr6) {
		_, summary, _ := classifyFrame(f)
		return summary, "from the Internet host", false
	}
	return "", "", false
}

// bgProc is a background command in a namespace; it is killed in the
// cleanup of the test that started it.
type bgProc struct {
	name  string
	cmd   *exec.Cmd
	out   testlog.Buffer
	lines chan string
	done  chan struct{}
	err   error
}

// scriptCmd is a scapy script from testdata/hostile run in host's
// namespace.
func (h *hostileNet) scriptCmd(host *lanHost, script string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", host.ns, h.python, filepath.Join(h.scripts, script)}, args...)...)
	// No __pycache__ next to the scripts in the work tree.
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	return cmd
}

// script runs a scapy script to its end (bounded) and returns its last
// line, its summary.
func (h *hostileNet) script(t *testing.T, host *lanHost, script string, args ...string) string {
	t.Helper()
	p := h.startScript(t, host, script, args...)
	return p.wait(t, 60*time.Second)
}

func (h *hostileNet) startScript(t *testing.T, host *lanHost, script string, args ...string) *bgProc {
	t.Helper()
	p := &bgProc{name: script, cmd: h.scriptCmd(host, script, args...), lines: make(chan string, 64), done: make(chan struct{})}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.out.Write([]byte(sc.Text() + "\n"))
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitLine waits (bounded) for an output line starting with prefix.
func (p *bgProc) waitLine(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l := <-p.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-p.done:
			// Lines read before the end are still in the channel.
			for {
				select {
				case l := <-p.lines:
					if strings.HasPrefix(l, prefix) {
						return l
					}
				default:
					t.Fatalf("%s ended (%v) without %q:\n%s", p.name, p.err, prefix, p.out.String())
				}
			}
		case <-timeout:
			t.Fatalf("%s: no %q within %v:\n%s", p.name, prefix, d, p.out.String())
		}
	}
}

// wait waits (bounded) for the end and returns the last output line.
func (p *bgProc) wait(t *testing.T, d time.Duration) string {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not end within %v:\n%s", p.name, d, p.out.String())
	}
	out := strings.TrimSpace(p.out.String())
	if p.err != nil {
		t.Fatalf("%s: %v\n%s", p.name, p.err, out)
	}
	last := out[strings.LastIndex(out, "\n")+1:]
	t.Log(last)
	return last
}

// kill ends the script now.
func (p *bgProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func TestHostileLAN(t *testing.T) {
	nstest.RequireRoot(t, "curl", "dig")
	began := time.Now()
	h := newHostileNet(t, hostileBinary(t))
	h.checkUplink(t, "before torgate")
	t.Run("kernel", h.testKernel)
	t.Run("identity", h.testIdentity)
	t.Run("exhaustion", h.testExhaustion)
	t.Run("services", h.testServices)
	t.Logf("hostile LAN: %v", time.Since(began).Round(time.Second))
}

// testKernel plays recipes 1-3, which aim at the gateway's kernel rather
// than at torgate, in each of torgate's states: what the LAN sends must
// not make the kernel answer or forward, whether or not torgate runs.
func (h *hostileNet) testKernel(t *testing.T) {
	h.freshTorgate(t)
	B := h.hosts["B"]
	// B listens on port 80 and watches its interface for anything from
	// the Internet host.
	var accepts atomic.Int64
	for _, a := range [][2]string{{"tcp4", B.addr4 + ":80"}, {"tcp6", "[" + B.addr6 + "]:80"}} {
		ln := countingListener{listenIn(t, B.ns, a[0], a[1]), &accepts}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	bcap := startFrameCapture(t, B.ns, "eth0", judgeFromInternet)

	for _, ph := range []struct {
		name    string
		enter   func(t *testing.T)
		running bool
	}{
		{"running", func(*testing.T) {}, true},
		{"after-SIGTERM", func(t *testing.T) { h.stopTorgate(t, syscall.SIGTERM) }, false},
		{"after-SIGKILL", func(t *testing.T) { h.startTorgate(t); h.stopTorgate(t, syscall.SIGKILL) }, false},
		{"restarted", func(t *testing.T) { h.startTorgate(t) }, true},
	} {
		t.Run(ph.name, func(t *testing.T) {
			ph.enter(t)
			h.checkUplink(t, "entering "+ph.name)
			t.Run("1-hbh-icmpv6", func(t *testing.T) {
				h.script(t, h.hosts["A"], "hbh6.py", "eth0", "2000", "1000", inetAddr6)
				h.checkUplink(t, "recipe 1 ("+ph.name+")")
			})
			t.Run("2-ipv4-option", func(t *testing.T) {
				h.script(t, h.hosts["A"], "ipopt4.py", "eth0", h.gwMAC, gwLAN4, "1000", "500", inetAddr4)
				h.checkUplink(t, "recipe 2 ("+ph.name+")")
			})
			t.Run("3-internet-to-lan", func(t *testing.T) { h.internetToLAN(t, ph.name, bcap, &accepts) })
			if ph.running {
				h.mustServe(t, B, "after the recipes ("+ph.name+")", url4)
			}
		})
	}
}

// internetToLAN is recipe 3: A keeps claiming, by broadcast, that B's
// addresses are at B's MAC, which completes any neighbour entry the
// gateway's kernel makes for B; meanwhile the Internet host pings B and
// opens TCP to B's port 80. Nothing from the Internet may reach B.
func (h *hostileNet) internetToLAN(t *testing.T, phase string, bcap *frameCapture, accepts *atomic.Int64) {
	A, B := h.hosts["A"], h.hosts["B"]
	bcap.phase()
	accepts.Store(0)
	// Claims every 100 ms for at most 15 s, ended when the probes are.
	claim := h.startScript(t, A, "claim.py", "eth0", B.mac, "150", "100", B.addr4, B.addr6)
	claim.waitLine(t, "claim: started", 20*time.Second)
	// Both families at once, pings and connects.
	var received, connected atomic.Int64
	var wg sync.WaitGroup
	for _, dst := range []string{B.addr4, B.addr6} {
		wg.Go(func() {
			n, err := pingFrom(h.inet, dst, 8)
			if err != nil {
				t.Error(err)
			}
			received.Add(int64(n))
		})
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if c, err := dialIn(ctx, h.inet, "tcp", net.JoinHostPort(dst, "80")); err == nil {
				connected.Add(1)
				c.Close()
			}
		})
	}
	wg.Wait()
	claim.kill()
	h.gwNeighboursSettled(t)
	s := bcap.phase()
	t.Logf("recipe 3 (%s): B received %d frames from the Internet host, 16 pings got %d replies, %d of 2 TCP connects to B:80 succeeded, B accepted %d",
		phase, s.badN, received.Load(), connected.Load(), accepts.Load())
	if s.badN > 0 || received.Load() > 0 || connected.Load() > 0 || accepts.Load() > 0 {
		t.Errorf("recipe 3 (%s): the Internet reached B: %d frames, %d ping replies, %d connects, %d accepts; e.g.:\n%s",
			phase, s.badN, received.Load(), connected.Load(), accepts.Load(), strings.Join(s.bad, "\n"))
	}
	h.checkUplink(t, "recipe 3 ("+phase+")")
}

// pingFrom sends count echo requests from namespace ns to dst, 200 ms
// apart, and returns how many replies came within a second of the last.
// (In Go rather than ping(8): one tool fewer to install.)
func pingFrom(ns, dst string, count int) (int, error) {
	a := netip.MustParseAddr(dst)
	network, typ, reply, proto := "ip4:icmp", icmp.Type(ipv4.ICMPTypeEcho), icmp.Type(ipv4.ICMPTypeEchoReply), 1
	if a.Is6() {
		network, typ, reply, proto = "ip6:ipv6-icmp", ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58
	}
	var c *icmp.PacketConn
	if err := netns.Do(ns, func() (err error) {
		c, err = icmp.ListenPacket(network, "")
		return err
	}); err != nil {
		return 0, fmt.Errorf("ICMP socket in %s: %w", ns, err)
	}
	defer c.Close()
	id := int(os.Getpid() & 0xffff)
	replies := make(chan struct{}, count)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != reply || from.String() != dst {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
				replies <- struct{}{}
			}
		}
	}()
	for seq := range count {
		b, _ := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("tg-hostile")}}).Marshal(nil)
		c.WriteTo(b, &net.IPAddr{IP: a.AsSlice()})
		time.Sleep(200 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	time.Sleep(time.Second)
	return len(replies), nil
}

// gwNeighboursSettled waits (bounded) until the gateway's kernel has no
// neighbour entry still being resolved, so that the ICMP errors its
// failed resolutions send (address unreachable, about 3 s after the last
// packet that needed one) land in this recipe's uplink check, not the
// next one's.
func (h *hostileNet) gwNeighboursSettled(t *testing.T) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ip", "-n", h.gw, "neigh", "show", "nud", "incomplete").CombinedOutput()
		out2, _ := exec.Command("ip", "-n", h.gw, "neigh", "show", "nud", "probe").CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))+strings.TrimSpace(string(out2))) == 0 {
			return
		}
		if time.Now().After(end) {
			t.Logf("gateway neighbours still resolving after 10s:\n%s%s", out, out2)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testIdentity plays recipes 4 and 8: sources and destinations torgate
// must not take on trust.
// Each starts a fresh torgate: recipe 4 leaves B locked out on today's
// code, which would make the others fail (or, for 8b, pass) for the
// wrong reason.
func (h *hostileNet) testIdentity(t *testing.T) {
	t.Run("4-spoofed-syn", h.spoofedSYN)
	t.Run("8a-curl6-by-name", func(t *testing.T) {
		h.freshTorgate(t)
		h.checkUplink(t, "before recipe 8a")
		B := h.hosts["B"]
		if !h.mustServe(t, B, "recipe 8a (IPv4 nameserver, curl -6)", "http://web.example.test/", "-6") {
			out, _ := runIn(B.ns, 10*time.Second, "dig", "+time=2", "+tries=1", "+short", "@"+gwLAN4, "web.example.test", "AAAA")
			t.Logf("recipe 8a: AAAA web.example.test from the gateway: %q", strings.TrimSpace(out))
			if a, err := netip.ParseAddr(strings.TrimSpace(out)); err == nil {
				out, _ := runIn(B.ns, 10*time.Second, "curl", "-sS", "-v", "--max-time", "5", "http://["+a.String()+"]/")
				t.Logf("recipe 8a: curl by that address:\n%s", tail(out, 12))
			}
			h.logLANMetrics(t, "recipe 8a")
		}
		h.checkUplink(t, "recipe 8a")
	})
	t.Run("8b-own-addresses", h.ownAddresses)
	t.Run("8c-address-conflict", h.addressConflict)
}

// spoofedSYN is recipe 4.
func (h *hostileNet) spoofedSYN(t *testing.T) {
	A, B := h.hosts["A"], h.hosts["B"]
	h.freshTorgate(t)
	h.checkUplink(t, "before recipe 4")
	// B is known: it fetched. Its credentials are those of its CONNECTs.
	m := h.mark()
	h.mustServe(t, B, "recipe 4, B first", url4)
	h.mustServe(t, B, "recipe 4, B first", url6)
	var bAuth []socks.Auth
	for _, r := range h.connectsSince(m, nil) {
		bAuth = append(bAuth, r.Auth)
	}
	if len(bAuth) == 0 {
		t.Fatal("recipe 4: B's fetches made no CONNECT")
	}
	isB := func(r sockstest.Request) bool {
		for _, a := range bAuth {
			if r.Auth == a {
				return true
			}
		}
		return false
	}

	// A sends SYNs from its own MAC with B's addresses; B stays idle, so
	// every CONNECT now is one of A's.
	m = h.mark()
	h.script(t, A, "syn.py", "eth0", h.gwMAC, inetAddr4, "80", "20", "200", B.addr4)
	h.script(t, A, "syn.py", "eth0", h.gwMAC, inetAddr6, "80", "20", "200", B.addr6)
	got := h.awaitNoConnects(m, 2*time.Second, nil)
	withB := 0
	for _, r := range got {
		if isB(r) {
			withB++
		}
	}
	t.Logf("recipe 4a: 40 SYNs from A's MAC with B's addresses caused %d CONNECTs, %d with B's credentials", len(got), withB)
	if len(got) > 0 {
		t.Errorf("recipe 4a: SYNs spoofed with B's addresses caused %d CONNECTs (%d with B's credentials)", len(got), withB)
	}

	// 200 such SYNs to a port whose upstream hangs, then B fetches.
	h.script(t, A, "syn.py", "eth0", h.gwMAC, inetAddr4, strconv.Itoa(hangPort), "200", "400", B.addr4)
	h.script(t, A, "syn.py", "eth0", h.gwMAC, inetAddr6, strconv.Itoa(hangPort), "200", "400", B.addr6)
	h.mustServe(t, B, "recipe 4b, after 400 spoofed SYNs to a hanging port", url4)
	h.mustServe(t, B, "recipe 4b, after 400 spoofed SYNs to a hanging port", url6)

	// SYNs from sources that never answer ARP or ND.
	m = h.mark()
	h.script(t, A, "syn.py", "eth0", h.gwMAC, inetAddr4, "80", "1500", "1500", "rand4:1500")
	h.script(t, A, "syn.py", "eth0", h.gwMAC, inetAddr6, "80", "500", "1500", "rand6:500")
	got = h.awaitNoConnects(m, 3*time.Second, nil)
	t.Logf("recipe 4c: SYNs from 1500 IPv4 and 500 IPv6 sources that never answer caused %d CONNECTs", len(got))
	if len(got) > 0 {
		t.Errorf("recipe 4c: SYNs from sources that never answer caused %d CONNECTs", len(got))
	}
	h.mustServe(t, B, "recipe 4c, after SYNs from made-up sources", url4)
	h.checkUplink(t, "recipe 4")
}

// ownAddresses is recipe 8b: the gateway's own addresses, on every
// interface, are no destination.
func (h *hostileNet) ownAddresses(t *testing.T) {
	B := h.hosts["B"]
	h.freshTorgate(t)
	h.checkUplink(t, "before recipe 8b")
	// B is served, so a failure below is a refusal.
	h.mustServe(t, B, "recipe 8b, before", url4)
	m := h.mark()
	for _, hp := range []string{gwUp4 + ":" + gwServicePort, "[" + gwUp6 + "]:" + gwServicePort,
		gwLAN4 + ":" + gwServicePort, "[" + gwLAN6 + "]:" + gwServicePort} {
		body, _, err := h.fetch(B, "http://"+hp+"/")
		if err == nil {
			t.Errorf("recipe 8b: B fetched the gateway's own %s: %q", hp, body)
		}
		if c := h.connectsSince(m, toDst(hp)); len(c) > 0 {
			t.Errorf("recipe 8b: B's fetch of the gateway's own %s went to Tor as CONNECT %v", hp, c[0].Dst)
		}
	}
	t.Logf("recipe 8b: CONNECTs while B fetched the gateway's own addresses: %d", len(h.connectsSince(m, nil)))
	h.checkUplink(t, "recipe 8b")
}

// addressConflict is recipe 8c: A claims the gateway's LAN addresses.
func (h *hostileNet) addressConflict(t *testing.T) {
	A, B := h.hosts["A"], h.hosts["B"]
	h.freshTorgate(t)
	h.checkUplink(t, "before recipe 8c")
	// Whatever A makes B and C believe must not outlive the recipe.
	t.Cleanup(func() {
		for _, host := range []*lanHost{h.hosts["B"], h.hosts["C"]} {
			exec.Command("ip", "-n", host.ns, "neigh", "flush", "dev", "eth0").Run()
		}
	})
	h.mustServe(t, B, "recipe 8c, before", url4)
	claim := h.startScript(t, A, "claim.py", "eth0", A.mac, "30", "200", "--router", gwLAN4, gwLAN6)
	claim.waitLine(t, "claim: started", 20*time.Second)
	for i := range 2 {
		h.mustServe(t, B, fmt.Sprintf("recipe 8c, during A's claim (%d)", i+1), url4)
		h.mustServe(t, B, fmt.Sprintf("recipe 8c, during A's claim (%d)", i+1), url6)
	}
	claim.wait(t, 30*time.Second)
	h.mustServe(t, B, "recipe 8c, after A's claim", url4)
	h.mustServe(t, B, "recipe 8c, after A's claim", url6)
	for _, fam := range []string{"-4", "-6"} {
		t.Logf("recipe 8c: B's neighbours (%s): %s", fam, strings.TrimSpace(mustRun(t, "ip", "-n", B.ns, fam, "neigh", "show", "dev", "eth0")))
	}
	if c := h.metrics(t, "conflict"); len(c) == 0 {
		t.Errorf("recipe 8c: no metric naming a conflict is above 0 after A claimed the gateway's addresses (want e.g. torgate_lan_drops_total{reason=\"address_conflict\"})")
	} else {
		t.Logf("recipe 8c: %s", strings.Join(c, "; "))
	}
	h.checkUplink(t, "recipe 8c")
}

// testExhaustion plays recipes 5-7: one machine trying to use up what the
// gateway shares among workstations.
func (h *hostileNet) testExhaustion(t *testing.T) {
	t.Run("5-many-addresses", h.manyAddresses)
	t.Run("6-automap-flood", h.automapFlood)
	t.Run("7-neighbour-flood", h.neighbourFlood)
}

// logLANMetrics logs torgate's non-zero link-layer, flow and DNS
// counters, to read what an attack did.
func (h *hostileNet) logLANMetrics(t *testing.T, what string) {
	t.Logf("%s: metrics:\n%s", what, strings.Join(h.metrics(t, "lan_", "flows", "drop", "dns_"), "\n"))
}

// manyAddresses is recipe 5: A takes 300 more LAN addresses (its kernel
// answers ARP for all) and from them holds pending and open flows, DNS
// over TCP connections and a SYN flood, while B, C and a newly arriving D
// want service.
func (h *hostileNet) manyAddresses(t *testing.T) {
	A := h.hosts["A"]
	h.freshTorgate(t)
	h.checkUplink(t, "before recipe 5")
	first := netip.MustParseAddr("10.152.153.1")
	var add, del strings.Builder
	a := first
	for range 300 {
		fmt.Fprintf(&add, "addr add %s/18 dev eth0\n", a)
		fmt.Fprintf(&del, "addr del %s/18 dev eth0\n", a)
		a = a.Next()
	}
	ipBatch(t, A.ns, add.String())
	t.Cleanup(func() {
		cmd := exec.Command("ip", "-n", A.ns, "-force", "-batch", "-")
		cmd.Stdin = strings.NewReader(del.String())
		cmd.Run()
	})

	hold := h.startScript(t, A, "hold.py", "90", first.String(), "300",
		fmt.Sprintf("%s:%d:4", inetAddr4, hangPort), // pending: upstream hangs
		fmt.Sprintf("%s:%d:8", inetAddr4, holdPort), // open: upstream holds
		gwLAN4+":53:1") // DNS over TCP, held
	t.Log(hold.waitLine(t, "hold: ready", 60*time.Second))
	flood := h.startScript(t, A, "syn.py", "eth0", h.gwMAC, inetAddr4, strconv.Itoa(hangPort), "6000", "500", "range4:"+first.String()+":300")
	for _, host := range []*lanHost{h.hosts["B"], h.hosts["C"]} {
		h.served(t, host, "recipe 5 while A holds")
	}
	D := h.addHost(t, "D", "10.152.152.13", "fd52:7b2a:1e00::13")
	h.served(t, D, "recipe 5 while A holds (D arrived)")
	h.logLANMetrics(t, "recipe 5 while A holds")

	flood.kill()
	hold.kill()
	for _, host := range []*lanHost{h.hosts["B"], h.hosts["C"], D} {
		h.served(t, host, "recipe 5 after A stopped")
	}
	h.checkUplink(t, "recipe 5")
}

// ipBatch runs "ip -batch" with cmds in namespace ns.
func ipBatch(t *testing.T, ns, cmds string) {
	t.Helper()
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s -batch: %v\n%s", ns, err, out)
	}
}

// automapFlood is recipe 6: DNS queries for 72000 distinct names, 9 from
// each of 8000 made-up sources, enough to fill the automap table (65536
// entries by default), whose recycling then picks the workstation holding
// the most entries; meanwhile B resolves 20 names and fetches each. B's
// names must keep working by the addresses B got, after the flood and
// after a restart.
func (h *hostileNet) automapFlood(t *testing.T) {
	A, B := h.hosts["A"], h.hosts["B"]
	h.freshTorgate(t)
	h.checkUplink(t, "before recipe 6")
	flood := h.startScript(t, A, "dnsflood.py", "eth0", h.gwMAC, gwLAN4, "8000", "9", "8000", "mixed")
	flood.waitLine(t, "dnsflood: started", 60*time.Second)
	type entry struct{ name, addr string }
	var names []entry
	for i := range 20 {
		e := entry{name: fmt.Sprintf("n%02d-%s.example.test", i, h.id)}
		if e.addr = h.resolve(t, B, "recipe 6 during the flood", e.name); e.addr != "" {
			names = append(names, e)
			h.mustServe(t, B, "recipe 6 during the flood", "http://"+e.name+"/", "--resolve", e.name+":80:"+e.addr)
		}
	}
	flood.wait(t, 60*time.Second)
	h.logLANMetrics(t, "recipe 6 after the flood")
	// fetchAll fetches B's names by the addresses B got, and wants each
	// to reach its name.
	fetchAll := func(what string) {
		m, failed := h.mark(), 0
		for _, e := range names {
			if !h.mustServe(t, B, what, "http://"+e.name+"/", "--resolve", e.name+":80:"+e.addr) {
				failed++
			} else if len(h.connectsSince(m, func(r sockstest.Request) bool { return r.Dst == socks.HostPort(e.name, 80) })) == 0 {
				t.Errorf("%s: B's fetch of %s by its address %s made no CONNECT %s:80", what, e.name, e.addr, e.name)
			}
		}
		t.Logf("%s: %d of B's %d names failed by their addresses", what, failed, len(names))
	}
	fetchAll("recipe 6 after the flood")
	// A restart with the same state directory: B's cached addresses
	// still name the same sites.
	h.stopTorgate(t, syscall.SIGTERM)
	h.startTorgate(t)
	fetchAll("recipe 6 after a restart")
	h.checkUplink(t, "recipe 6")
}

// neighbourFlood is recipe 7: ARP requests for the gateway from 8400
// made-up senders, 4200 within 2 s and then 210/s for 20 s; a machine
// arriving meanwhile, and B and C, want service.
func (h *hostileNet) neighbourFlood(t *testing.T) {
	A, B, C := h.hosts["A"], h.hosts["B"], h.hosts["C"]
	h.freshTorgate(t)
	h.checkUplink(t, "before recipe 7")
	h.mustServe(t, B, "recipe 7 before", url4)
	h.mustServe(t, C, "recipe 7 before", url4)
	flood := h.startScript(t, A, "arpflood.py", "eth0", gwLAN4, "4200", "2", "210", "20")
	flood.waitLine(t, "arpflood: burst done", 60*time.Second)
	D := h.addHost(t, "D", "10.152.152.13", "fd52:7b2a:1e00::13")
	for _, host := range []*lanHost{D, B, C} {
		h.served(t, host, "recipe 7 during the flood")
	}
	h.logLANMetrics(t, "recipe 7 during the flood")
	flood.wait(t, 60*time.Second)
	for _, host := range []*lanHost{D, B, C} {
		h.served(t, host, "recipe 7 after the flood")
	}
	h.checkUplink(t, "recipe 7")
}
