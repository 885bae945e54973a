package main

// The deployment test of "torgate run --lan": three network namespaces
// played as a LAN gateway is deployed (issue 10, item 5).
//
//	ws (workstation)          gw (gateway, forwarding ON)          inet ("the Internet")
//	eth0 10.152.152.11/18 --- eth1 10.152.152.10/18
//	     fd52:7b2a:1e00::11        fd52:7b2a:1e00::10
//	                               eth0 198.18.1.1/24 ------------ eth0 198.18.1.2/24
//	                                    2001:db8:1e01::1               2001:db8:1e01::2
//	                               lo: SOCKS server (plays Tor)    HTTP :80, capture on eth0
//	                               0.0.0.0:2222, [::]:2222
//
// inet routes the LAN prefixes back via gw, so anything the gateway
// forwarded would work and be seen. The capture in inet records every
// frame; nothing in it may come from the LAN.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
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

	"golang.org/x/sys/unix"

	"github.com/torgate/torgate/internal/netns"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// The deployment's addresses.
const (
	wsAddr4   = "10.152.152.11"
	gwLAN4    = "10.152.152.10"
	wsAddr6   = "fd52:7b2a:1e00::11"
	gwLAN6    = "fd52:7b2a:1e00::10"
	gwUp4     = "198.18.1.1"
	inetAddr4 = "198.18.1.2"
	gwUp6     = "2001:db8:1e01::1"
	inetAddr6 = "2001:db8:1e01::2"
	// gwMarker fills every body the SOCKS server serves: if one byte of
	// it shows up on the uplink, LAN traffic leaked.
	gwMarker = "tg-socks-served-7f3a9c"
	// gwAdmin is torgate's admin endpoint on the gateway's loopback; the
	// gateway namespace is fresh, so the port is free.
	gwAdmin = "127.0.0.1:9081"
	// gwServicePort is a service of the gateway's own that the LAN must
	// never reach.
	gwServicePort = "2222"
)

var (
	lanPrefix4 = netip.MustParsePrefix("10.152.152.0/18").Masked() // 10.152.128.0/18
	lanPrefix6 = netip.MustParsePrefix("fd52:7b2a:1e00::/64")
	upPrefix6  = netip.MustParsePrefix("2001:db8:1e01::/64")
)

// gwNet is the three-namespace deployment.
type gwNet struct {
	t              *testing.T
	ws, gw, inet   string // namespace names
	lan            string // the gateway's LAN interface (eth1 or br-tor)
	lanNS          string // the namespace torgate moves it (or its macvtap) into
	bin            string // torgate binary
	stateDir       string
	socks          *sockstest.Server
	cap            *capture
	webAccepts     atomic.Int64 // connections the inet HTTP server accepted
	serviceAccepts atomic.Int64 // connections the gateway's :2222 accepted
	tg             *tgProc      // the running torgate, if any
	bgMu           sync.Mutex
	bg             []*exec.Cmd // background workstation commands, killed in Cleanup
}

// gwOptions picks the LAN's shape.
type gwOptions struct {
	// Bridge puts the gateway's LAN address on a bridge br-tor with the
	// workstation's veth enslaved and no uplink member (the VM-host
	// recipe) instead of on eth1.
	Bridge bool
}

