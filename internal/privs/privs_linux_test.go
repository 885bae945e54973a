package privs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/torgate/torgate/internal/nstest/gate"
)

func TestParseStatus(t *testing.T) {
	st := "Name:\ttorgate\nCapInh:\t0000000000000000\nCapPrm:\t0000000000001000\nCapEff:\t0000000000001000\nCapBnd:\t00000000000010e0\nCapAmb:\t0000000000000000\n"
	got, err := parseStatus(st)
	if err != nil {
		t.Fatal(err)
	}
	want := Sets{Effective: SetOf(CapNetAdmin), Permitted: SetOf(CapNetAdmin), Bounding: SetOf(CapNetAdmin, CapKill, CapSetGID, CapSetUID)}
	if got != want {
		t.Fatalf("parseStatus = %+v, want %+v", got, want)
	}
	if s := want.Bounding.String(); s != "CAP_KILL,CAP_SETGID,CAP_SETUID,CAP_NET_ADMIN" {
		t.Errorf("String = %q", s)
	}
	if _, err := parseStatus("Name:\tx\nCapEff:\tzz\n"); err == nil {
		t.Error("bad hex accepted")
	}
	if _, err := parseStatus("Name:\tx\n"); err == nil {
		t.Error("status without capability lines accepted")
	}
}

// childEnv makes the test binary the process that drops its capabilities:
// Keep cannot be undone, so it runs in a child.
const childEnv = "PRIVS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// child parks goroutines on locked threads (so the process has threads
// Keep did not run on), drops to CAP_NET_ADMIN, then prints the Cap
// lines of every thread.
func child() int {
	stop := make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread()
			<-stop
		}()
	}
	if err := Keep(SetOf(CapNetAdmin)); err != nil {
		fmt.Println("keep:", err)
		return 1
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	fmt.Println("threads", len(tasks))
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		s, err := parseStatus(string(b))
		if err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Printf("%s eff=%x prm=%x inh=%x bnd=%x amb=%x\n", filepath.Base(filepath.Dir(p)), uint64(s.Effective), uint64(s.Permitted), uint64(s.Inheritable), uint64(s.Bounding), uint64(s.Ambient))
	}
	close(stop)
	return 0
}

// TestKeepAllThreads: as root, Keep leaves every thread with only
// CAP_NET_ADMIN effective, permitted and bounding, none inheritable or
// ambient.
func TestKeepAllThreads(t *testing.T) {
	gate.Integration(t) // not nstest: it links cgo, which Keep refuses
	if os.Geteuid() != 0 {
		if gate.CI() {
			t.Fatal("CI=true: needs root")
		}
		t.Skip("needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := fmt.Sprintf("eff=%x prm=%x inh=0 bnd=%x amb=0", uint64(SetOf(CapNetAdmin)), uint64(SetOf(CapNetAdmin)), uint64(SetOf(CapNetAdmin)))
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 6 {
		t.Fatalf("want 5+ threads:\n%s", out)
	}
	for _, l := range lines[1:] {
		if !strings.HasSuffix(l, want) {
			t.Errorf("thread %s, want %s", l, want)
		}
	}
	t.Logf("%s", out)
}
