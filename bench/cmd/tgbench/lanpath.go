//go:build linux

package main

// The LAN path (-paths lan): how users deploy torgate as a gateway
// (docs/gateway.md). Each workstation namespace reaches the gateway
// namespace over a veth of its own, whose gateway end is what the router
// serves:
//
//	ws (198.18.N.2/24, default via .1) --veth-- gateway end tgblgX (198.18.N.1/24)
//	gateway --veth 198.18.3.0/30-- server namespace (iperf3, target)
//
// and on that path the "kernel" row is the gateway kernel's own
// forwarding (ip_forward on, the server namespace routing the kernel
// workstation's /24 back through the gateway): the ceiling of any router
// on this topology. The routers:
//
//   - torgate: "torgate run --lan tgblgX": it moves the interface into a
//     LAN namespace of its own and serves it through a passthru macvtap,
//     answering ARP/ND itself. It is started with nsenter --net, not ip
//     netns exec: the latter's private mount namespace hides the pin of
//     the LAN namespace from the host (it vanishes with torgate, and a
//     restart cannot find it).
//   - redsocks: Whonix's way: iptables -t nat REDIRECT of the
//     workstation's TCP in the gateway namespace into redsocks, which
//     relays it to the same SOCKS5 server as every other router.
//   - any template with {lan}: a router that serves the interface named,
//     started like torgate.
//
// The LAN path runs at the reference MTU only (the veths are made with
// it; torgate's macvtap keeps the MTU it was created with), with the same
// tests, runs and tables as the TUN path.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/torgate/torgate/internal/admin"
)

// The paths -paths can name.
const (
	pathTUN = "tun"
	pathLAN = "lan"
)

const (
	lanWSIf = "tgbl0" // the workstation's end of its LAN veth, in its own namespace
	// lanGWIf prefixes the gateway's ends: tgblgk for the kernel path,
	// tgblg0, tgblg1, ... for the routers (at most 15 bytes).
	lanGWIf = "tgblg"
	// lanSubnetKernel is the third octet of the kernel path's LAN
	// (198.18.16.0/24); router i's is lanSubnetKernel+1+i. All inside
	// 198.18.0.0/15, apart from the TUN path's 198.18.0-3.
	lanSubnetKernel = 16
	// redirPortBase is redsocks' port for router i: redirPortBase+i.
	redirPortBase = 12345
	// lanReadyWait bounds a LAN router's start: torgate checks its
	// addresses for 300 ms (lan.CheckAddresses) after moving the
	// interface.
	lanReadyWait = 20 * time.Second
)

// lanLink is one workstation's veth on the LAN path.
type lanLink struct {
	gwIf   string // the gateway's end, in the gateway namespace until torgate takes it
	subnet int    // 198.18.subnet.0/24
	// redsocks: the router is redsocks behind iptables REDIRECT, on
	// redirPort; else the router serves gwIf itself.
	redsocks  bool
	redirPort int
}

func (l *lanLink) gwAddr() string { return fmt.Sprintf("198.18.%d.1", l.subnet) }
func (l *lanLink) wsAddr() string { return fmt.Sprintf("198.18.%d.2", l.subnet) }
func (l *lanLink) prefix() string { return fmt.Sprintf("198.18.%d.0/24", l.subnet) }

// vars are the LAN path's placeholders: {lan} the interface to serve,
// {lanaddr} the gateway's address on it, {redirport} redsocks' port.
func (l *lanLink) vars() map[string]string {
	return map[string]string{"lan": l.gwIf, "lanaddr": l.gwAddr(), "redirport": strconv.Itoa(l.redirPort)}
}

// lanPeers are the LAN path's named routers; "-lan-router NAME[=PATH]".
var lanPeers = []peer{
	{
		name: "torgate",
		bin:  "{torgate}",
		// As on a gateway (docs/gateway.md), SOCKS over the unix socket
		// like the TUN path's reference row, /metrics scraped.
		template: "{bin} run --lan {lan} --admin {metrics} --socks unix:{socksunix}",
		what:     "torgate --lan on the gateway's end of the veth",
	},
	{
		name: "redsocks",
		bin:  "redsocks",
		// Debian's redsocks 0.5: the foreground, no per-connection log,
		// listening where iptables REDIRECT sends the workstation's TCP
		// (the address of the interface it came in on).
		template: "{bin} -c {config}",
		config: `base {
	log_debug = off;
	log_info = off;
	log = stderr;
	daemon = off;
	redirector = iptables;
}
redsocks {
	local_ip = {lanaddr};
	local_port = {redirport};
	ip = {sockshost};
	port = {socksport};
	type = socks5;
}
`,
		what: "iptables -t nat REDIRECT into redsocks (Whonix's transparent proxy path)",
	},
}