// newGwNet builds the deployment. Everything is removed in t.Cleanup.
func newGwNet(t *testing.T, bin string, o gwOptions) *gwNet {
	t.Helper()
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	g := &gwNet{t: t, ws: "tgws-" + id, gw: "tggw-" + id, inet: "tgin-" + id, lan: "eth1", bin: bin, stateDir: t.TempDir()}
	if o.Bridge {
		g.lan = "br-tor"
	}
	for _, ns := range []string{g.ws, g.gw, g.inet} {
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { killNamespace(ns) })
	}
	g.lanNS = lanNamespace(t, g.gw, g.lan)
	wsEtc := "/etc/netns/" + g.ws
	if err := os.MkdirAll(wsEtc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(wsEtc) })
	if err := os.WriteFile(wsEtc+"/resolv.conf", []byte("nameserver "+gwLAN4+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	lanPeer := "eth1"
	if o.Bridge {
		lanPeer = "lan0"
	}
	cmds := [][]string{
		{"-n", g.ws, "link", "add", "eth0", "type", "veth", "peer", "name", lanPeer, "netns", g.gw},
	}
	if o.Bridge {
		cmds = append(cmds,
			[]string{"-n", g.gw, "link", "add", "br-tor", "type", "bridge", "stp_state", "0", "forward_delay", "0"},
			[]string{"-n", g.gw, "link", "set", "lan0", "master", "br-tor"},
			[]string{"-n", g.gw, "link", "set", "lan0", "up"},
		)
	}
	cmds = append(cmds, [][]string{
		{"-n", g.ws, "link", "set", "lo", "up"},
		{"-n", g.ws, "addr", "add", wsAddr4 + "/18", "dev", "eth0"},
		{"-n", g.ws, "-6", "addr", "add", wsAddr6 + "/64", "dev", "eth0", "nodad"},
		{"-n", g.ws, "link", "set", "eth0", "up"},
		{"-n", g.ws, "route", "add", "default", "via", gwLAN4},
		{"-n", g.ws, "-6", "route", "add", "default", "via", gwLAN6},
	}...)
	for _, c := range cmds {
		mustRun(t, "ip", c...)
	}
	wireGateway(t, g.gw, g.inet, g.lan)

	g.cap = startCapture(t, g.inet, "eth0")
	g.startInetWeb()
	g.startGatewayService()
	g.startSocks()
	t.Cleanup(g.stopBackground)
	return g
}

// wireGateway gives the gateway namespace gw its LAN address on lan
// (gwLAN4, gwLAN6) and an uplink eth0 to the "Internet" namespace inet,
// which routes the LAN prefixes back through the gateway, so anything the
// gateway forwarded would arrive there; forwarding is on in gw, as on a
// router (torgate must not rely on it being off).
func wireGateway(t *testing.T, gw, inet, lan string) {
	t.Helper()
	for _, c := range [][]string{
		{"-n", gw, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", inet},
		{"-n", gw, "link", "set", "lo", "up"},
		{"-n", gw, "addr", "add", gwLAN4 + "/18", "dev", lan},
		{"-n", gw, "-6", "addr", "add", gwLAN6 + "/64", "dev", lan, "nodad"},
		{"-n", gw, "link", "set", lan, "up"},
		{"-n", gw, "addr", "add", gwUp4 + "/24", "dev", "eth0"},
		{"-n", gw, "-6", "addr", "add", gwUp6 + "/64", "dev", "eth0", "nodad"},
		{"-n", gw, "link", "set", "eth0", "up"},
		{"-n", gw, "route", "add", "default", "via", inetAddr4},
		{"-n", gw, "-6", "route", "add", "default", "via", inetAddr6},

		{"-n", inet, "link", "set", "lo", "up"},
		{"-n", inet, "addr", "add", inetAddr4 + "/24", "dev", "eth0"},
		{"-n", inet, "-6", "addr", "add", inetAddr6 + "/64", "dev", "eth0", "nodad"},
		{"-n", inet, "link", "set", "eth0", "up"},
		{"-n", inet, "route", "add", lanPrefix4.String(), "via", gwUp4},
		{"-n", inet, "-6", "route", "add", lanPrefix6.String(), "via", gwUp6},
	} {
		mustRun(t, "ip", c...)
	}
	mustRun(t, "ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
}

// lanNamespace is the name of the namespace torgate pins for iface when it
// runs in gw (lan.NamespaceName), removed in Cleanup whatever happens.
func lanNamespace(t *testing.T, gw, iface string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+gw, &st); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("tg-%s-%d", iface, st.Ino)
	t.Cleanup(func() { killNamespace(name) })
	return name
}

// tgCommand runs the torgate binary in gw's network namespace but in the
// host's mount namespace (nsenter, not ip netns exec, whose private mount
// namespace would hide the LAN namespace's pin from the host, so that it
// would vanish with torgate).
func tgCommand(gw, bin string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + gw, bin}, args...)...)
}

// killNamespace kills what the test left running inside ns (only this
// test's processes live there) and deletes it.
func killNamespace(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	exec.Command("ip", "netns", "delete", ns).Run()
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// listenIn opens a TCP listener inside namespace ns.
func listenIn(t *testing.T, ns, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialIn dials from inside namespace ns.
func dialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(ns, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startInetWeb is the site the workstation "visits". It must never see a
// connection: torgate sends everything to the SOCKS server.
func (g *gwNet) startInetWeb() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "inet-direct\n") })
	for _, a := range [][2]string{{"tcp4", inetAddr4 + ":80"}, {"tcp6", "[" + inetAddr6 + "]:80"}} {
		ln := listenIn(g.t, g.inet, a[0], a[1])
		srv := &http.Server{Handler: h}
		go srv.Serve(countingListener{ln, &g.webAccepts})
		g.t.Cleanup(func() { srv.Close() })
	}
}

// startGatewayService is a service on the gateway's own addresses.
func (g *gwNet) startGatewayService() {
	for _, a := range [][2]string{{"tcp4", "0.0.0.0:" + gwServicePort}, {"tcp6", "[::]:" + gwServicePort}} {
		ln := listenIn(g.t, g.gw, a[0], a[1])
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				g.serviceAccepts.Add(1)
				c.Close()
			}
		}()
	}
}

