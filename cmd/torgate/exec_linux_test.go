package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/torgate/torgate/internal/nstest"
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

func netnsCount(t *testing.T) int {
	out, _ := exec.Command("ip", "netns", "list").Output()
	return strings.Count(string(out), "\n")
}

func TestExecCurl(t *testing.T) {
	nstest.RequireRoot(t, "curl")
	bin := buildTorgate(t)
	srv := upstream(t)
	before := netnsCount(t)

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
	if after := netnsCount(t); after != before {
		t.Fatalf("namespaces before %d, after %d", before, after)
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
	if err != nil || !strings.Contains(string(out), "all 6 checks passed") {
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
	want := []string{"torgate_tun_packets_in_total", "torgate_tun_bytes_out_total", "torgate_flows_total", "torgate_dns_queries_total"}
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