// parsePaths reads -paths.
func parsePaths(s string) ([]string, error) {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		if p != pathTUN && p != pathLAN {
			return nil, fmt.Errorf("-paths %q: %q is neither %s nor %s", s, p, pathTUN, pathLAN)
		}
		if slices.Contains(out, p) {
			return nil, fmt.Errorf("-paths %q: %s twice", s, p)
		}
		out = append(out, p)
	}
	return out, nil
}

// findLANPeer is findPeer for the LAN path's peers.
func findLANPeer(name string) (peer, bool) {
	for _, p := range lanPeers {
		if name == p.name || strings.HasPrefix(name, p.name+"-") {
			return p, true
		}
	}
	return peer{}, false
}

// parseLANRouterSpec reads one -lan-router value: "NAME" or "NAME=PATH"
// for a LAN peer, or "NAME=TEMPLATE" with {lan}.
func parseLANRouterSpec(v string) (routerSpec, error) {
	name, value, named := strings.Cut(v, "=")
	if strings.ContainsAny(name, " \t{/") {
		return routerSpec{}, fmt.Errorf("-lan-router %q: want NAME, NAME=PATH or NAME=TEMPLATE", v)
	}
	if named && strings.Contains(value, "{") {
		if !strings.Contains(value, "{lan}") {
			return routerSpec{}, fmt.Errorf("-lan-router %s: the template must contain {lan}", name)
		}
		return routerSpec{Name: name, Template: value}, nil
	}
	p, ok := findLANPeer(name)
	if !ok {
		return routerSpec{}, fmt.Errorf("-lan-router %q: %w %q (known: torgate, redsocks); or give NAME=TEMPLATE with {lan}", v, errUnknownPeer, name)
	}
	return p.spec(name, value), nil
}

// redsocksBin finds redsocks: in PATH, or where Debian puts it (/usr/sbin
// is not in every PATH, e.g. a test's).
func redsocksBin() (string, bool) {
	if p, err := exec.LookPath("redsocks"); err == nil {
		return p, true
	}
	if _, err := os.Stat("/usr/sbin/redsocks"); err == nil {
		return "/usr/sbin/redsocks", true
	}
	return "", false
}

// defaultLANRouters are torgate, and redsocks if it is installed.
func defaultLANRouters(log io.Writer) []routerSpec {
	tg, _ := findLANPeer("torgate")
	out := []routerSpec{tg.spec("torgate", "")}
	rs, _ := findLANPeer("redsocks")
	if bin, ok := redsocksBin(); ok {
		out = append(out, rs.spec("redsocks", bin))
	} else {
		fmt.Fprintln(log, "tgbench: no redsocks installed (Debian: apt install redsocks iptables): the LAN path measures torgate alone")
	}
	return out
}

// checkLANRouters validates the LAN path's routers before anything
// starts.
func checkLANRouters(routers []routerSpec, torgate string) error {
	names := map[string]bool{}
	for i, r := range routers {
		if r.uses("torgate") && torgate == "" {
			return fmt.Errorf("-lan-router %s: -torgate is needed by the template", r.Name)
		}
		if names[r.Name] {
			return fmt.Errorf("two LAN routers named %q", r.Name)
		}
		names[r.Name] = true
		if r.Peer != "redsocks" {
			continue
		}
		if r.Template == "redsocks -c {config}" {
			bin, ok := redsocksBin()
			if !ok {
				return errors.New("-lan-router redsocks: no redsocks installed (Debian: apt install redsocks iptables)")
			}
			rs, _ := findLANPeer("redsocks")
			routers[i] = rs.spec(r.Name, bin)
		}
		if _, err := exec.LookPath("iptables"); err != nil {
			if _, serr := os.Stat("/usr/sbin/iptables"); serr != nil {
				return errors.New("-lan-router redsocks: no iptables installed (Debian: apt install iptables)")
			}
		}
	}
	return nil
}

// newLANRouters makes the LAN path's router instances and its kernel
// path's link (no namespaces yet: setupLAN).
func (e *env) newLANRouters() {
	if !slices.Contains(e.f.paths, pathLAN) {
		return
	}
	e.lanWSK = e.id + "-wlk"
	e.lanKernel = &lanLink{gwIf: lanGWIf + "k", subnet: lanSubnetKernel}
	for i, spec := range e.f.lanRouters {
		l := &lanLink{gwIf: fmt.Sprintf("%s%d", lanGWIf, i), subnet: lanSubnetKernel + 1 + i, redsocks: spec.Peer == "redsocks", redirPort: redirPortBase + i}
		e.lanRouters = append(e.lanRouters, &routerInst{spec: spec, tun: l.gwIf, ws: fmt.Sprintf("%s-wl%d", e.id, i), lan: l})
	}
}

// usePath makes path the one measureMTU measures.
func (e *env) usePath(path string) {
	e.path = path
	if path == pathLAN {
		e.routers, e.wsK = e.lanRouters, e.lanWSK
		return
	}
	e.routers, e.wsK = e.tunRouters, e.tunWSK
}

