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
		if got := statExiting([]byte(tc.stat)); got != tc.want {
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
	if procExiting(pid) {
		t.Fatal("a running process reads as exiting")
	}
	if procExiting(os.Getpid()) {
		t.Fatal("this process reads as exiting")
	}
	if n := testing.AllocsPerRun(100, func() { procExiting(pid) }); n != 0 && !raceEnabled {
		t.Errorf("procExiting allocates %v times", n)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Wait for the zombie without reaping it.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waitid: %v", err)
	}
	if !procExiting(pid) {
		t.Error("a killed, unreaped process does not read as exiting")
	}
	cmd.Wait()
	if !procExiting(pid) {
		t.Error("a reaped process does not read as gone")
	}
}

// BenchmarkProcExiting is the cost the process check adds to each stream a
// managed Tor ends.
func BenchmarkProcExiting(b *testing.B) {
	pid := os.Getpid()
	b.ReportAllocs()
	for b.Loop() {
		procExiting(pid)
	}
}