// startSocks starts the SOCKS server on the gateway's loopback. It plays
// Tor and serves everything itself; it dials nothing: port 80 gets an
// HTTP server over an in-memory pipe, port 7 an echo, private addresses
// (the LAN's, the gateway's) are refused as Tor's exit policy refuses
// them, other ports are refused.
func (g *gwNet) startSocks() {
	pl := newPipeListener()
	srv := &http.Server{Handler: http.HandlerFunc(serveMarker)}
	go srv.Serve(pl)
	g.t.Cleanup(func() { srv.Close(); pl.Close() })
	connect := func(req sockstest.Request) (socks.Reply, net.Conn) {
		// Private addresses are refused, as a Tor exit would. (torgate
		// refuses them itself before they get here: tunnel/dest.go. The
		// test's "Internet" is 198.18.1.0/24 and 2001:db8:1e01::/64, which
		// exist only inside its namespaces.)
		ip := req.Dst.IP
		if ip.IsValid() && (ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast()) {
			return socks.ReplyNotAllowed, nil
		}
		switch req.Dst.Port {
		case 80:
			c, ok := pl.dial()
			if !ok {
				return socks.ReplyGeneralFailure, nil
			}
			return socks.ReplySucceeded, c
		case 7:
			return sockstest.Echo(req)
		}
		return socks.ReplyConnectionRefused, nil
	}
	if err := netns.Do(g.gw, func() error {
		g.socks = sockstest.NewServer(g.t, sockstest.Config{Connect: connect})
		return nil
	}); err != nil {
		g.t.Fatal(err)
	}
}

// serveMarker serves the SOCKS server's content, made of gwMarker:
//
//	/             a short page
//	/big?mb=N     N MiB as fast as the reader takes it
//	/stream?s=N   about 1 MiB/s for N seconds (a download a fault can hit)
func serveMarker(w http.ResponseWriter, r *http.Request) {
	chunk := bytes.Repeat([]byte(gwMarker+"\n"), 32<<10/(len(gwMarker)+1))
	switch r.URL.Path {
	case "/big":
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		total := mb << 20
		w.Header().Set("Content-Length", strconv.Itoa(total))
		for sent := 0; sent < total; {
			n := min(len(chunk), total-sent)
			if _, err := w.Write(chunk[:n]); err != nil {
				return
			}
			sent += n
		}
	case "/stream":
		s, _ := strconv.Atoi(r.URL.Query().Get("s"))
		end := time.Now().Add(time.Duration(s) * time.Second)
		for time.Now().Before(end) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(30 * time.Millisecond)
		}
	default:
		fmt.Fprintf(w, "socks-content %s\n", gwMarker)
	}
}

// pipeListener hands the HTTP server the far ends of in-memory pipes.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (p *pipeListener) dial() (net.Conn, bool) {
	a, b := net.Pipe()
	select {
	case p.conns <- b:
		return a, true
	case <-p.done:
		return nil, false
	}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *pipeListener) Close() error   { p.once.Do(func() { close(p.done) }); return nil }
func (p *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// tgProc is one torgate run in the gateway.
type tgProc struct {
	cmd  *exec.Cmd
	out  *testlog.Buffer
	done chan struct{}
	err  error
}

// startTorgate runs torgate in the gateway with the deployment's one
// command and waits (bounded) for /readyz. It returns how long that took.
func (g *gwNet) startTorgate() time.Duration {
	g.t.Helper()
	if g.tg != nil {
		g.t.Fatal("torgate already running")
	}
	p := &tgProc{out: &testlog.Buffer{}, done: make(chan struct{})}
	p.cmd = tgCommand(g.gw, g.bin, "run", "--lan", g.lan,
		"--socks", g.socks.Addr(), "--admin", gwAdmin, "--state-dir", g.stateDir, "--log-level", "debug")
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
			g.t.Logf("torgate (pid %d) output:\n%s", p.cmd.Process.Pid, p.out.String())
		}
	})
	client := g.adminClient()
	deadline := began.Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			g.t.Fatalf("torgate run --lan %s exited: %v\n%s", g.lan, p.err, p.out)
		default:
		}
		resp, err := client.Get("http://" + gwAdmin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(began)
			}
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("torgate not ready within 30s (last: %v)\n%s", err, p.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopTorgate signals torgate and waits (bounded) for it to exit.
func (g *gwNet) stopTorgate(sig syscall.Signal) {
	g.t.Helper()
	p := g.tg
	if p == nil {
		g.t.Fatal("torgate not running")
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		g.t.Fatalf("torgate did not exit within 20s of %v\n%s", sig, p.out)
	}
	if sig == syscall.SIGTERM && p.err != nil {
		g.t.Errorf("torgate after SIGTERM: %v\n%s", p.err, p.out)
	}
	g.tg = nil
}

// adminClient talks to the admin endpoint on the gateway's loopback.
func (g *gwNet) adminClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, g.gw, network, addr)
		},
	}}
}

// wsRun runs a command in the workstation.
func (g *gwNet) wsRun(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", g.ws, name}, args...)...).CombinedOutput()
	return string(out), err
}

// wsStart starts a background command in the workstation; it is killed in
// Cleanup if still running. Its combined output goes to out.
func (g *gwNet) wsStart(out io.Writer, name string, args ...string) *exec.Cmd {
	g.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", g.ws, name}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.bgMu.Lock()
	g.bg = append(g.bg, cmd)
	g.bgMu.Unlock()
	return cmd
}

func (g *gwNet) stopBackground() {
	g.bgMu.Lock()
	defer g.bgMu.Unlock()
	for _, c := range g.bg {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}
}

