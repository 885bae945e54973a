package torctl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// requireTor skips without a tor binary, except under CI=true, where it
// fails.
func requireTor(t *testing.T) {
	t.Helper()
	if _, err := findTor(""); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and tor is missing: %v", err)
		}
		t.Skip("tor not installed")
	}
}

// offlineTorrc keeps a real tor off every network (DisableNetwork) and
// skips loading the GeoIP files.
func offlineTorrc(t *testing.T) []string {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"DisableNetwork 1", "GeoIPFile " + empty, "GeoIPv6File " + empty}
}

func TestTorNotFound(t *testing.T) {
	_, err := New(Config{DataDir: t.TempDir(), TorPath: "/nonexistent/tor"})
	if !errors.Is(err, ErrTorNotFound) || !strings.Contains(err.Error(), "apt-get install tor") {
		t.Fatalf("New with a missing tor = %v, want ErrTorNotFound naming the install command", err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{name: "no data dir", cfg: Config{TorPath: "/bin/true"}},
		{name: "socks in managed", cfg: Config{DataDir: dir, SocksAddr: "127.0.0.1:9050", TorPath: "/bin/true"}},
		{name: "password in managed", cfg: Config{DataDir: dir, ControlPassword: "x", TorPath: "/bin/true"}},
		{name: "torrc in attach", cfg: Config{ControlAddr: "127.0.0.1:9051", TorrcFile: "/etc/hosts"}},
		{name: "data dir in attach", cfg: Config{ControlAddr: "127.0.0.1:9051", DataDir: dir}},
		{name: "control by name", cfg: Config{ControlAddr: "localhost:9051"}},
		{name: "control port 0", cfg: Config{ControlAddr: "127.0.0.1:0"}},
		{name: "bad socks", cfg: Config{ControlAddr: "127.0.0.1:9051", SocksAddr: "tor:9050"}},
		{name: "long data dir", cfg: Config{DataDir: "/" + strings.Repeat("d", 100), TorPath: "/bin/true"}},
		{name: "space in data dir", cfg: Config{DataDir: "/var/lib/tor gate", TorPath: "/bin/true"}},
		{name: "missing torrc", cfg: Config{DataDir: dir, TorrcFile: "/nonexistent/torrc", TorPath: "/bin/true"}},
		{name: "newline in torrc line", cfg: Config{DataDir: dir, TorrcLines: []string{"A 1\nB 2"}, TorPath: "/bin/true"}},
		{name: "negative", cfg: Config{ControlAddr: "127.0.0.1:9051", PollInterval: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

func TestBadTorrc(t *testing.T) {
	requireTor(t)
	torrc := filepath.Join(t.TempDir(), "torrc")
	if err := os.WriteFile(torrc, []byte("NoSuchOption 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tor, err := New(Config{DataDir: filepath.Join(t.TempDir(), "tor"), TorrcFile: torrc})
	if err != nil {
		t.Fatal(err)
	}
	defer tor.Close()
	err = tor.Start(t.Context())
	if !errors.Is(err, ErrBadTorrc) || !strings.Contains(err.Error(), "NoSuchOption") {
		t.Fatalf("Start with a bad torrc = %v, want ErrBadTorrc naming the option", err)
	}
}

// TestManagedRealTor runs the real tor binary offline (DisableNetwork 1):
// it starts, torctl connects over the control socket with the cookie and
// takes ownership; Tor is not ready (it cannot bootstrap); a killed tor is
// restarted with a new PID; Close leaves no tor behind.
func TestManagedRealTor(t *testing.T) {
	requireTor(t)
	var downs atomic.Int32
	tor, err := New(Config{
		DataDir:        filepath.Join(t.TempDir(), "tor"),
		TorrcLines:     offlineTorrc(t),
		RestartBackoff: 100 * time.Millisecond,
		OnDown:         func() { downs.Add(1) },
		Logger:         testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tor.Close()
	if err := tor.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "control connection", func() bool { return tor.Status().Connected })
	pid := tor.PID()
	if pid == 0 || tor.Ready() {
		t.Fatalf("PID %d, Ready %v; want a PID and not ready (offline)", pid, tor.Ready())
	}
	// Offline, tor opens no SocksPort; check where it would be.
	if want := "unix:" + filepath.Join(tor.cfg.DataDir, "socks.sock"); tor.SocksAddr() != want {
		t.Fatalf("SocksAddr = %q, want %q", tor.SocksAddr(), want)
	}
	if err := tor.NewNym(t.Context()); err != nil {
		t.Fatalf("NewNym: %v", err)
	}

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "restart with a new PID", func() bool {
		p := tor.PID()
		return p != 0 && p != pid && tor.Status().Connected
	})
	if downs.Load() != 1 {
		t.Errorf("OnDown called %d times, want 1", downs.Load())
	}
	pid = tor.PID()
	tor.Close()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("tor %d still runs after Close", pid)
	}
}
