package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/privs"
	"github.com/torgate/torgate/internal/testlog"
)

// startRun starts "torgate run" in a network namespace of its own
// (unshare -n execs it, so the PID is torgate's) and waits for want in
// its log. The process is killed at cleanup.
func startRun(t *testing.T, bin string, want string, args ...string) (*exec.Cmd, *testlog.Buffer) {
	t.Helper()
	var logs testlog.Buffer
	cmd := exec.Command("unshare", append([]string{"-n", bin, "run", "--tun", "tgpriv0", "--addr", "", "--admin", ""}, args...)...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in torgate's log:\n%s", want, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cmd, &logs
}

func readSets(t *testing.T, pid int) privs.Sets {
	t.Helper()
	s, err := privs.Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRunDropsPrivileges: "torgate run" as root keeps only CAP_NET_ADMIN
// (effective, permitted and bounding) once set up; --keep-privileges
// keeps them all.
func TestRunDropsPrivileges(t *testing.T) {
	nstest.RequireRoot(t, "unshare")
	bin := buildTorgate(t)
	srv := upstream(t)
	before := readSets(t, 0)

	cmd, logs := startRun(t, bin, "privileges dropped", "--socks", srv.Addr(), "--state-dir", t.TempDir())
	got := readSets(t, cmd.Process.Pid)
	t.Logf("CapEff before %016x after %016x, CapBnd %016x: %s", uint64(before.Effective), uint64(got.Effective), uint64(got.Bounding), got.Effective)
	want := privs.SetOf(privs.CapNetAdmin)
	if got.Effective != want || got.Permitted != want || got.Bounding != want || got.Inheritable != 0 || got.Ambient != 0 {
		t.Fatalf("torgate run capabilities %+v, want only CAP_NET_ADMIN\n%s", got, logs.String())
	}

	cmd, _ = startRun(t, bin, "--keep-privileges", "--socks", srv.Addr(), "--state-dir", t.TempDir(), "--keep-privileges", "--tun", "tgpriv1")
	if got := readSets(t, cmd.Process.Pid); got.Effective != before.Effective {
		t.Fatalf("with --keep-privileges CapEff %016x, want %016x", uint64(got.Effective), uint64(before.Effective))
	}
}

// TestRunManagedTorAfterDrop: with a managed Tor running as debian-tor,
// torgate keeps CAP_SETUID, CAP_SETGID and CAP_KILL besides
// CAP_NET_ADMIN (what torctl's Tor.Privileges names; its unit test is
// torctl's TestPrivileges), and that is enough to restart a killed tor
// as debian-tor. tor is offline
// (DisableNetwork): only its process and control socket matter here.
func TestRunManagedTorAfterDrop(t *testing.T) {
	nstest.RequireRoot(t, "unshare", "tor")
	u, err := user.Lookup(defaultTorUser)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no %s user: %v", defaultTorUser, err)
		}
		t.Skipf("no %s user", defaultTorUser)
	}
	bin := buildTorgate(t)
	state := reachableTempDir(t)
	torrc := filepath.Join(state, "offline.torrc")
	empty := filepath.Join(state, "empty")
	os.WriteFile(empty, nil, 0o644)
	if err := os.WriteFile(torrc, []byte(fmt.Sprintf("DisableNetwork 1\nGeoIPFile %s\nGeoIPv6File %s\n", empty, empty)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, logs := startRun(t, bin, "privileges dropped", "--state-dir", state, "--torrc", torrc)
	got := readSets(t, cmd.Process.Pid)
	want := privs.SetOf(privs.CapNetAdmin, privs.CapSetUID, privs.CapSetGID, privs.CapKill)
	if got.Effective != want || got.Bounding != want {
		t.Fatalf("capabilities %+v, want %v", got, want)
	}
	t.Logf("torgate CapEff %016x (%v)", uint64(got.Effective), got.Effective)
	pid := torPID(t, logs.String())
	if uid := strings.Fields(procStatus(t, pid)["Uid"]); uid[0] != u.Uid {
		t.Fatalf("tor runs as %v", uid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(logs.String(), `msg="tor started"`) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("tor not restarted after the drop:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	last := logs.String()[strings.LastIndex(logs.String(), `msg="tor started"`):]
	pid2, _ := strconv.Atoi(strings.Fields(strings.SplitN(last, "pid=", 2)[1])[0])
	if uid := strings.Fields(procStatus(t, pid2)["Uid"]); uid[0] != u.Uid {
		t.Fatalf("restarted tor %d runs as %v", pid2, uid)
	}
	// The restarted tor stays up under the reduced torgate.
	time.Sleep(2 * time.Second)
	if n := strings.Count(logs.String(), `msg="tor started"`); n != 2 || syscall.Kill(pid2, 0) != nil {
		t.Fatalf("restarted tor did not stay up (%d starts):\n%s", n, logs.String())
	}
	t.Logf("tor restarted as pid %d uid %s after the drop", pid2, u.Uid)
}

// TestCgoBuildRefused (issue 22: "the README's build keeps every
// privilege"): a torgate built with cgo cannot drop its capabilities on
// every thread, so as root it refuses to start, before it touches
// anything, unless --keep-privileges says to keep them; the CGO_ENABLED=0
// build drops them (TestRunDropsPrivileges).
func TestCgoBuildRefused(t *testing.T) {
	nstest.RequireRoot(t, "unshare", "gcc")
	bin := filepath.Join(reachableTempDir(t), "torgate-cgo")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build with cgo: %v\n%s", err, out)
	}
	srv := upstream(t)
	state := filepath.Join(t.TempDir(), "state")
	out, err := exec.Command("unshare", "-n", bin, "run", "--tun", "tgcgo0", "--addr", "", "--admin", "",
		"--socks", srv.Addr(), "--state-dir", state).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "links cgo") || !strings.Contains(string(out), "CGO_ENABLED=0") {
		t.Fatalf("a cgo build as root: %v\n%s\nwant a refusal that names CGO_ENABLED=0", err, out)
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("the refused start created its state directory")
	}
	cmd, logs := startRun(t, bin, "tor mode", "--keep-privileges", "--socks", srv.Addr(), "--state-dir", t.TempDir())
	if got := readSets(t, cmd.Process.Pid); got.Effective == privs.SetOf(privs.CapNetAdmin) {
		t.Errorf("a cgo build with --keep-privileges dropped its capabilities?\n%s", logs.String())
	}
}