// fetch GETs url from the workstation with curl and returns the body.
func (g *gwNet) fetch(url string, maxTime int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(maxTime+5)*time.Second)
	defer cancel()
	return g.wsRun(ctx, "curl", "-sS", "-g", "--max-time", strconv.Itoa(maxTime), url)
}

// urls the workstation visits.
var (
	url4 = "http://" + inetAddr4 + "/"
	url6 = "http://[" + inetAddr6 + "]/"
)

// mustFetch fetches url and wants the SOCKS server's content.
func (g *gwNet) mustFetch(url string) {
	g.t.Helper()
	body, err := g.fetch(url, 10)
	if err != nil || !strings.Contains(body, gwMarker) {
		g.t.Errorf("fetch %s from the workstation: %v\n%s", url, err, body)
	}
}

// waitFetch polls until url serves the SOCKS server's content, up to
// bound, and returns how long it took.
func (g *gwNet) waitFetch(url string, bound time.Duration) (time.Duration, error) {
	began := time.Now()
	var last string
	for time.Since(began) < bound {
		body, err := g.fetch(url, 2)
		if err == nil && strings.Contains(body, gwMarker) {
			return time.Since(began), nil
		}
		last = fmt.Sprintf("%v: %s", err, strings.TrimSpace(body))
		time.Sleep(250 * time.Millisecond)
	}
	return time.Since(began), fmt.Errorf("%s not served within %v (last: %s)", url, bound, last)
}

// mustNotFetch wants url to fail from the workstation.
func (g *gwNet) mustNotFetch(url string) {
	g.t.Helper()
	body, err := g.fetch(url, 4)
	if err == nil {
		g.t.Errorf("fetch %s succeeded with torgate down: %q", url, body)
	}
}

// dig asks server for name's A record from the workstation and wants an
// answer.
func (g *gwNet) dig(server, name string) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := g.wsRun(ctx, "dig", "+time=3", "+tries=3", "@"+server, name, "A")
	if err != nil || !strings.Contains(out, "status: NOERROR") || strings.Contains(out, "ANSWER: 0") {
		g.t.Errorf("dig @%s %s from the workstation: %v\n%s", server, name, err, out)
	}
}

// serviceUnreachable wants the gateway's own service closed to the LAN.
func (g *gwNet) serviceUnreachable() {
	g.t.Helper()
	for _, addr := range []string{net.JoinHostPort(gwLAN4, gwServicePort), net.JoinHostPort(gwLAN6, gwServicePort)} {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		c, err := dialIn(ctx, g.ws, "tcp", addr)
		cancel()
		if err == nil {
			// torgate may accept and then reset (it forwards to "Tor",
			// which refuses private addresses): what counts is that the
			// gateway's listener never sees it.
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, rerr := c.Read(make([]byte, 1))
			c.Close()
			if rerr == nil {
				g.t.Errorf("%s: the gateway's own service answered the workstation", addr)
			}
		}
	}
	if n := g.serviceAccepts.Load(); n != 0 {
		g.t.Errorf("the gateway's own service on :%s accepted %d connections from the LAN", gwServicePort, n)
	}
}

// checkClean asserts the capture and the Internet's server saw nothing
// from the LAN, and logs the phase's counts.
func (g *gwNet) checkClean(phase string) {
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

// ruleCount counts "ip rule" and "ip -6 rule" lines in the gateway.
func (g *gwNet) ruleCount() (int, int) {
	g.t.Helper()
	v4 := mustRun(g.t, "ip", "-n", g.gw, "rule", "show")
	v6 := mustRun(g.t, "ip", "-n", g.gw, "-6", "rule", "show")
	return strings.Count(v4, "\n"), strings.Count(v6, "\n")
}

// guardInPlace wants the guard rules and the macvtap to outlive torgate.
func (g *gwNet) guardInPlace(when string) {
	g.t.Helper()
	for _, fam := range []string{"-4", "-6"} {
		rules := mustRun(g.t, "ip", "-n", g.gw, fam, "rule", "show")
		for _, iif := range []string{g.lan, "tg-" + g.lan} {
			if !hasRule(rules, "iif "+iif, "blackhole") {
				g.t.Errorf("%s: no %s guard rule for iif %s:\n%s", when, fam, iif, rules)
			}
		}
	}
	if out, err := exec.Command("ip", "-n", g.lanNS, "link", "show", "tg-"+g.lan).CombinedOutput(); err != nil {
		g.t.Errorf("%s: tg-%s gone: %s", when, g.lan, out)
	}
}

func hasRule(rules string, words ...string) bool {
	for _, line := range strings.Split(rules, "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return true
		}
	}
	return false
}

// socksSaw reports whether the SOCKS server got a CONNECT to dst.
func (g *gwNet) socksSaw(dst socks.Addr) bool {
	for _, r := range g.socks.Requests() {
		if r.Command == socks.CmdConnect && r.Dst == dst {
			return true
		}
	}
	return false
}

