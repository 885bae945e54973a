package torctl

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startChild starts a process that is not the fake tor's (this test
// process): the pid a lying or relayed control port would report.
func startChild(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// startAttachedOn starts an attach-mode Tor on the fake's real socket.
func startAttachedOn(t *testing.T, addr string) *Tor {
	t.Helper()
	tor, err := New(Config{ControlAddr: addr, ReconnectInterval: 20 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := tor.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tor.Close() })
	// Start returns before the session is served (Connected).
	waitFor(t, "connected", func() bool { return tor.Status().Connected })
	return tor
}

func wantState(t *testing.T, tor *Tor, what string, wantGone, wantKnown bool) {
	t.Helper()
	if gone, known := tor.ProcessState(); gone != wantGone || known != wantKnown {
		t.Errorf("%s: ProcessState = gone %v, known %v; want %v, %v", what, gone, known, wantGone, wantKnown)
	}
}

// TestAttachProcessEvidence: an attached Tor's process counts as evidence
// only when the kernel names it as the control connection's peer, over a
// unix socket (SO_PEERCRED) and over TCP (the peer socket among the
// process's files). The fake tor runs in this process, so this process's
// pid is the true one and a child's a false one. A lost verified
// connection is "gone" until a new one is verified.
func TestAttachProcessEvidence(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			t.Run("Verified", func(t *testing.T) {
				f := newFakeTor(t, "NULL")
				f.set("process/pid", strconv.Itoa(os.Getpid()))
				tor := startAttachedOn(t, f.listen(network))
				wantState(t, tor, "verified", false, true)
				if n := testing.AllocsPerRun(100, func() { tor.ProcessState() }); n != 0 && !raceEnabled {
					t.Errorf("ProcessState allocates %v times", n)
				}

				// The control connection drops (tor died, or restarts):
				// gone, and known, until a new connection is verified.
				f.setDown(true)
				f.dropAll()
				waitFor(t, "connection lost", func() bool { return !tor.Status().Connected })
				wantState(t, tor, "connection lost", true, true)
				time.Sleep(100 * time.Millisecond) // reconnects refused meanwhile
				wantState(t, tor, "still lost", true, true)

				// Back, but now claiming another process: no evidence.
				f.set("process/pid", strconv.Itoa(startChild(t)))
				f.setDown(false)
				waitFor(t, "reconnected", func() bool { return tor.Status().Connected })
				wantState(t, tor, "reconnected to a pid that is not the peer", false, false)

				// And verified again.
				f.set("process/pid", strconv.Itoa(os.Getpid()))
				f.dropAll()
				waitFor(t, "reverified", func() bool {
					_, known := tor.ProcessState()
					return tor.Status().Connected && known
				})
				wantState(t, tor, "reverified", false, true)
			})
			t.Run("OtherPid", func(t *testing.T) {
				f := newFakeTor(t, "NULL")
				f.set("process/pid", strconv.Itoa(startChild(t)))
				tor := startAttachedOn(t, f.listen(network))
				wantState(t, tor, "pid not the peer", false, false)
				f.setDown(true)
				f.dropAll()
				waitFor(t, "connection lost", func() bool { return !tor.Status().Connected })
				wantState(t, tor, "unverified connection lost", false, false)
			})
			t.Run("NoPid", func(t *testing.T) {
				f := newFakeTor(t, "NULL") // GETINFO process/pid: 552
				tor := startAttachedOn(t, f.listen(network))
				wantState(t, tor, "no process/pid", false, false)
			})
		})
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for began := time.Now(); !cond(); time.Sleep(time.Millisecond) {
		if time.Since(began) > 10*time.Second {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

// TestVerifyPeer checks verifyPeer's answers on real connections whose
// other end is this process.
func TestVerifyPeer(t *testing.T) {
	self, child := os.Getpid(), startChild(t)
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = t.TempDir() + "/s"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					t.Cleanup(func() { c.Close() })
				}
			}()
			nc, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ev, err := verifyPeer(nc, self)
			if err != nil {
				t.Fatalf("the true peer: %v", err)
			}
			if start, _ := procStart(self); ev.pid != self || ev.start != start || start == 0 {
				t.Errorf("evidence %+v, want pid %d start %d", ev, self, start)
			}
			for _, pid := range []int{child, 0, -1, 1 << 30} {
				var ee *EvidenceError
				if _, err := verifyPeer(nc, pid); !errors.As(err, &ee) {
					t.Errorf("pid %d, not the peer: err %v, want an *EvidenceError", pid, err)
				}
			}
		})
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := verifyPeer(a, self); err == nil {
		t.Error("a net.Pipe verified")
	}
}

