package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
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

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/privs"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/testnet"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// buildTorgate compiles the command once per test binary, without cgo
// as a release is built (capabilities can only be dropped on every thread
// without cgo: internal/privs).
func buildTorgate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(reachableTempDir(t), "torgate")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// upstream starts a web server on loopback and a SOCKS server that sends
// every CONNECT to it.
func upstream(t *testing.T) *sockstest.Server {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "exec-ok")
	}))
	t.Cleanup(web.Close)
	return sockstest.NewServer(t, sockstest.Config{
		Connect: sockstest.DialTo(func(socks.Addr) string { return web.Listener.Addr().String() }),
	})
}

// netnsNames lists the named network namespaces.
func netnsNames() map[string]bool {
	out, _ := exec.Command("ip", "netns", "list").Output()
	names := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names[f[0]] = true
		}
	}
	return names
}

// fixtureNS matches the names the project's tests give their namespaces
// (a prefix and six or more hex digits: nstest's have eight; or a LAN
// namespace tg-IFACE-INODE): go
// test runs packages in parallel, and theirs come and go meanwhile (a
// plain count failed CI once, 2026-12-04).
var fixtureNS = regexp.MustCompile(`^(tg[a-z0-9]*-[0-9a-f]{6,}|tg-.+-[0-9]+)$`)

// leftNamespaces returns the named namespaces that exist now, not in
// before, and are no test fixture's: what torgate exec left behind.
func leftNamespaces(before map[string]bool) []string {
	var left []string
	for n := range netnsNames() {
		if !before[n] && !fixtureNS.MatchString(n) {
			left = append(left, n)
		}
	}
	return left
}

func TestExecCurl(t *testing.T) {
	nstest.RequireRoot(t, "curl")
	bin := buildTorgate(t)
	srv := upstream(t)
	before := netnsNames()

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "exec", "--socks", srv.Addr(), "--",
		"curl", "-sS", "--max-time", "10", "http://192.0.2.10/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "exec-ok") {
		t.Fatalf("torgate exec curl: %v\n%s", err, out)
	}
	// By name: resolv.conf inside points at torgate, which automaps the
	// name; the SOCKS request carries the name.
	out, err = exec.CommandContext(ctx, bin, "exec", "--socks", srv.Addr(), "--",
		"curl", "-sS", "--max-time", "10", "http://web.example.test/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "exec-ok") {
		t.Fatalf("torgate exec curl by name: %v\n%s", err, out)
	}
	reqs := srv.Requests()
	if last := reqs[len(reqs)-1]; last.Dst.Name != "web.example.test" {
		t.Fatalf("CONNECT carried %v, want the name", last.Dst)
	}
	// Exit status passes through.
	err = exec.CommandContext(ctx, bin, "exec", "--socks", srv.Addr(), "--", "sh", "-c", "exit 7").Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("exit status: %v, want 7", err)
	}
	if left := leftNamespaces(before); len(left) > 0 {
		t.Fatalf("torgate exec left named namespaces: %v", left)
	}
	if out, _ := exec.Command("ip", "link", "show", "tg0").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Fatalf("tg0 visible on the host: %s", out)
	}
}