// phase1 is the service as a workstation sees it.
func (g *gwNet) phase1() {
	g.t.Helper()
	g.mustFetch(url4)
	g.mustFetch(url6)
	for _, dst := range []string{inetAddr4 + ":80", "[" + inetAddr6 + "]:80"} {
		if !g.socksSaw(socks.AddrFromAddrPort(netip.MustParseAddrPort(dst))) {
			g.t.Errorf("the SOCKS server got no CONNECT %s: %v", dst, g.socks.Requests())
		}
	}
	g.mustFetch("http://web.example.test/")
	if !g.socksSaw(socks.HostPort("web.example.test", 80)) {
		g.t.Errorf("fetch by name: no CONNECT web.example.test:80 reached the SOCKS server")
	}
	for _, server := range []string{gwLAN4, gwLAN6, inetAddr4} {
		g.dig(server, "web.example.test")
	}
	g.serviceUnreachable()
}

func TestGatewayDeployment(t *testing.T) {
	// Three deployment tests (this one, TestWorkstationTor,
	// TestWorkstationServices) each build their own namespaces (random
	// names), private Tor network (a random 127.x.y.0/24) and state
	// directories, so they share nothing but the CPU, and run beside
	// each other: one after another with TestHostileLAN the package took
	// 444 s of go test's 10-minute limit (2026-12-05, two cores).
	// TestHostileLAN stays alone: beside TestGatewayDeployment its recipe
	// 8c (a claim of the gateway's address) once left B's kernel with A's
	// MAC past B's 5 s fetch (CI, 2026-12-05): its outcome depends on
	// when torgate's defence lands against the claim's last frame.
	t.Parallel()
	nstest.RequireRoot(t, "curl", "dig", "setpriv")
	bin := buildTorgate(t)
	g := newGwNet(t, bin, gwOptions{})
	began := time.Now()
	g.checkClean("before torgate")

	// 1. The service.
	ready := g.startTorgate()
	t.Logf("phase 1: ready %v after start", ready.Round(time.Millisecond))
	rules4, rules6 := g.ruleCount()
	g.phase1()
	g.checkClean("phase 1 (service)")
	g.runCheck()
	g.checkClean("phase 1 (torgate check)")

	// 2. LAN faults during downloads.
	g.faultNeighbours()
	g.checkClean("phase 2a (workstation stops answering ARP and ND)")
	g.faultLinkDown()
	g.checkClean("phase 2b (LAN link down and up)")

	// 3. IPv6 neighbour entries for the gateway stay usable.
	g.neighbourSoak(65 * time.Second)
	g.checkClean("phase 3 (IPv6 for a minute)")

	// 4. SIGTERM: the LAN stays closed; a restart brings it back.
	g.stopTorgate(syscall.SIGTERM)
	g.closedWhileDown("after SIGTERM")
	g.checkClean("phase 4 (after SIGTERM)")
	g.restart("SIGTERM")
	if r4, r6 := g.ruleCount(); r4 != rules4 || r6 != rules6 {
		t.Errorf("phase 6: ip rule lines %d/%d (v4/v6) after a restart, %d/%d after the first start", r4, r6, rules4, rules6)
	}
	g.checkClean("phase 4 (restarted)")

	// 5. SIGKILL mid-download: the same.
	var dl testlog.Buffer
	cmd := g.wsStart(&dl, "curl", "-sS", "-o", "/dev/null", "--max-time", "30", "http://"+inetAddr4+"/stream?s=20")
	time.Sleep(2 * time.Second)
	g.stopTorgate(syscall.SIGKILL)
	g.closedWhileDown("after SIGKILL")
	cmd.Process.Kill()
	cmd.Wait()
	g.checkClean("phase 5 (after SIGKILL)")
	g.restart("SIGKILL")
	// 6. Idempotent: no rule added twice.
	if r4, r6 := g.ruleCount(); r4 != rules4 || r6 != rules6 {
		t.Errorf("phase 6: ip rule lines %d/%d (v4/v6) after the third start, %d/%d after the first", r4, r6, rules4, rules6)
	}
	g.checkClean("phase 5 (restarted)")

	// 7. "torgate lan down" restores the gateway.
	g.stopTorgate(syscall.SIGTERM)
	out, err := tgCommand(g.gw, bin, "lan", "down", g.lan).CombinedOutput()
	if err != nil {
		t.Errorf("torgate lan down %s: %v\n%s", g.lan, err, out)
	}
	for _, fam := range []string{"-4", "-6"} {
		rules := mustRun(t, "ip", "-n", g.gw, fam, "rule", "show")
		if !hasRule(rules, "0:", "lookup local") || hasRule(rules, "blackhole") {
			t.Errorf("after lan down: %s rules not restored:\n%s", fam, rules)
		}
	}
	if out, err := exec.Command("ip", "-n", g.lanNS, "link").CombinedOutput(); err == nil {
		t.Errorf("after lan down: namespace %s still there: %s", g.lanNS, out)
	}
	if out := mustRun(t, "ip", "-n", g.gw, "addr", "show", g.lan); !strings.Contains(out, gwLAN4+"/18") || !strings.Contains(out, gwLAN6+"/64") {
		t.Errorf("after lan down: %s has not its addresses back:\n%s", g.lan, out)
	}
	g.checkClean("phase 7 (lan down)")
	t.Logf("whole deployment test: %v", time.Since(began).Round(time.Second))
}

