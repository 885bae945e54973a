package torctl

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/torgate/torgate/internal/testlog"
)

// testLogger logs to t at debug level.
func testLogger(t testing.TB) *slog.Logger { return testlog.New(t, slog.LevelDebug) }

// startAttached starts an attach-mode Tor on f.
func startAttached(t *testing.T, f *fakeTor, cfg Config) *Tor {
	t.Helper()
	if cfg.ControlAddr == "" {
		cfg.ControlAddr = "127.0.0.1:9051"
	}
	cfg.dial = f.dial
	cfg.Logger = testLogger(t)
	tor, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tor.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tor.Close() })
	return tor
}

// progressLog records OnProgress calls.
type progressLog struct {
	mu sync.Mutex
	p  []int
}

func (l *progressLog) add(b Bootstrap) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p = append(l.p, b.Progress)
}

func (l *progressLog) get() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.p)
}

// TestAttachReadiness walks readiness through bootstrap, network and
// circuit changes, a lost control connection and the reconnect.
func TestAttachReadiness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "SAFECOOKIE")
		f.set("net/listeners/socks", `"127.0.0.1:9050" "unix:/run/tor/socks"`)
		var progress progressLog
		var downs atomic.Int32
		tor := startAttached(t, f, Config{OnProgress: progress.add, OnDown: func() { downs.Add(1) }})
		synctest.Wait()

		if got := tor.SocksAddr(); got != "unix:/run/tor/socks" {
			t.Errorf("SocksAddr = %q, want the unix listener", got)
		}
		check := func(step string, want bool) {
			t.Helper()
			synctest.Wait()
			if got := tor.Ready(); got != want {
				t.Fatalf("%s: Ready = %v, want %v (status %+v)", step, got, want, tor.Status())
			}
			if (tor.ReadyErr() == nil) != want {
				t.Fatalf("%s: ReadyErr = %v disagrees with Ready", step, tor.ReadyErr())
			}
		}
		check("connected at 0%", false)
		if st := tor.Status(); !st.Connected || st.Bootstrap.Tag != "starting" {
			t.Fatalf("status after connect = %+v", st)
		}
		f.event(`STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=50 TAG=loading_descriptors SUMMARY="Loading relay descriptors"`)
		check("50%", false)
		if st := tor.Status(); st.Bootstrap.Summary != "Loading relay descriptors" {
			t.Errorf("summary = %q", st.Bootstrap.Summary)
		}
		f.event(`STATUS_CLIENT WARN BOOTSTRAP PROGRESS=50 TAG=loading_descriptors SUMMARY="Loading relay descriptors" WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=1 RECOMMENDATION=ignore`)
		check("warning", false)
		if r := tor.Status().Reason(); !strings.Contains(r, "50%") || !strings.Contains(r, "Connection refused") {
			t.Errorf("Reason = %q, want progress and warning", r)
		}
		f.event(`STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`)
		check("100% without circuit", false)
		f.event(`STATUS_CLIENT NOTICE CIRCUIT_ESTABLISHED`)
		check("circuit, network still down", false)
		f.event(`NETWORK_LIVENESS UP`)
		check("all up", true)
		f.event(`NETWORK_LIVENESS DOWN`)
		check("network down", false)
		f.event(`NETWORK_LIVENESS UP`)
		check("network up again", true)
		f.event(`STATUS_CLIENT NOTICE CIRCUIT_NOT_ESTABLISHED REASON=CLOCK_JUMPED`)
		check("circuits lost", false)
		f.event(`STATUS_CLIENT NOTICE CIRCUIT_ESTABLISHED`)
		check("circuits back", true)
		if got, want := progress.get(), []int{0, 50, 50, 100}; !slices.Equal(got, want) {
			t.Errorf("OnProgress calls = %v, want %v", got, want)
		}

		// Tor dies: not ready at once, OnDown, reconnect after backoff.
		f.setReady()
		f.setDown(true)
		f.dropAll()
		check("connection lost", false)
		if downs.Load() != 1 {
			t.Errorf("OnDown called %d times, want 1", downs.Load())
		}
		if err := tor.NewNym(t.Context()); !errors.Is(err, ErrNotConnected) {
			t.Errorf("NewNym while down = %v, want ErrNotConnected", err)
		}
		time.Sleep(DefaultRestartBackoff + time.Millisecond)
		check("refused reconnect", false)
		f.setDown(false)
		time.Sleep(2*DefaultRestartBackoff + time.Millisecond)
		check("reconnected", true)

		// A change without an event is found by the poll.
		f.set("network-liveness", "down")
		time.Sleep(DefaultPollInterval)
		check("poll saw network down", false)
	})
}

// eventually polls cond for up to 10 s (of fake time in a synctest
// bubble).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPollTimeout: a Tor that stops answering is treated as gone.
func TestPollTimeout(t *testing.T) {
	synctest.Test(t, testPollTimeout)
}

