package torctl

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/reach"
)

// requireTor skips t when no tor is installed, except under CI=true,
// where that is a failure (as testnet.Require, which torctl's tests
// cannot import: the test network uses torctl's control client).
func requireTor(t *testing.T) {
	t.Helper()
	if _, err := findTor(""); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and tor is missing: %v", err)
		}
		t.Skipf("tor not installed: %v", err)
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
	if want := "unix:" + filepath.Join(tor.cfg.DataDir+"-run", "socks.sock"); tor.SocksAddr() != want {
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

// requireTorUser skips unless the test runs as root and Debian's tor user
// exists; under CI=true (root, tor installed) it fails instead.
func requireTorUser(t *testing.T) *user.User {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") == "true" {
		fail = t.Fatalf
	}
	if os.Geteuid() != 0 {
		fail("needs root to start tor as another user")
	}
	u, err := user.Lookup("debian-tor")
	if err != nil {
		fail("no debian-tor user (Debian's tor package creates it): %v", err)
	}
	return u
}

// reachableTempDir is a t.TempDir that another user can pass through
// (t.TempDir and its parent are 0700).
func reachableTempDir(t *testing.T) string {
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// procIDs reads the real uid and gid of a process from /proc.
func procIDs(t *testing.T, pid int) (uid, gid string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) > 1 && f[0] == "Uid:" {
			uid = f[1]
		}
		if len(f) > 1 && f[0] == "Gid:" {
			gid = f[1]
		}
	}
	return uid, gid
}

// TestManagedRealTorAsUser: torgate as root starts tor as debian-tor
// (uid in /proc), hands it a DataDirectory an earlier version left owned
// by root (chown -R, so its state survives), reaches the control socket
// and cookie through the run directory's group, and restarts it as the
// same user after a SIGKILL.
func TestManagedRealTorAsUser(t *testing.T) {
	requireTor(t)
	u := requireTorUser(t)
	data := filepath.Join(reachableTempDir(t), "tor")
	// The layout of an earlier version: tor ran as root, with its state
	// and sockets in DataDir.
	if err := os.MkdirAll(filepath.Join(data, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	old := "Guard in=default rsa_id=0000000000000000000000000000000000000000\n"
	if err := os.WriteFile(filepath.Join(data, "state"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "torrc"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tor, err := New(Config{
		DataDir:        data,
		User:           "debian-tor",
		TorrcLines:     offlineTorrc(t),
		RestartBackoff: 100 * time.Millisecond,
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
	if uid, gid := procIDs(t, pid); uid != u.Uid || gid != u.Gid {
		t.Fatalf("tor %d runs as uid %s gid %s, want debian-tor (%s/%s)", pid, uid, gid, u.Uid, u.Gid)
	}
	t.Logf("tor pid %d uid %s (debian-tor)", pid, u.Uid)
	fi, err := os.Stat(filepath.Join(data, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if uid, _ := reach.Owner(fi); strconv.Itoa(uid) != u.Uid {
		t.Errorf("%s/keys owned by %d after start, want debian-tor", data, uid)
	}
	if _, err := os.Stat(filepath.Join(data, "torrc")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old-layout torrc left in DataDir: %v", err)
	}
	fi, err = os.Stat(data + "-run")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o750 || fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("run directory mode %v, want setgid 0750", fi.Mode())
	}

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "restart with a new PID", func() bool {
		p := tor.PID()
		return p != 0 && p != pid && tor.Status().Connected
	})
	if uid, _ := procIDs(t, tor.PID()); uid != u.Uid {
		t.Fatalf("restarted tor runs as uid %s, want %s", uid, u.Uid)
	}
	tor.Close()
	b, err := os.ReadFile(filepath.Join(data, "state"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state after the run: %d bytes", len(b))
}

func TestUserErrors(t *testing.T) {
	if _, err := New(Config{DataDir: t.TempDir(), User: "no-such-user-torgate", TorPath: "/bin/true"}); err == nil {
		t.Error("New accepted an unknown user")
	}
	if _, err := New(Config{ControlAddr: "127.0.0.1:9051", User: "root"}); err == nil {
		t.Error("New accepted User in attach mode")
	}
	if os.Geteuid() != 0 {
		if _, err := New(Config{DataDir: t.TempDir(), User: "root", TorPath: "/bin/true"}); err == nil || !strings.Contains(err.Error(), "needs root") {
			t.Errorf("New with User as non-root = %v, want an error saying it needs root", err)
		}
	}
}

func TestReachableNamesDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to pick a user it is not")
	}
	requireTorUser(t)
	base := t.TempDir() // its parent is 0700 and not torgate's to change here
	tor, err := New(Config{DataDir: filepath.Join(base, "sub", "tor"), User: "debian-tor", TorPath: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(base, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	err = tor.prepareDirs()
	if err == nil || !strings.Contains(err.Error(), "chmod o+x "+filepath.Dir(base)) {
		t.Fatalf("prepareDirs under a 0700 grandparent = %v, want an error naming it", err)
	}
	// The parent itself is torgate's: made searchable.
	if fi, _ := os.Stat(filepath.Join(base, "sub")); fi.Mode().Perm() != 0o701 {
		t.Errorf("parent mode %v, want 0701 (o+x added)", fi.Mode().Perm())
	}
}