func TestGatewayBridge(t *testing.T) {
	nstest.RequireRoot(t, "curl", "dig")
	bin := buildTorgate(t)
	g := newGwNet(t, bin, gwOptions{Bridge: true})
	g.checkClean("before torgate")
	ready := g.startTorgate()
	t.Logf("ready %v after start", ready.Round(time.Millisecond))
	g.phase1()
	g.checkClean("phase 1 (service on br-tor)")
	g.stopTorgate(syscall.SIGTERM)
	if out, err := tgCommand(g.gw, bin, "lan", "down", g.lan).CombinedOutput(); err != nil {
		t.Errorf("torgate lan down %s: %v\n%s", g.lan, err, out)
	}
}

// restart starts torgate again and wants service back within 20 s with no
// hand-made route or rule.
func (g *gwNet) restart(after string) {
	g.t.Helper()
	began := time.Now()
	ready := g.startTorgate()
	took := map[string]time.Duration{}
	for _, u := range []string{url4, url6} {
		if _, err := g.waitFetch(u, 20*time.Second); err != nil {
			g.t.Errorf("restart after %s: %v", after, err)
		}
		took[u] = time.Since(began)
	}
	g.t.Logf("restart after %s: ready %v, IPv4 fetched %v, IPv6 fetched %v after the start", after,
		ready.Round(time.Millisecond), took[url4].Round(time.Millisecond), took[url6].Round(time.Millisecond))
	g.serviceUnreachable()
}

// closedWhileDown wants nothing to work from the LAN while torgate is not
// running, and the guard to stay.
func (g *gwNet) closedWhileDown(when string) {
	g.t.Helper()
	g.mustNotFetch(url4)
	g.mustNotFetch(url6)
	g.serviceUnreachable()
	g.guardInPlace(when)
}