func testPollTimeout(t *testing.T) {
	f := newFakeTor(t, "NULL")
	f.setReady()
	var downs atomic.Int32
	tor := startAttached(t, f, Config{
		CommandTimeout: 100 * time.Millisecond,
		PollInterval:   20 * time.Millisecond,
		RestartBackoff: 10 * time.Millisecond,
		OnDown:         func() { downs.Add(1) },
	})
	eventually(t, "ready", tor.Ready)
	f.setHang(true)
	eventually(t, "not ready after a hung poll", func() bool { return !tor.Ready() && downs.Load() >= 1 })
	f.setHang(false)
	eventually(t, "ready after reconnect", tor.Ready)
}

func TestAuthentication(t *testing.T) {
	for _, tc := range []struct {
		name     string
		auth     string
		password string // Tor's
		give     string // Config.ControlPassword
		wantErr  error
	}{
		{name: "null", auth: "NULL"},
		{name: "safecookie", auth: "SAFECOOKIE"},
		{name: "password", auth: "HASHEDPASSWORD", password: "s3cret", give: "s3cret"},
		{name: "wrong password", auth: "HASHEDPASSWORD", password: "s3cret", give: "guess", wantErr: ErrAuth},
		{name: "password needed", auth: "HASHEDPASSWORD", password: "s3cret", wantErr: ErrAuth},
		{name: "password not offered", auth: "SAFECOOKIE", give: "s3cret", wantErr: ErrAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeTor(t, tc.auth)
				f.password = tc.password
				tor, err := New(Config{ControlAddr: "/run/tor/control", ControlPassword: tc.give, dial: f.dial, Logger: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				defer tor.Close()
				err = tor.Start(t.Context())
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Start = %v, want %v", err, tc.wantErr)
				}
			})
		})
	}
}

func TestNoSocksPort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "NULL")
		f.set("net/listeners/socks", "")
		tor, err := New(Config{ControlAddr: "127.0.0.1:9051", dial: f.dial})
		if err != nil {
			t.Fatal(err)
		}
		defer tor.Close()
		if err := tor.Start(t.Context()); !errors.Is(err, ErrNoSocksPort) {
			t.Fatalf("Start = %v, want ErrNoSocksPort", err)
		}
		// With SocksAddr given, the listeners are not asked for.
		tor2 := startAttached(t, f, Config{SocksAddr: "127.0.0.1:9150"})
		if got := tor2.SocksAddr(); got != "127.0.0.1:9150" {
			t.Fatalf("SocksAddr = %q", got)
		}
	})
}

// TestNewNym: NEWNYM is sent, a second one within Tor's rate limit is
// refused without being sent, and allowed again after the interval.
func TestNewNym(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "NULL")
		f.setReady()
		tor := startAttached(t, f, Config{})
		synctest.Wait()
		if w := tor.NewNymWait(); w != 0 {
			t.Fatalf("NewNymWait before any = %v", w)
		}
		if err := tor.NewNym(t.Context()); err != nil {
			t.Fatalf("NewNym: %v", err)
		}
		time.Sleep(3 * time.Second)
		err := tor.NewNym(t.Context())
		var rl *RateLimitError
		if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) || rl.Wait != 7*time.Second {
			t.Fatalf("second NewNym = %v, want a RateLimitError with Wait 7s", err)
		}
		if !strings.Contains(err.Error(), "retry in 7s") {
			t.Errorf("error text %q", err)
		}
		time.Sleep(7 * time.Second)
		if err := tor.NewNym(t.Context()); err != nil {
			t.Fatalf("NewNym after the interval: %v", err)
		}
		if got := f.signalsSent(); !slices.Equal(got, []string{"NEWNYM", "NEWNYM"}) {
			t.Fatalf("signals sent = %v, want two NEWNYM", got)
		}
	})
}

// TestNewNymTimeout: a Tor that does not answer NEWNYM costs the control
// connection, and the failed NEWNYM does not count against the rate limit.
func TestNewNymTimeout(t *testing.T) {
	synctest.Test(t, testNewNymTimeout)
}

func testNewNymTimeout(t *testing.T) {
	f := newFakeTor(t, "NULL")
	f.setReady()
	tor := startAttached(t, f, Config{CommandTimeout: 100 * time.Millisecond, PollInterval: time.Hour, RestartBackoff: time.Hour, MaxRestartBackoff: time.Hour})
	eventually(t, "ready", tor.Ready)
	f.setHang(true)
	err := tor.NewNym(t.Context())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NewNym on a hung tor = %v, want deadline exceeded", err)
	}
	eventually(t, "not ready after a timed-out command", func() bool { return !tor.Ready() })
	if w := tor.NewNymWait(); w != 0 {
		t.Fatalf("NewNymWait after a failed NEWNYM = %v, want 0", w)
	}
}

// fakeProcs plays tor processes for managed-mode tests: each start brings
// the fake control port up, kill takes it down.
type fakeProcs struct {
	f      *fakeTor
	mu     sync.Mutex
	starts []time.Time
	kills  []time.Time
	cur    *fakeProc
	args   []string
}

type fakeProc struct {
	pid  int
	done chan struct{}
	once sync.Once
	ps   *fakeProcs
}

func (p *fakeProc) Wait() error {
	<-p.done
	return errors.New("signal: killed")
}

