package torctl

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestStatExiting(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want bool
	}{
		{"1234 (tor) S 1 1234 1234 0 -1 4194560 1 0 0 0", false},
		{"1234 (tor) S 1 1234 1234 0 -1 4194564 1 0 0 0", true}, // PF_EXITING
		{"1234 (tor) Z 1 1234 1234 0 -1 4194560 1 0 0 0", true},
		{"1234 (tor) X 1 1234 1234 0 -1 0", true},
		{"1234 (a) b) S 1 2 3 4) R 1 1234 1234 0 -1 4194560", false}, // name with ") "
		{"1234 (t) R 1 2 3 4 -1 4", true},
		{"1234 (t) R 1 2 3", false},          // short
		{"1234 (t) R 1 2 3 4 -1 0x4", false}, // not decimal
		{"garbage", false},
		{"", false},
	} {
		if got, _ := statExiting([]byte(tc.stat)); got != tc.want {
			t.Errorf("statExiting(%q) = %v, want %v", tc.stat, got, tc.want)
		}
	}
}

// TestProcExiting follows a real child through its end: running, killed
// but not reaped (a zombie), and reaped (gone).
func TestProcExiting(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	check := func(what string, wantExiting bool) {
		t.Helper()
		if exiting, known := procState(pid); exiting != wantExiting || !known {
			t.Errorf("%s: procState = %v, %v; want %v, true", what, exiting, known, wantExiting)
		}
	}
	check("running", false)
	if exiting, known := procState(os.Getpid()); exiting || !known {
		t.Errorf("this process: procState = %v, %v", exiting, known)
	}
	if n := testing.AllocsPerRun(100, func() { procState(pid) }); n != 0 && !raceEnabled {
		t.Errorf("procState allocates %v times", n)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Wait for the zombie without reaping it.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waitid: %v", err)
	}
	check("killed, not reaped", true)
	cmd.Wait()
	check("reaped", true)
}

// TestProcStateHidden: a process /proc does not show but that exists
// (hidepid hides another user's processes) is not known to be gone; the
// router then waits for readiness instead of resetting every stream. A
// PID past pid_max stands for the hidden one's /proc entry, and this
// process for its kill(pid, 0) answer.
func TestProcStateHidden(t *testing.T) {
	if gone, known := absent(os.Getpid()); gone || known {
		t.Errorf("an existing process without /proc entry: gone %v, known %v; want neither", gone, known)
	}
	if gone, known := absent(1 << 30); !gone || !known {
		t.Errorf("no such process: gone %v, known %v; want both", gone, known)
	}
}

// BenchmarkProcExiting is the cost the process check adds to each stream a
// managed Tor ends.
func BenchmarkProcExiting(b *testing.B) {
	pid := os.Getpid()
	b.ReportAllocs()
	for b.Loop() {
		procState(pid)
	}
}