// faultNeighbours: during a download over each family, the workstation
// stops answering ARP and IPv6 neighbour solicitations for 12 s while
// torgate keeps sending, then answers again. "ip link set eth0 arp off"
// does both: Linux ignores neighbour solicitations on an IFF_NOARP device
// as it ignores ARP (checked 2026-12-02 on 6.18: the soliciting peer's
// entry stays INCOMPLETE), and the workstation's own neighbour entries
// turn NOARP, so it sends its frames to its own MAC address meanwhile.
// (disable_ipv6 would remove its address: a different fault.)
func (g *gwNet) faultNeighbours() {
	g.t.Helper()
	var out4, out6 testlog.Buffer
	d4 := g.wsStart(&out4, "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "40", "http://"+inetAddr4+"/stream?s=20")
	d6 := g.wsStart(&out6, "curl", "-sS", "-g", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "40", "http://["+inetAddr6+"]/stream?s=20")
	time.Sleep(2 * time.Second)
	mustRun(g.t, "ip", "-n", g.ws, "link", "set", "eth0", "arp", "off")
	time.Sleep(12 * time.Second)
	mustRun(g.t, "ip", "-n", g.ws, "link", "set", "eth0", "arp", "on")
	for _, u := range []string{url4, url6} {
		took, err := g.waitFetch(u, 20*time.Second)
		if err != nil {
			g.t.Errorf("after the neighbour fault: %v", err)
		}
		g.t.Logf("phase 2a: %s fetched %v after the workstation answered again", u, took.Round(time.Millisecond))
	}
	d4.Wait()
	d6.Wait()
	g.t.Logf("phase 2a: downloads during the fault: IPv4 %q, IPv6 %q (bytes, or curl's error)", strings.TrimSpace(out4.String()), strings.TrimSpace(out6.String()))
}

// faultLinkDown: the gateway's LAN link goes down for 5 s during a
// download, then up.
func (g *gwNet) faultLinkDown() {
	g.t.Helper()
	var out4, out6 testlog.Buffer
	d4 := g.wsStart(&out4, "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "30", "http://"+inetAddr4+"/stream?s=12")
	d6 := g.wsStart(&out6, "curl", "-sS", "-g", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "30", "http://["+inetAddr6+"]/stream?s=12")
	time.Sleep(2 * time.Second)
	mustRun(g.t, "ip", "-n", g.lanNS, "link", "set", g.lan, "down")
	time.Sleep(5 * time.Second)
	mustRun(g.t, "ip", "-n", g.lanNS, "link", "set", g.lan, "up")
	for _, u := range []string{url4, url6} {
		took, err := g.waitFetch(u, 20*time.Second)
		if err != nil {
			g.t.Errorf("after the LAN link came back: %v", err)
		}
		g.t.Logf("phase 2b: %s fetched %v after the link came back", u, took.Round(time.Millisecond))
	}
	d4.Wait()
	d6.Wait()
	g.t.Logf("phase 2b: downloads during the fault: IPv4 %q, IPv6 %q", strings.TrimSpace(out4.String()), strings.TrimSpace(out6.String()))
}

// neighbourSoak fetches over IPv6 every 2 s for d: every fetch succeeds
// and the workstation never has the gateway FAILED.
func (g *gwNet) neighbourSoak(d time.Duration) {
	g.t.Helper()
	end := time.Now().Add(d)
	n, failed := 0, 0
	for time.Now().Before(end) {
		n++
		if body, err := g.fetch(url6, 5); err != nil || !strings.Contains(body, gwMarker) {
			failed++
			g.t.Errorf("phase 3: IPv6 fetch %d: %v %s", n, err, body)
		}
		neigh := mustRun(g.t, "ip", "-n", g.ws, "-6", "neigh", "show", gwLAN6)
		if strings.Contains(neigh, "FAILED") {
			g.t.Errorf("phase 3: the workstation has the gateway FAILED: %s", neigh)
		}
		time.Sleep(2 * time.Second)
	}
	g.t.Logf("phase 3: %d IPv6 fetches over %v, %d failed", n, d, failed)
}

// runCheck runs "torgate check" in the workstation as root and as nobody,
// without --admin (the admin endpoint is on the gateway's loopback).
func (g *gwNet) runCheck() {
	g.t.Helper()
	// nobody must be able to read and run the binary.
	dir, err := os.MkdirTemp("", "tgcheck")
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "torgate")
	b, err := os.ReadFile(g.bin)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		g.t.Fatal(err)
	}
	const onion = "torgatecheckxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion"
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	for _, c := range []struct {
		name     string
		prefix   []string
		url      string
		wantSkip bool // the ICMP check skips: no privilege
	}{
		{name: "root", url: url4},
		{name: "root, .onion", url: "http://" + onion + "/"},
		{name: "nobody", prefix: nobody, url: url4, wantSkip: true},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		args := append(append([]string{}, c.prefix...), bin, "check", "--url", c.url, "--timeout", "15s")
		out, err := g.wsRun(ctx, args[0], args[1:]...)
		cancel()
		g.t.Logf("torgate check (%s):\n%s", c.name, out)
		if err != nil {
			g.t.Errorf("torgate check (%s) in the workstation: %v", c.name, err)
		}
		checkLines(g.t, c.name, out, c.wantSkip)
	}
	if !g.socksSaw(socks.HostPort(onion, 80)) {
		g.t.Errorf("torgate check --url http://%s/: no CONNECT %s:80 reached the SOCKS server", onion, onion)
	}
	// With ping_group_range open to nobody, the ICMP check runs.
	mustRun(g.t, "ip", "netns", "exec", g.ws, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := g.wsRun(ctx, nobody[0], append(nobody[1:], bin, "check", "--url", url4, "--timeout", "15s")...)
	g.t.Logf("torgate check (nobody, ping_group_range open):\n%s", out)
	if err != nil {
		g.t.Errorf("torgate check (nobody, ping_group_range open): %v", err)
	}
	checkLines(g.t, "nobody, ping_group_range open", out, false)
	mustRun(g.t, "ip", "netns", "exec", g.ws, "sysctl", "-qw", "net.ipv4.ping_group_range=1 0")
}

// checkLines wants every check line PASS, or SKIP for the ICMP check (and
// only with wantSkip).
func checkLines(t *testing.T, who, out string, wantSkip bool) {
	t.Helper()
	skipped := false
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch {
		case f[0] == "PASS":
		case f[0] == "SKIP" && f[1] == "icmp-blocked" && strings.Contains(line, "ping_group_range"):
			skipped = true
		case f[0] == "SKIP" || f[0] == "FAIL":
			t.Errorf("torgate check (%s): %s", who, line)
		}
	}
	if skipped != wantSkip {
		t.Errorf("torgate check (%s): ICMP check skipped %v, want %v", who, skipped, wantSkip)
	}
}

// capture records every frame on an interface with an AF_PACKET socket
// and classifies it with classifyFrame.
type capture struct {
	fd   int
	stop atomic.Bool
	wg   sync.WaitGroup

	mu     sync.Mutex
	cur    captureStats // since the last phase; guarded by mu
	recent []string     // summaries of the last frames; guarded by mu
}

type captureStats struct {
	frames, arp, nd int
	bad             []string
}

// startCapture opens the socket inside namespace ns, bound to dev.
func startCapture(t *testing.T, ns, dev string) *capture {
	t.Helper()
	c := &capture{fd: -1}
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind to %s: %w", dev, err)
		}
		// A short receive timeout lets the loop notice stop.
		tv := unix.Timeval{Usec: 200_000}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture in %s: %v", ns, err)
	}
	c.wg.Go(c.readLoop)
	t.Cleanup(func() {
		c.stop.Store(true)
		c.wg.Wait()
		unix.Close(c.fd)
	})
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) readLoop() {
	buf := make([]byte, 65536)
	for !c.stop.Load() {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // timeout (EAGAIN) or EINTR
		}
		dir := "in "
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			dir = "out"
		}
		kind, summary, bad := classifyFrame(buf[:n])
		c.mu.Lock()
		c.cur.frames++
		switch kind {
		case "arp":
			c.cur.arp++
		case "nd":
			c.cur.nd++
		}
		line := dir + " " + summary
		if bad != "" {
			line += " LAN-DERIVED: " + bad
			if len(c.cur.bad) < 50 {
				c.cur.bad = append(c.cur.bad, line)
			}
		}
		c.recent = append(c.recent, line)
		if len(c.recent) > 60 {
			c.recent = c.recent[1:]
		}
		c.mu.Unlock()
	}
}