// TestExecKilledRouterFailsClosed kills torgate under a running command:
// the command dies with it (it must not run on cut off and unaware), and
// it never reached the network after torgate died.
func TestExecKilledRouterFailsClosed(t *testing.T) {
	nstest.RequireRoot(t, "curl")
	bin := buildTorgate(t)
	srv := upstream(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	script := fmt.Sprintf(`echo $$ > %[2]s/pid
for i in $(seq 1 100); do
  if curl -s --max-time 1 http://192.0.2.10/ >/dev/null; then echo ok >> %[1]s; else echo fail >> %[1]s; fi
  [ -e %[2]s/stop ] && exit 0
  sleep 0.1
done`, log, dir)
	cmd := exec.Command(bin, "exec", "--socks", srv.Addr(), "--", "sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.WriteFile(filepath.Join(dir, "stop"), nil, 0o644)
		cmd.Process.Kill()
		cmd.Wait()
	}()
	waitLog := func(word string) {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			b, _ := os.ReadFile(log)
			if strings.Contains(string(b), word) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		b, _ := os.ReadFile(log)
		t.Fatalf("no %q in log: %q", word, b)
	}
	waitLog("ok")
	pid := shellPID(t, filepath.Join(dir, "pid"))
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed := time.Now()
	os.WriteFile(log, nil, 0o644)
	// The command dies with torgate (parent-death signal), well within
	// a second; the bound is generous for a loaded box.
	for syscall.Kill(pid, 0) == nil {
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("command (pid %d) still runs 10s after torgate died", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("command ended %v after torgate was killed", time.Since(killed).Round(time.Millisecond))
	b, _ := os.ReadFile(log)
	if strings.Contains(string(b), "ok") {
		t.Fatalf("command reached the network after torgate died: %q", b)
	}
}

// shellPID reads the PID a test script wrote to path.
func shellPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestCheckPassesAndFails(t *testing.T) {
	nstest.RequireRoot(t)
	bin := buildTorgate(t)
	srv := upstream(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "exec", "--socks", srv.Addr(), "--log-level", "error", "--",
		bin, "check", "--url", "http://web.example.test/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "all 9 checks passed") {
		t.Fatalf("check on a healthy setup: %v\n%s", err, out)
	}
	// Upstream gone (as when Tor is down): flows are refused, check says so.
	dead := sockstest.NewServer(t, sockstest.Config{Connect: sockstest.Refuse(socks.ReplyGeneralFailure)})
	out, err = exec.CommandContext(ctx, bin, "exec", "--socks", dead.Addr(), "--log-level", "error", "--",
		bin, "check", "--url", "http://web.example.test/", "--timeout", "10s").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("check with a refusing upstream: %v, want exit 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "FAIL fetch") || !strings.Contains(string(out), "connection refused") {
		t.Fatalf("check did not name the cause:\n%s", out)
	}
}

// TestMetricsDuringTransfer scrapes the admin endpoint while a command
// inside "torgate exec" downloads: packets, bytes, flows and DNS counters
// move, the exposition lints clean, and no label holds an address.
func TestMetricsDuringTransfer(t *testing.T) {
	nstest.RequireRoot(t, "curl")
	bin := buildTorgate(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 32<<10)
		for range 64 { // 2 MiB over about 3 s
			w.Write(chunk)
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
		}
	}))
	defer web.Close()
	srv := sockstest.NewServer(t, sockstest.Config{
		Connect: sockstest.DialTo(func(socks.Addr) string { return web.Listener.Addr().String() }),
	})
	adminSock := filepath.Join(t.TempDir(), "admin.sock")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "exec", "--socks", srv.Addr(), "--admin", adminSock, "--log-level", "error", "--",
		"curl", "-sS", "-o", "/dev/null", "http://download.example.test/")
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", adminSock)
	}}}
	want := []string{"torgate_device_packets_in_total", "torgate_device_bytes_out_total", "torgate_flows_total", "torgate_dns_queries_total"}
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := client.Get("http://torgate/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if allNonZero(body, want) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters %v not all non-zero during the transfer:\n%s\ncommand output: %s", want, grepMetrics(body, want), out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if path, err := exec.LookPath("promtool"); err == nil {
		pc := exec.Command(path, "check", "metrics")
		pc.Stdin = strings.NewReader(body)
		if out, err := pc.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "#") || !strings.Contains(line, "{") {
			continue
		}
		labels := line[strings.Index(line, "{"):strings.LastIndex(line, "}")]
		for _, bad := range []string{"download.example", "10.152.152.11", "127.0.0.1", "10.192."} {
			if strings.Contains(labels, bad) {
				t.Errorf("label holds an address or name: %s", line)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exec: %v\n%s", err, out)
	}
}

func allNonZero(body string, names []string) bool {
	for _, n := range names {
		found := false
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, n) && !strings.HasSuffix(line, " 0") {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func grepMetrics(body string, names []string) string {
	var b strings.Builder
	for _, line := range strings.Split(body, "\n") {
		for _, n := range names {
			if strings.HasPrefix(line, n) {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}

// TestCheckNamesTorDown: torgate run attached to a Tor that cannot
// bootstrap (its network disabled); check from the workstation fails and
// says Tor is not ready, and flows and DNS are refused.
func TestCheckNamesTorDown(t *testing.T) {
	nstest.RequireRoot(t, "tor")
	bin := buildTorgate(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	torrc := filepath.Join(dir, "torrc")
	os.WriteFile(torrc, []byte(fmt.Sprintf(`DataDirectory %[1]s/tor
SocksPort unix:%[1]s/socks.sock
ControlSocket %[1]s/control.sock
CookieAuthentication 1
DisableNetwork 1
__OwningControllerProcess %[2]d
`, dir, os.Getpid())), 0o600)
	tor := exec.Command("tor", "-f", torrc, "--quiet")
	if err := tor.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { tor.Process.Kill(); tor.Wait() }()
	if !waitFile(filepath.Join(dir, "control.sock")) {
		t.Fatal("tor's control socket did not appear")
	}

	ws := nstest.New(t, nstest.Options{Nameserver: "10.152.152.10"})
	adminSock := filepath.Join(dir, "admin.sock")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, bin, "run", "--tun-fd", "3", "--tor-control", "unix:"+filepath.Join(dir, "control.sock"), "--socks", "unix:"+filepath.Join(dir, "socks.sock"),
		"--admin", adminSock, "--log-level", "error")
	run.ExtraFiles = []*os.File{ws.Dev.File()}
	runOut := &strings.Builder{}
	run.Stdout, run.Stderr = runOut, runOut
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { run.Process.Signal(syscall.SIGTERM); run.Wait() }()
	if !waitFile(adminSock) {
		t.Fatalf("admin socket did not appear; torgate run said:\n%s", runOut)
	}

	out, err := ws.Run(ctx, bin, "check", "--admin", adminSock, "--url", "http://198.51.100.80/", "--timeout", "5s")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("check with Tor down: %v, want exit 1\n%s", err, out)
	}
	for _, want := range []string{"PASS route", "FAIL tor", "not ready", "FAIL dns ", "SERVFAIL", "PASS dns-intercept", "FAIL fetch", "connection refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func waitFile(path string) bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// guardLines returns the entry guards in a Tor state file, as "rsa_id
// nickname sampled_on": the same lines after a second run mean its Tor
// kept the guards it sampled in the first.
func guardLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.Lines(string(b)) {
		if !strings.HasPrefix(l, "Guard ") {
			continue
		}
		var keep []string
		for _, f := range strings.Fields(l) {
			if strings.HasPrefix(f, "rsa_id=") || strings.HasPrefix(f, "nickname=") || strings.HasPrefix(f, "sampled_on=") {
				keep = append(keep, f)
			}
		}
		out = append(out, strings.Join(keep, " "))
	}
	return out
}

// TestExecKeepsTorState runs "torgate exec" with a managed Tor on the
// private test network: its Tor runs as debian-tor and the exec keeps
// only CAP_KILL, CAP_SETUID and CAP_SETGID once its command runs; a
// second exec at the same time runs its own Tor in a private copy of the
// state, with a notice; a later exec reuses the persistent state: the
// consensus cache and the same entry guards.
func TestExecKeepsTorState(t *testing.T) {
	nstest.RequireRoot(t, "tor")
	u, err := user.Lookup(defaultTorUser)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no %s user: %v", defaultTorUser, err)
		}
		t.Skipf("no %s user", defaultTorUser)
	}
	bin := buildTorgate(t)
	sctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	n, err := testnet.Start(sctx, testnet.Config{Dir: reachableTempDir(t), Logger: slog.New(slog.DiscardHandler)})
	cancel()
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	state := reachableTempDir(t)
	torrc := filepath.Join(state, "net.torrc")
	if err := os.WriteFile(torrc, []byte(strings.Join(n.ClientTorrc(), "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	execArgs := func(cmd ...string) []string {
		return append([]string{"exec", "--state-dir", state, "--torrc", torrc, "--wait", "90s", "--"}, cmd...)
	}

	// A: holds the persistent state until told to stop.
	var logA testlog.Buffer
	a := exec.Command(bin, execArgs("sh", "-c", "touch "+work+"/a; while [ ! -e "+work+"/stop ]; do sleep 0.1; done")...)
	a.Stdout, a.Stderr = &logA, &logA
	beganA := time.Now()
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(work, "stop"), nil, 0o644)
		a.Process.Kill()
		a.Wait()
	})
	for {
		if _, err := os.Stat(filepath.Join(work, "a")); err == nil {
			break
		}
		if time.Since(beganA) > 100*time.Second {
			t.Fatalf("first exec's command did not start:\n%s", logA.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	firstReady := time.Since(beganA)
	time.Sleep(200 * time.Millisecond) // the drop follows the command's start
	caps := readSets(t, a.Process.Pid)
	if want := privs.SetOf(privs.CapKill, privs.CapSetUID, privs.CapSetGID); caps.Effective != want || caps.Bounding != want {
		t.Errorf("exec's capabilities while its command runs: %+v, want %v\n%s", caps, want, logA.String())
	}
	pid := torPID(t, logA.String())
	if uid := strings.Fields(procStatus(t, pid)["Uid"]); uid[0] != u.Uid {
		t.Errorf("exec's tor runs as uid %v, want %s", uid, u.Uid)
	}
	t.Logf("first exec: command started %v after launch; CapEff %016x; tor uid %s", firstReady.Round(time.Millisecond), uint64(caps.Effective), u.Uid)

	// B, at the same time: a private copy, and a notice.
	began := time.Now()
	out, err := exec.Command(bin, execArgs("true")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "private copy") {
		t.Fatalf("concurrent exec: %v, want success with a notice:\n%s", err, out)
	}
	t.Logf("concurrent exec (private copy): done in %v", time.Since(began).Round(time.Millisecond))

	os.WriteFile(filepath.Join(work, "stop"), nil, 0o644)
	if err := a.Wait(); err != nil {
		t.Fatalf("first exec: %v\n%s", err, logA.String())
	}
	persistent := filepath.Join(state, "exec-tor")
	if _, err := os.Stat(filepath.Join(persistent, "cached-microdesc-consensus")); err != nil {
		t.Fatalf("no consensus cache kept: %v", err)
	}
	guards := guardLines(t, filepath.Join(persistent, "state"))
	if len(guards) == 0 {
		t.Fatal("no guards in the persistent state")
	}

	// C, after A: the persistent state again.
	began = time.Now()
	out, err = exec.Command(bin, execArgs("true")...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "private copy") {
		t.Fatalf("second exec: %v, want success on the persistent state:\n%s", err, out)
	}
	second := time.Since(began)
	t.Logf("sequential exec on the kept state: done in %v (first: command started after %v)", second.Round(time.Millisecond), firstReady.Round(time.Millisecond))
	after := guardLines(t, filepath.Join(persistent, "state"))
	if strings.Join(after, "\n") != strings.Join(guards, "\n") {
		t.Errorf("guards changed between runs:\nbefore %q\nafter  %q", guards, after)
	}
	t.Logf("guards kept: %d (%s...)", len(after), after[0])
}
