package torgate

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/torgate/torgate/socks/sockstest"
)

// idleDevice is a TUN that carries nothing and records its Close.
type idleDevice struct {
	once   sync.Once
	done   chan struct{}
	events chan tun.Event
	closed bool
}

func newIdleDevice() *idleDevice {
	return &idleDevice{done: make(chan struct{}), events: make(chan tun.Event)}
}

func (d *idleDevice) File() *os.File { return nil }
func (d *idleDevice) Read([][]byte, []int, int) (int, error) {
	<-d.done
	return 0, os.ErrClosed
}
func (d *idleDevice) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }
func (d *idleDevice) MTU() (int, error)                       { return 1500, nil }
func (d *idleDevice) Name() (string, error)                   { return "idle", nil }
func (d *idleDevice) Events() <-chan tun.Event                { return d.events }
func (d *idleDevice) BatchSize() int                          { return 1 }
func (d *idleDevice) Close() error {
	d.once.Do(func() { d.closed = true; close(d.done) })
	return nil
}

// settle waits (bounded) until f holds: goroutines and descriptors go
// away on their own schedule, with no event to wait for.
func settle(f func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	return true
}

func openFDs(t *testing.T) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1 // not Linux: descriptors are not checked
	}
	return len(es)
}

// TestNewContextUndoesEveryStep: NewContext failing at any of its steps
// leaves nothing: no goroutine, no descriptor, no registered metric, and
// the device it was given is closed (it is the router's from the call
// on). The last case is a router built in full and closed.
func TestNewContextUndoesEveryStep(t *testing.T) {
	srv := sockstest.NewServer(t, sockstest.Config{Connect: sockstest.Echo})
	steps := append(buildSteps[:], "")
	for _, step := range steps {
		name := step
		if name == "" {
			name = "none"
		}
		t.Run(name, func(t *testing.T) {
			goroutines, fds := runtime.NumGoroutine(), openFDs(t)
			reg := prometheus.NewRegistry()
			dev := newIdleDevice()
			cfg := Config{Device: dev, Upstream: srv.Dialer().Dial, StateDir: t.TempDir(), Registerer: reg, failAt: step}
			r, err := New(cfg)
			switch {
			case step == "" && err != nil:
				t.Fatal(err)
			case step == "":
				r.Start()
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
			case !errors.Is(err, errInjected) || !strings.Contains(err.Error(), step):
				t.Fatalf("err = %v, want the injected failure at %s", err, step)
			case r != nil:
				t.Fatal("a Router with an error")
			}
			if !dev.closed {
				t.Error("the device is still open")
			}
			if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
				t.Errorf("metrics left registered: %d families (err %v)", len(mfs), err)
			}
			if !settle(func() bool { return runtime.NumGoroutine() <= goroutines }) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines: %d before, %d after\n%s", goroutines, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			if fds >= 0 && !settle(func() bool { return openFDs(t) <= fds }) {
				t.Errorf("descriptors: %d before, %d after", fds, openFDs(t))
			}
		})
	}
}

// TestFailedStartKeepsState: a start that fails leaves the DNS state file
// as it was, so that the next good start keeps its map (issue 22: a
// refused --dns-pool4 had rewritten it for the refused pool).
func TestFailedStartKeepsState(t *testing.T) {
	srv := sockstest.NewServer(t, sockstest.Config{Connect: sockstest.Echo})
	dir := t.TempDir()
	r, err := New(Config{Device: newIdleDevice(), Upstream: srv.Dialer().Dial, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "automap.state")
	before, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range buildSteps[3:] { // from the device on: the table exists
		_, err := New(Config{Device: newIdleDevice(), Upstream: srv.Dialer().Dial, StateDir: dir,
			DNSPool4: netip.MustParsePrefix("10.99.0.0/16"), failAt: step})
		if !errors.Is(err, errInjected) {
			t.Fatalf("%s: %v", step, err)
		}
		if after, err := os.ReadFile(state); err != nil || !bytes.Equal(after, before) {
			t.Fatalf("failing at %s rewrote the state file (%v)", step, err)
		}
	}
}
