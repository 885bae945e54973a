package torctl

import (
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestProbeDeadline: a Tor that stops answering (SIGSTOP) is not ready
// once a poll has gone unanswered for ProbeDeadline, OnDown ends the
// flows, and it is ready again as soon as the late answer arrives, on
// the same connection.
func TestProbeDeadline(t *testing.T) {
	synctest.Test(t, testProbeDeadline)
}

func testProbeDeadline(t *testing.T) {
	f := newFakeTor(t, "NULL")
	f.setReady()
	var downs atomic.Int32
	tor := startAttached(t, f, Config{
		PollInterval:   20 * time.Millisecond,
		ProbeDeadline:  200 * time.Millisecond,
		CommandTimeout: time.Minute,
		OnDown:         func() { downs.Add(1) },
	})
	eventually(t, "ready", tor.Ready)
	f.stop()
	began := time.Now()
	eventually(t, "not ready while stopped", func() bool { return !tor.Ready() })
	notReady := time.Since(began)
	if st := tor.Status(); !st.Unresponsive || !st.Connected {
		t.Fatalf("status while stopped: %+v", st)
	}
	if !strings.Contains(tor.ReadyErr().Error(), "does not answer") {
		t.Errorf("ReadyErr = %v", tor.ReadyErr())
	}
	synctest.Wait() // the probe calls OnDown after it marks Tor unresponsive
	if downs.Load() != 1 || tor.Hangs() != 1 {
		t.Errorf("OnDown calls %d, hangs %d; want 1 and 1", downs.Load(), tor.Hangs())
	}
	// Bounds: never before the deadline; generous above it for a loaded box.
	if notReady < 200*time.Millisecond || notReady > 5*time.Second {
		t.Errorf("not ready %v after the stop, want between the deadline and 5s", notReady)
	}
	f.resume()
	began = time.Now()
	eventually(t, "ready after resume", tor.Ready)
	t.Logf("not ready %v after SIGSTOP; ready %v after SIGCONT", notReady.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if f.dials != 1 {
		t.Errorf("%d control connections, want the first one kept", f.dials)
	}
}

// TestAttachReconnectQuick: once the attached Tor's control port comes
// back, it is used again within ReconnectInterval, however long it was
// gone (no backoff growing to a minute).
func TestAttachReconnectQuick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "NULL")
		f.setReady()
		tor := startAttached(t, f, Config{})
		synctest.Wait()
		if !tor.Ready() {
			t.Fatal("not ready")
		}
		f.setDown(true)
		f.dropAll()
		time.Sleep(3 * time.Minute) // a long outage: many refused retries
		synctest.Wait()
		if tor.Ready() {
			t.Fatal("ready while the control port refuses")
		}
		f.setDown(false)
		back := time.Now()
		for !tor.Ready() {
			time.Sleep(10 * time.Millisecond)
		}
		// The loop above looks every 10 ms.
		if d := time.Since(back); d > DefaultReconnectInterval+10*time.Millisecond {
			t.Fatalf("ready %v after the control port came back, want at most %v", d, DefaultReconnectInterval)
		}
	})
}

// TestAttachAuthBackoff: a control port that refuses authentication is
// retried with backoff, not every ReconnectInterval.
func TestAttachAuthBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "HASHEDPASSWORD")
		f.password = "right"
		f.setReady()
		tor := startAttached(t, f, Config{ControlPassword: "right"})
		synctest.Wait()
		f.mu.Lock()
		f.password = "changed"
		f.mu.Unlock()
		f.dropAll()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		// Backoff 200ms, 1s, 2s, 4s, 8s, 16s: about 6 tries in 30 s,
		// where a fixed 500 ms would make 60.
		if f.dials > 10 {
			t.Fatalf("%d dials in 30s of refused authentication", f.dials)
		}
		if tor.Ready() {
			t.Fatal("ready without authentication")
		}
	})
}

// TestBootstrapStall: no bootstrap progress for BootstrapStall yields a
// diagnosis naming the phase, Tor's warning, the likely causes and the
// next step; progress clears it.
func TestBootstrapStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "NULL")
		f.set("status/bootstrap-phase", `WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" WARNING="Connection timed out" REASON=TIMEOUT`)
		tor := startAttached(t, f, Config{})
		time.Sleep(DefaultBootstrapStall - time.Second)
		synctest.Wait()
		tor.mu.Lock()
		early := tor.stalled
		tor.mu.Unlock()
		if early != "" {
			t.Fatalf("stall reported before the bound: %s", early)
		}
		time.Sleep(DefaultPollInterval + time.Second)
		synctest.Wait()
		d := tor.Diagnosis()
		for _, want := range []string{"5%", "conn", "Connection timed out", "clock", "bridges", "next:"} {
			if !strings.Contains(d, want) {
				t.Errorf("diagnosis lacks %q: %s", want, d)
			}
		}
		f.set("status/bootstrap-phase", `NOTICE BOOTSTRAP PROGRESS=50 TAG=loading_descriptors SUMMARY="Loading"`)
		time.Sleep(DefaultPollInterval)
		synctest.Wait()
		tor.mu.Lock()
		cleared := tor.stalled == ""
		tor.mu.Unlock()
		if !cleared {
			t.Error("stall not cleared by progress")
		}
	})
}