// setupLAN builds the LAN path: a workstation namespace and veth per
// router and for the kernel path, forwarding on in the gateway, the
// server namespace's route back to the kernel workstation, redsocks'
// REDIRECT rules. torgate's LAN namespaces (one per interface it takes,
// pinned so that they outlive it) are noted for teardown before they
// exist.
func (e *env) setupLAN(ctx context.Context, mtu int) error {
	if e.lanKernel == nil {
		return nil
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/var/run/netns/"+e.gw, &st); err != nil {
		return err
	}
	type link struct {
		ws string
		l  *lanLink
	}
	links := []link{{e.lanWSK, e.lanKernel}}
	for _, r := range e.lanRouters {
		links = append(links, link{r.ws, r.lan})
	}
	m := strconv.Itoa(mtu)
	for _, k := range links {
		if err := ip(ctx, "netns", "add", k.ws); err != nil {
			return err
		}
		e.nsMade = append(e.nsMade, k.ws)
		if !k.l.redsocks && k.l != e.lanKernel {
			// lan.NamespaceName for an interface of a gateway in a
			// namespace of its own.
			e.nsMade = append(e.nsMade, fmt.Sprintf("tg-%s-%d", k.l.gwIf, st.Ino))
		}
		if err := ipBatch(ctx,
			[]string{"-n", k.ws, "link", "set", "lo", "up"},
			[]string{"link", "add", lanWSIf, "netns", k.ws, "mtu", m, "type", "veth", "peer", "name", k.l.gwIf, "netns", e.gw, "mtu", m},
			[]string{"-n", k.ws, "addr", "add", k.l.wsAddr() + "/24", "dev", lanWSIf},
			[]string{"-n", k.ws, "link", "set", lanWSIf, "up"},
			[]string{"-n", k.ws, "route", "add", "default", "via", k.l.gwAddr()},
			[]string{"-n", e.gw, "addr", "add", k.l.gwAddr() + "/24", "dev", k.l.gwIf},
			[]string{"-n", e.gw, "link", "set", k.l.gwIf, "up"},
		); err != nil {
			return err
		}
		if k.l.redsocks {
			if err := nsRun(ctx, e.gw, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", k.l.gwIf, "-p", "tcp",
				"-j", "REDIRECT", "--to-ports", strconv.Itoa(k.l.redirPort)); err != nil {
				return err
			}
		}
	}
	if err := nsRun(ctx, e.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	if err := ip(ctx, "-n", e.srv, "route", "add", e.lanKernel.prefix(), "via", strings.TrimSuffix(upGW, "/30")); err != nil {
		return err
	}
	e.logf("LAN path: namespaces %s, mtu %d", strings.Join(slicesMap(links, func(k link) string { return k.ws }), ", "), mtu)
	return nil
}

func slicesMap[T any](xs []T, f func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// nsRun runs a command in namespace ns (ip netns exec).
func nsRun(ctx context.Context, ns string, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startLANRouter starts a LAN path router and waits until it serves: for
// redsocks, until it listens; for torgate, until its /readyz says ready
// (the interface taken, its addresses checked); for another template,
// until the interface left the gateway namespace, then -settle.
func (e *env) startLANRouter(ctx context.Context, r *routerInst) error {
	command, logPath, err := e.routerCommand(r, 0)
	if err != nil {
		return err
	}
	enter := nsenterNet(e.gw)
	if r.lan.redsocks {
		enter = ipNetnsExec(e.gw)
	}
	p, err := startRouter(enter, command, logPath, nil)
	if err != nil {
		return err
	}
	r.proc = p
	var ready func() bool
	switch {
	case r.lan.redsocks:
		addr := r.lan.gwAddr() + ":" + strconv.Itoa(r.lan.redirPort)
		ready = func() bool { return listening(e.gw, addr) }
	case r.metrics != "":
		ready = func() bool { return readyz(ctx, r.metrics) }
	default:
		ready = func() bool { return !linkExists(e.gw, r.lan.gwIf) }
	}
	if !waitFor(ctx, lanReadyWait, func() bool { return !p.alive() || ready() }) || !p.alive() {
		return fmt.Errorf("LAN router %s did not come up (see %s)", r.spec.Name, logPath)
	}
	if !r.lan.redsocks && r.metrics == "" {
		waitFor(ctx, e.f.settle, func() bool { return false })
	}
	if !p.alive() {
		return fmt.Errorf("LAN router %s exited after start (see %s)", r.spec.Name, logPath)
	}
	e.logf("LAN router %s pid %d on %s: %s", r.spec.Name, p.pid, r.lan.gwIf, command)
	return nil
}

// readyz reports whether a torgate admin endpoint answers /readyz with
// 200.
func readyz(ctx context.Context, endpoint string) bool {
	client, base, err := admin.Client(endpoint)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
