package deb

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// rootfsSuite and rootfsPackages make the container's root file system:
// Debian's own systemd as PID 1, tor for the package's Depends, and the
// tools the test runs inside.
const (
	rootfsSuite    = "bookworm"
	rootfsPackages = "systemd,systemd-sysv,dbus,iproute2,tor,kmod,procps"
	rootfsCacheDir = "/var/cache/torgate-test"
)

// rootfsTar returns a tarball of the container's root file system, made
// with mmdebstrap from the machine's apt sources (about 50 s, 210 MB) and
// cached in rootfsCacheDir under a name keyed by the suite, the package
// list and the apt sources, so that later runs (and later steps of one CI
// run) skip it. Outside the repository: it is fetched, not ours.
func rootfsTar(t *testing.T) string {
	t.Helper()
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", rootfsSuite, rootfsPackages)
	srcs, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	for _, f := range append([]string{"/etc/apt/sources.list"}, srcs...) {
		b, _ := os.ReadFile(f)
		h.Write(b)
	}
	path := filepath.Join(rootfsCacheDir, "rootfs-"+rootfsSuite+"-"+hex.EncodeToString(h.Sum(nil))[:16]+".tar")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(rootfsCacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tmp := strings.TrimSuffix(path, ".tar") + ".tmp.tar" // mmdebstrap's format follows the extension
	out, err := exec.Command("mmdebstrap", "--variant=minbase", "--include="+rootfsPackages, rootfsSuite, tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		t.Fatalf("mmdebstrap: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	t.Logf("root file system made in %v: %s", time.Since(start).Round(time.Second), path)
	return path
}

// container is a Debian system booted with systemd-nspawn --boot: systemd
// is its PID 1, its network namespace is private (lo only until the test
// moves a LAN interface in), and the test enters it with nsenter, as there
// is no systemd-machined on the host to register with.
type container struct {
	t      *testing.T
	dir    string // root file system
	name   string
	bind   string // host directory bound at /run/torgate-test
	log    string // the console
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // nspawn's exit; valid once exited is closed
	leader int   // the container's PID 1, in the host's PID namespace
}

func (c *container) boot() {
	c.t.Helper()
	f, err := os.OpenFile(c.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	c.cmd = exec.Command("systemd-nspawn", "--directory="+c.dir, "--machine="+c.name,
		"--boot", "--private-network", "--register=no", "--keep-unit",
		"--console=read-only", "--bind="+c.bind+":/run/torgate-test")
	c.cmd.Stdout, c.cmd.Stderr = f, f
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func() { c.err = c.cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(90 * time.Second)
	for c.leader = 0; ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			c.t.Fatalf("container %s did not boot in 90 s\n%s", c.name, c.tail())
		}
		select {
		case <-c.exited:
			c.t.Fatalf("systemd-nspawn exited: %v\n%s", c.err, c.tail())
		default:
		}
		if c.leader == 0 {
			out, _ := exec.Command("pgrep", "-P", strconv.Itoa(c.cmd.Process.Pid)).Output()
			c.leader, _ = strconv.Atoi(strings.TrimSpace(string(out)))
			continue
		}
		// "degraded" is a boot where some unit failed (tor, which finds no
		// network): the boot is over all the same.
		out, _ := c.exec("systemctl", "is-system-running", "--wait")
		if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
			return
		}
	}
}

// exec runs a command inside the container (all its namespaces).
func (c *container) exec(args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--target", strconv.Itoa(c.leader), "--all", "--"}, args...)...).CombinedOutput()
	return string(out), err
}

func (c *container) must(args ...string) string {
	c.t.Helper()
	out, err := c.exec(args...)
	if err != nil {
		c.t.Fatalf("in the container: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// show returns a unit's property.
func (c *container) show(unit, prop string) string {
	c.t.Helper()
	return strings.TrimSpace(c.must("systemctl", "show", "--value", "-p", prop, unit))
}

// wait waits for nspawn to exit and returns its exit status.
func (c *container) wait(d time.Duration) int {
	c.t.Helper()
	select {
	case <-c.exited:
	case <-time.After(d):
		c.t.Fatalf("container %s still running after %v\n%s", c.name, d, c.tail())
	}
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

func (c *container) tail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (c *container) kill() {
	if c.cmd != nil && c.cmd.Process != nil {
		select {
		case <-c.exited:
		default:
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
}

// TestSystemd installs the package in a Debian container booted with
// systemd as PID 1, enables both units, reboots, and checks what issue 22
// (item 6) asks of the units: the guard is in place before the LAN
// interface exists; torgate keeps retrying until the interface appears
// (later than the default start limit allows) and then serves the
// workstation behind it (a fetch through the test's recording SOCKS
// server, bound into the container as a unix socket); a SIGKILLed torgate
// is restarted; "systemctl stop torgate" leaves the LAN closed; and with
// the package's default configuration its managed Tor starts as
// debian-tor inside the unit's sandbox; a purge stops torgate and leaves
// the LAN closed.
func TestSystemd(t *testing.T) {
	nstest.RequireRoot(t, "systemd-nspawn", "mmdebstrap", "nsenter", "pgrep", "curl", "ping", "dpkg-deb", "lintian", "git")
	start := time.Now()
	deb := debs(t, "amd64")
	tarball := rootfsTar(t)
	t.Logf("package and root file system ready after %v", time.Since(start).Round(100*time.Millisecond))

	b := make([]byte, 3)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	c := &container{t: t, dir: t.TempDir(), name: "tgdeb-" + suffix}
	c.log = filepath.Join(t.TempDir(), "console.log")
	out, err := exec.Command("tar", "-C", c.dir, "-xf", tarball).CombinedOutput()
	if err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	debBytes, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "root/torgate.deb"), debBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(c.dir, "etc/hostname"), []byte(c.name+"\n"), 0o644)

	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello through the packaged gateway, host=%s\n", r.Host)
	}))
	defer web.Close()
	srv := sockstest.NewServer(t, sockstest.Config{
		Unix:    true,
		Connect: sockstest.DialTo(func(socks.Addr) string { return web.Listener.Addr().String() }),
	})
	c.bind = filepath.Dir(srv.Addr())
	t.Cleanup(func() {
		c.kill()
		// nspawn without machined leaves its (empty) propagation
		// directory behind.
		os.Remove("/run/systemd/nspawn/propagate/" + c.name)
	})
	defer func() {
		if t.Failed() && c.leader != 0 {
			out, _ := c.exec("journalctl", "-b", "--no-pager", "-n", "80", "-u", "torgate", "-u", "torgate-lan-guard")
			t.Logf("journal:\n%s", out)
		}
	}()

	// First boot: install. The maintainer scripts enable nothing and touch
	// no network; the units verify clean under the container's systemd.
	c.boot()
	t.Logf("first boot done after %v", time.Since(start).Round(100*time.Millisecond))
	c.must("dpkg", "-i", "/root/torgate.deb")
	for _, u := range []string{"torgate.service", "torgate-lan-guard.service"} {
		if s, _ := c.exec("systemctl", "is-enabled", u); strings.TrimSpace(s) != "disabled" {
			t.Errorf("%s after install: %q, want disabled", u, s)
		}
	}
	if rules := c.must("ip", "rule"); strings.Contains(rules, "blackhole") {
		t.Errorf("install changed the policy rules:\n%s", rules)
	}
	if out, err := c.exec("systemd-analyze", "verify", "torgate.service", "torgate-lan-guard.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify in the container: %v\n%s", err, out)
	}
	sec := c.must("systemd-analyze", "security", "--no-pager", "torgate.service")
	if m := regexp.MustCompile(`Overall exposure level for torgate.service: (\S+ \S+)`).FindStringSubmatch(sec); m != nil {
		var open []string
		for l := range strings.Lines(sec) {
			if strings.HasPrefix(l, "✗") {
				open = append(open, strings.Join(strings.Fields(l), " "))
			}
		}
		t.Logf("systemd-analyze security torgate.service: %s; not set (docs/debian.md says why):\n%s", m[1], strings.Join(open, "\n"))
	} else {
		t.Errorf("systemd-analyze security: no exposure level\n%s", sec)
	}
	c.must("cp", "/etc/torgate/torgate.toml", "/root/torgate.toml.shipped")
	// The operator's part: the LAN interface and the Tor (here the test's
	// SOCKS server) in the conffile, then enable both units.
	c.must("sh", "-c", `cat >/etc/torgate/torgate.toml <<EOF
lan = ["eth1"]
socks = "unix:/run/torgate-test/`+filepath.Base(srv.Addr())+`"
state-dir = "/var/lib/torgate"
admin = "127.0.0.1:9083"
EOF`)
	c.must("systemctl", "enable", "torgate-lan-guard", "torgate")
	c.exec("systemctl", "reboot")
	if code := c.wait(60 * time.Second); code != 133 {
		t.Fatalf("systemd-nspawn exited with %d at reboot, want 133\n%s", code, c.tail())
	}

	// Second boot, as systemd-nspawn@.service would restart it. eth1 does
	// not exist yet: the guard rules must already be there.
	c.boot()
	boot2 := time.Now()
	t.Logf("second boot done after %v", time.Since(start).Round(100*time.Millisecond))
	if _, err := c.exec("ip", "link", "show", "eth1"); err == nil {
		t.Fatal("eth1 exists before the test made it")
	}
	for _, v := range []string{"-4", "-6"} {
		if rules := c.must("ip", v, "rule"); !regexp.MustCompile(`iif eth1 .*blackhole`).MatchString(rules) {
			t.Errorf("ip %s rule: no guard for eth1 at boot:\n%s", v, rules)
		}
	}
	guardUp, _ := strconv.ParseUint(c.show("torgate-lan-guard.service", "ActiveEnterTimestampMonotonic"), 10, 64)
	netPre, _ := strconv.ParseUint(c.show("network-pre.target", "ActiveEnterTimestampMonotonic"), 10, 64)
	if guardUp == 0 || netPre == 0 || guardUp > netPre {
		t.Errorf("guard active at %d µs, network-pre.target at %d µs: want the guard first", guardUp, netPre)
	}

	// torgate fails (no eth1) and is restarted every 2 s; more than the
	// default start limit's 5 starts in 10 s must not stop it for good.
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, _ := strconv.Atoi(c.show("torgate.service", "NRestarts"))
		if n >= 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("torgate restarted %d times in 60 s, want 7 (state %s)", n, c.show("torgate.service", "ActiveState"))
		}
		time.Sleep(time.Second)
	}
	if s, r := c.show("torgate.service", "ActiveState"), c.show("torgate.service", "Result"); s == "failed" || r == "start-limit-hit" {
		t.Fatalf("torgate gave up: %s, %s", s, r)
	}
	t.Logf("torgate retried for %v without eth1", time.Since(boot2).Round(100*time.Millisecond))
	// Each of those failed starts stopped at validation: none wrote the
	// DNS state (before, each took a new automap epoch, and 64 restarts
	// went round the ring).
	if out, err := c.exec("ls", "-A", "/var/lib/torgate"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("the state directory after failed starts: %v %q, want it empty", err, out)
	}

	// eth1 appears, with the gateway's address, as ifupdown or networkd
	// would give it; its peer is the workstation.
	ws := "tgdws-" + suffix
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	ip("netns", "add", ws)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ws).Run() })
	ip("link", "add", "veth-ws", "netns", ws, "type", "veth", "peer", "name", "eth1", "netns", fmt.Sprintf("/proc/%d/ns/net", c.leader))
	for _, a := range [][]string{
		{"-n", ws, "link", "set", "lo", "up"},
		{"-n", ws, "addr", "add", "10.152.152.11/18", "dev", "veth-ws"},
		{"-n", ws, "link", "set", "veth-ws", "up"},
		{"-n", ws, "route", "add", "default", "via", "10.152.152.10"},
	} {
		ip(a...)
	}
	c.must("ip", "addr", "add", "10.152.152.10/18", "dev", "eth1")
	c.must("ip", "link", "set", "eth1", "up")
	eth1Up := time.Now()

	fetch := func(max time.Duration) (string, error) {
		out, err := exec.Command("ip", "netns", "exec", ws, "curl", "-sS", "--max-time", strconv.Itoa(int(max.Seconds())), "http://192.0.2.10/").CombinedOutput()
		return string(out), err
	}
	// serving waits until the workstation's fetch goes through torgate.
	serving := func(what string, since time.Time) {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for {
			out, err := fetch(3 * time.Second)
			if err == nil && strings.Contains(out, "hello through the packaged gateway") {
				t.Logf("%s: serving %v later", what, time.Since(since).Round(100*time.Millisecond))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the workstation's fetch still fails after 45 s: %v %s", what, err, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	serving("eth1 up", eth1Up)
	// After set-up torgate holds neither CAP_SYS_PTRACE (bit 19, for
	// lan.NamespaceName) nor CAP_SYS_ADMIN (bit 21).
	status := c.must("cat", "/proc/"+c.show("torgate.service", "MainPID")+"/status")
	if m := regexp.MustCompile(`CapEff:\s+([0-9a-f]+)`).FindStringSubmatch(status); m == nil {
		t.Errorf("no CapEff in torgate's status:\n%s", status)
	} else if eff, _ := strconv.ParseUint(m[1], 16, 64); eff&(1<<19|1<<21) != 0 {
		t.Errorf("torgate's effective capabilities %s after set-up include CAP_SYS_PTRACE or CAP_SYS_ADMIN", m[1])
	}
	// torgate uses the guard's namespace, and pins none of its own.
	if ns := strings.Fields(c.must("ls", "/run/netns")); len(ns) != 1 || ns[0] != "tg-eth1" {
		t.Errorf("/run/netns holds %v, want the guard's tg-eth1 only", ns)
	}
	if reqs := srv.Requests(); len(reqs) == 0 || reqs[len(reqs)-1].Dst.String() != "192.0.2.10:80" {
		t.Fatalf("SOCKS requests %+v, want the fetch of 192.0.2.10:80", reqs)
	}

	// A crash: systemd restarts torgate, which takes the LAN again.
	pid := c.show("torgate.service", "MainPID")
	restarts := c.show("torgate.service", "NRestarts")
	killed := time.Now()
	c.must("systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", "torgate.service")
	serving("SIGKILL", killed)
	if p, n := c.show("torgate.service", "MainPID"), c.show("torgate.service", "NRestarts"); p == pid || n == restarts {
		t.Errorf("after SIGKILL: MainPID %s (was %s), NRestarts %s (was %s)", p, pid, n, restarts)
	}

	// Stopped, torgate leaves the LAN closed: no fetch, no SOCKS request.
	c.must("systemctl", "stop", "torgate.service")
	before := len(srv.Requests())
	if out, err := fetch(5 * time.Second); err == nil {
		t.Errorf("fetch with torgate stopped succeeded: %s", out)
	}
	if n := len(srv.Requests()); n != before {
		t.Errorf("%d SOCKS requests with torgate stopped", n-before)
	}
	if out, err := exec.Command("ip", "netns", "exec", ws, "ping", "-c", "1", "-W", "2", "10.152.152.10").CombinedOutput(); err == nil {
		t.Errorf("the gateway answers ping with torgate stopped:\n%s", out)
	}

	// The package's default configuration, as shipped (lan = ["eth1"]):
	// the managed Tor, started as debian-tor from inside the unit's
	// sandbox, the SOCKS ports and the filtered control port. Tor cannot
	// bootstrap here (no uplink); that it runs, and torgate stays up, is
	// what the unit decides.
	c.must("cp", "/root/torgate.toml.shipped", "/etc/torgate/torgate.toml")
	c.must("systemctl", "start", "torgate.service")
	deadline = time.Now().Add(30 * time.Second)
	for {
		out, err := c.exec("pgrep", "-u", "debian-tor", "-f", "/var/lib/torgate/tor-run/torrc")
		if err == nil && strings.TrimSpace(out) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no managed tor running as debian-tor 30 s after start (torgate %s)", c.show("torgate.service", "ActiveState"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	n := c.show("torgate.service", "NRestarts")
	time.Sleep(3 * time.Second)
	if s, n2 := c.show("torgate.service", "ActiveState"), c.show("torgate.service", "NRestarts"); s != "active" || n2 != n {
		t.Errorf("torgate with its managed Tor: %s, NRestarts %s then %s", s, n, n2)
	}

	// Purge: torgate stopped, its state and conffile gone, the LAN still
	// closed by the guard's rules (until reboot or "torgate lan down").
	c.must("dpkg", "--purge", "torgate")
	if s := c.show("torgate.service", "ActiveState"); s != "inactive" {
		t.Errorf("torgate after purge: %s", s)
	}
	for _, p := range []string{"/var/lib/torgate", "/etc/torgate/torgate.toml", "/usr/sbin/torgate"} {
		if _, err := c.exec("test", "-e", p); err == nil {
			t.Errorf("%s left after purge", p)
		}
	}
	if rules := c.must("ip", "rule"); !regexp.MustCompile(`iif eth1 .*blackhole`).MatchString(rules) {
		t.Errorf("purge removed the guard:\n%s", rules)
	}
	if out, err := fetch(5 * time.Second); err == nil {
		t.Errorf("fetch after purge succeeded: %s", out)
	}

	c.exec("systemctl", "poweroff")
	c.wait(60 * time.Second)
	t.Logf("TestSystemd took %v", time.Since(start).Round(100*time.Millisecond))
}