func (p *fakeProc) Pid() int { return p.pid }

func (p *fakeProc) kill() {
	p.once.Do(func() {
		p.ps.mu.Lock()
		p.ps.kills = append(p.ps.kills, time.Now())
		p.ps.mu.Unlock()
		p.ps.f.setDown(true)
		p.ps.f.dropAll()
		close(p.done)
	})
}

func (ps *fakeProcs) start(ctx context.Context, path string, args []string, out io.Writer) (proc, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.starts = append(ps.starts, time.Now())
	ps.args = args
	p := &fakeProc{pid: 1000 + len(ps.starts), done: make(chan struct{}), ps: ps}
	ps.cur = p
	io.WriteString(out, "Nov 27 02:07:00.557 [warn] You are running Tor as root.\n")
	ps.f.setDown(false)
	context.AfterFunc(ctx, p.kill)
	return p, nil
}

func (ps *fakeProcs) killCurrent() {
	ps.mu.Lock()
	p := ps.cur
	ps.mu.Unlock()
	p.kill()
}

func (ps *fakeProcs) times() (starts, kills []time.Time) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return slices.Clone(ps.starts), slices.Clone(ps.kills)
}

// TestManagedRestart: a managed Tor that exits is restarted at once
// (firstRestart), then with exponential backoff while it keeps crashing,
// reset after a stable run; readiness drops at once and OnDown runs for
// each exit.
func TestManagedRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "SAFECOOKIE")
		f.setReady()
		ps := &fakeProcs{f: f}
		var downs atomic.Int32
		tor, err := New(Config{
			DataDir:    t.TempDir(),
			TorrcLines: []string{"UseBridges 1"},
			OnDown:     func() { downs.Add(1) },
			Logger:     testLogger(t),
			start:      ps.start,
			dial:       f.dial,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := tor.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer tor.Close()
		synctest.Wait()
		if !tor.Ready() || tor.PID() != 1001 {
			t.Fatalf("after start: Ready %v PID %d, status %+v", tor.Ready(), tor.PID(), tor.Status())
		}
		if f.owned != 1 {
			t.Errorf("TAKEOWNERSHIP sent %d times, want 1", f.owned)
		}
		if !strings.HasPrefix(tor.SocksAddr(), "unix:") || !slices.Contains(ps.args, "--SocksPort") {
			t.Errorf("SocksAddr %q, args %q", tor.SocksAddr(), ps.args)
		}

		// Three quick crashes: restarts after 200ms, 1s, 2s.
		for i := range 3 {
			ps.killCurrent()
			synctest.Wait()
			if tor.Ready() {
				t.Fatalf("crash %d: still ready", i)
			}
			if got := downs.Load(); got != int32(i+1) {
				t.Fatalf("crash %d: OnDown calls %d", i, got)
			}
			time.Sleep(10 * time.Second)
			synctest.Wait()
			if !tor.Ready() {
				t.Fatalf("crash %d: not ready after restart: %+v", i, tor.Status())
			}
		}
		// A stable run resets the backoff: the next restart is quick.
		time.Sleep(DefaultStableAfter)
		ps.killCurrent()
		time.Sleep(time.Hour)
		starts, kills := ps.times()
		if len(starts) != 5 || len(kills) < 4 {
			t.Fatalf("%d starts, %d kills; want 5 and at least 4", len(starts), len(kills))
		}
		for i, want := range []time.Duration{firstRestart, time.Second, 2 * time.Second, firstRestart} {
			if gap := starts[i+1].Sub(kills[i]); gap != want {
				t.Errorf("restart %d came %v after the exit, want %v", i+1, gap, want)
			}
		}
	})
}

// TestTorGetInfo: GetInfo answers from the live connection, refuses a key
// that could carry a second command without sending it, and says
// ErrNotConnected when there is no connection.
func TestTorGetInfo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeTor(t, "NULL")
		f.setReady()
		f.set("version", "0.4.9.1")
		tor := startAttached(t, f, Config{})
		synctest.Wait()
		info, err := tor.GetInfo(t.Context(), "version", "status/circuit-established")
		if err != nil {
			t.Fatalf("GetInfo: %v", err)
		}
		if info["version"] != "0.4.9.1" || info["status/circuit-established"] != "1" {
			t.Errorf("GetInfo = %v", info)
		}
		for _, k := range []string{"version\r\nSIGNAL SHUTDOWN", "a b", "", `"x"`} {
			if _, err := tor.GetInfo(t.Context(), k); !errors.Is(err, ErrSyntax) {
				t.Errorf("GetInfo(%q) = %v, want ErrSyntax", k, err)
			}
		}
		if got := f.signalsSent(); len(got) != 0 {
			t.Errorf("signals sent = %v", got)
		}
		if _, err := tor.GetInfo(t.Context(), "address"); err == nil {
			t.Error("GetInfo of a key fakeTor lacks: no error")
		}
		tor.Close()
		if _, err := tor.GetInfo(t.Context(), "version"); !errors.Is(err, ErrNotConnected) {
			t.Errorf("GetInfo after Close = %v, want ErrNotConnected", err)
		}
	})
}