// phase returns the counts since the last call and starts new ones. A
// short pause first lets frames in flight be read.
func (c *capture) phase() captureStats {
	time.Sleep(300 * time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.cur
	c.cur = captureStats{}
	return s
}

func (c *capture) recentSummary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.recent, "\n")
}

// lanNeedles are byte strings that must never appear on the uplink: the
// marker of the SOCKS server's content, the LAN addresses, the LAN's IPv6
// /64 prefix.
var lanNeedles = func() [][]byte {
	n := [][]byte{[]byte(gwMarker)}
	for _, a := range []string{wsAddr4, gwLAN4} {
		b := netip.MustParseAddr(a).As4()
		n = append(n, b[:])
	}
	p := lanPrefix6.Addr().As16()
	return append(n, p[:8])
}()

// classifyFrame sorts one Ethernet frame seen on the uplink. kind is
// "arp", "nd" (IPv6 neighbour discovery or MLD from a link-local, the
// unspecified or an uplink address), "ipv4", "ipv6" or "other"; bad says
// why the frame is LAN-derived or has no business on the uplink, "" if it
// is fine. Nothing on the uplink has any reason to carry IP traffic but
// neighbour discovery: torgate talks only to the SOCKS server on the
// gateway's loopback, so every other IP packet is reported.
func classifyFrame(f []byte) (kind, summary, bad string) {
	if len(f) < 14 {
		return "other", fmt.Sprintf("runt frame of %d bytes", len(f)), ""
	}
	for _, n := range lanNeedles {
		if bytes.Contains(f[14:], n) {
			bad = fmt.Sprintf("carries %x", n)
			break
		}
	}
	et := binary.BigEndian.Uint16(f[12:14])
	p := f[14:]
	switch et {
	case 0x0806:
		return "arp", fmt.Sprintf("ARP %d bytes", len(f)), bad
	case 0x0800:
		if len(p) < 20 {
			return "ipv4", "short IPv4", "short IPv4 packet"
		}
		ihl := int(p[0]&0x0f) * 4
		src, _ := netip.AddrFromSlice(p[12:16])
		dst, _ := netip.AddrFromSlice(p[16:20])
		proto := p[9]
		summary = fmt.Sprintf("IPv4 %s > %s proto %d len %d", src, dst, proto, len(p))
		switch {
		case lanPrefix4.Contains(src) || lanPrefix4.Contains(dst):
			bad = "LAN address"
		case proto == 1 && len(p) > ihl && isICMPError4(p[ihl]):
			bad = fmt.Sprintf("ICMP error type %d", p[ihl])
		case bad == "":
			bad = "IPv4 traffic on the uplink"
		}
		return "ipv4", summary, bad
	case 0x86dd:
		if len(p) < 40 {
			return "ipv6", "short IPv6", "short IPv6 packet"
		}
		src, _ := netip.AddrFromSlice(p[8:24])
		dst, _ := netip.AddrFromSlice(p[24:40])
		nh, rest := p[6], p[40:]
		if nh == 0 && len(rest) >= 8 { // hop-by-hop options (MLD's router alert)
			if hl := (int(rest[1]) + 1) * 8; len(rest) >= hl {
				nh, rest = rest[0], rest[hl:]
			}
		}
		summary = fmt.Sprintf("IPv6 %s > %s next %d len %d", src, dst, nh, len(p))
		if nh == 58 && len(rest) > 0 {
			summary += fmt.Sprintf(" icmpv6 type %d", rest[0])
		}
		switch {
		case lanPrefix6.Contains(src) || lanPrefix6.Contains(dst):
			bad = "LAN address"
		case nh == 58 && len(rest) > 0 && rest[0] >= 1 && rest[0] <= 4:
			bad = fmt.Sprintf("ICMPv6 error type %d", rest[0])
		case bad != "":
		case nh == 58 && len(rest) > 0 && isNDOrMLD(rest[0]) &&
			(src.IsLinkLocalUnicast() || src.IsUnspecified() || upPrefix6.Contains(src)):
			return "nd", summary, ""
		default:
			bad = "IPv6 traffic on the uplink"
		}
		return "ipv6", summary, bad
	}
	return "other", fmt.Sprintf("ethertype %#04x %d bytes", et, len(f)), bad
}

// isICMPError4: destination unreachable, time exceeded, parameter problem
// (and source quench, long gone but still an error quoting a packet).
func isICMPError4(typ byte) bool { return typ == 3 || typ == 4 || typ == 11 || typ == 12 }

// isNDOrMLD: MLD query/report/done (130-132, 143), RS, RA, NS, NA,
// redirect (133-137).
func isNDOrMLD(typ byte) bool { return typ >= 130 && typ <= 137 || typ == 143 }
