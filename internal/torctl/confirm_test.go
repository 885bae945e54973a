package torctl

import (
	"testing"
	"testing/synctest"
	"time"
)

// confirmOf runs Confirm and waits for its answer.
func confirmOf(t *testing.T, tor *Tor) (alive bool, took time.Duration) {
	t.Helper()
	start := time.Now()
	res := make(chan bool, 1)
	tor.Confirm(func(a bool) { res <- a })
	select {
	case a := <-res:
		return a, time.Since(start)
	case <-time.After(time.Minute):
		t.Fatal("Confirm never answered")
		return false, 0
	}
}

// TestConfirm: a Tor that answers confirms (an error reply is an answer
// too); a hung one does not, by ProbeDeadline, without waiting for
// CommandTimeout; without a control connection nothing confirms; many
// ends of stream at once all hear the answer. An attached Tor's
// ProcessState never knows: Confirm alone decides.
func TestConfirm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "NULL")
		f.setReady()
		tor := startAttached(t, f, Config{
			CommandTimeout:    time.Minute,
			ProbeDeadline:     time.Second,
			PollInterval:      time.Hour, // no poll gets in the way
			ReconnectInterval: time.Hour,
		})
		eventually(t, "ready", tor.Ready)
		// An attached Tor's process is not inspected: Confirm alone
		// decides its ends of stream.
		if gone, known := tor.ProcessState(); gone || known {
			t.Fatalf("attached: ProcessState = gone %v, known %v; want neither", gone, known)
		}
		if alive, _ := confirmOf(t, tor); !alive {
			t.Fatal("a Tor that answers (552 for an unknown key) did not confirm")
		}
		f.set("version", "0.4.9.11")
		if alive, _ := confirmOf(t, tor); !alive {
			t.Fatal("a Tor that answers did not confirm")
		}

		const n = 100
		res := make(chan bool, n)
		for range n {
			tor.Confirm(func(a bool) { res <- a })
		}
		for range n {
			if !<-res {
				t.Fatal("one of many concurrent ends of stream was not confirmed")
			}
		}

		f.setHang(true)
		alive, took := confirmOf(t, tor)
		if alive {
			t.Fatal("a hung Tor confirmed")
		}
		if took > 2*time.Second {
			t.Fatalf("a hung Tor's confirmation took %v, want ProbeDeadline (1s)", took)
		}

		f.setDown(true)
		f.dropAll()
		eventually(t, "control connection lost", func() bool { return !tor.Status().Connected })
		if alive, took := confirmOf(t, tor); alive || took > 0 {
			t.Fatalf("without a control connection: confirmed %v after %v; want false at once", alive, took)
		}
		if gone, known := tor.ProcessState(); gone || known {
			t.Fatalf("attached, connection lost: ProcessState = gone %v, known %v; want neither", gone, known)
		}
	})
}