// TestVerifyTCPPeerNotLoopback: a control port off loopback is never
// evidence, even if an inode matched (it would name another host's
// socket).
func TestVerifyTCPPeerNotLoopback(t *testing.T) {
	for _, remote := range []string{"192.0.2.1:9051", "[2001:db8::1]:9051", "10.0.0.1:9051"} {
		var ee *EvidenceError
		err := verifyTCPPeer(1, netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort(remote), os.Getpid())
		if !errors.As(err, &ee) || ee.Reason != "control port is not on loopback" {
			t.Errorf("remote %s: %v, want not on loopback", remote, err)
		}
	}
}

// TestProcNetAddr: the format of /proc/net/tcp{,6} addresses, in both
// byte orders the kernel may print them in.
func TestProcNetAddr(t *testing.T) {
	for _, tc := range []struct {
		ap          string
		six         bool
		little, big string
	}{
		{ap: "127.0.0.1:9051", little: "0100007F:235B", big: "7F000001:235B"},
		{ap: "127.0.0.1:9051", six: true, little: "0000000000000000FFFF00000100007F:235B", big: "00000000000000000000FFFF7F000001:235B"},
		{ap: "[::1]:80", six: true, little: "00000000000000000000000001000000:0050", big: "00000000000000000000000000000001:0050"},
	} {
		ap := netip.MustParseAddrPort(tc.ap)
		if got := procNetAddr(ap, tc.six, binary.LittleEndian); got != tc.little {
			t.Errorf("procNetAddr(%s, six %v, little) = %s, want %s", tc.ap, tc.six, got, tc.little)
		}
		if got := procNetAddr(ap, tc.six, binary.BigEndian); got != tc.big {
			t.Errorf("procNetAddr(%s, six %v, big) = %s, want %s", tc.ap, tc.six, got, tc.big)
		}
	}
}

// TestProcStateSince: the verified process, as it runs, after its pid
// would be reused (another start time), and once it is gone.
func TestProcStateSince(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	start, err := procStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, start uint64, wantGone bool) {
		t.Helper()
		if gone, known := procStateSince(pid, start); gone != wantGone || !known {
			t.Errorf("%s: procStateSince = gone %v, known %v; want %v, true", what, gone, known, wantGone)
		}
	}
	check("running", start, false)
	check("pid reused (another start time)", start+1, true)
	if n := testing.AllocsPerRun(100, func() { procStateSince(pid, start) }); n != 0 && !raceEnabled {
		t.Errorf("procStateSince allocates %v times", n)
	}

	// Through ProcessState, as the router asks.
	tor := &Tor{}
	tor.attached.Store(&procEvidence{pid: pid, start: start})
	wantState(t, tor, "attached, running", false, true)
	tor.attached.Store(&procEvidence{pid: pid, start: start + 1})
	wantState(t, tor, "attached, pid reused", true, true)
	tor.attached.Store(&procEvidence{pid: pid, start: start})

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waitid: %v", err)
	}
	check("killed, not reaped", start, true)
	wantState(t, tor, "attached, killed", true, true)
	cmd.Wait()
	check("reaped", start, true)
}
