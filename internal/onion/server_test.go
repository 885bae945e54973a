package onion

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/torgate/torgate/internal/reach"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/torctl"
)

var (
	ws1 = netip.MustParseAddr("10.152.152.11")
	ws2 = netip.MustParseAddr("10.152.152.12")
)

// dialLog is a fake Dial that records its targets and connects to a
// local echo server (or, with block set, waits until released).
type dialLog struct {
	mu      sync.Mutex
	targets []netip.AddrPort
	echo    string
	block   chan struct{}
	fail    error
}

func newDialLog(t *testing.T) *dialLog {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return &dialLog{echo: ln.Addr().String()}
}

func (d *dialLog) dial(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
	d.mu.Lock()
	d.targets = append(d.targets, target)
	block, fail := d.block, d.fail
	d.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.echo)
}

func (d *dialLog) dialled() []netip.AddrPort {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]netip.AddrPort(nil), d.targets...)
}

func testLogger(t *testing.T) *slog.Logger { return testlog.New(t, slog.LevelDebug) }

// newServer starts a Server with cfg's gaps filled in.
func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// teach tells the fake control port the ServiceID of each of s's keys.
func teach(f *fakeControl, s *Server) {
	for _, svc := range s.svcs {
		f.know(torKey(svc.key), svc.id)
	}
}

// attach runs torctl in attach mode on f with s's OnConnect hook.
func attach(t *testing.T, f *fakeControl, s *Server) *torctl.Tor {
	t.Helper()
	tor, err := torctl.New(torctl.Config{
		ControlAddr:       "unix:" + f.path,
		SocksAddr:         "127.0.0.1:9050",
		ReconnectInterval: 20 * time.Millisecond,
		OnConnect:         s.OnConnect,
		Logger:            testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tor.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tor.Close() })
	return tor
}

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

func allLive(s *Server) bool {
	for _, v := range s.Services() {
		if !v.Live {
			return false
		}
	}
	return true
}

func TestConfig(t *testing.T) {
	dial := func(context.Context, netip.AddrPort) (net.Conn, error) { return nil, errors.New("no") }
	ok := Entry{Port: 80, Target: netip.MustParseAddrPort("10.152.152.11:80")}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{name: "no entries", cfg: Config{StateDir: "/x", Dial: dial}},
		{name: "no state dir", cfg: Config{Entries: []Entry{ok}, Dial: dial}},
		{name: "no dial", cfg: Config{Entries: []Entry{ok}, StateDir: "/x"}},
		{name: "onion port 0", cfg: Config{Entries: []Entry{{Port: 0, Target: ok.Target}}, StateDir: "/x", Dial: dial}},
		{name: "target port 0", cfg: Config{Entries: []Entry{{Port: 80, Target: netip.MustParseAddrPort("10.152.152.11:0")}}, StateDir: "/x", Dial: dial}},
		{name: "no target", cfg: Config{Entries: []Entry{{Port: 80}}, StateDir: "/x", Dial: dial}},
		{name: "loopback target", cfg: Config{Entries: []Entry{{Port: 80, Target: netip.MustParseAddrPort("127.0.0.1:80")}}, StateDir: "/x", Dial: dial}},
		{name: "multicast target", cfg: Config{Entries: []Entry{{Port: 80, Target: netip.MustParseAddrPort("[ff02::1]:80")}}, StateDir: "/x", Dial: dial}},
		{name: "mapped target", cfg: Config{Entries: []Entry{{Port: 80, Target: netip.MustParseAddrPort("[::ffff:10.1.1.1]:80")}}, StateDir: "/x", Dial: dial}},
		{name: "port twice", cfg: Config{Entries: []Entry{ok, {Port: 80, Target: netip.MustParseAddrPort("10.152.152.11:8080")}}, StateDir: "/x", Dial: dial}},
		{name: "socket dir with space", cfg: Config{Entries: []Entry{ok}, StateDir: "/x", SocketDir: "/a b", Dial: dial}},
		{name: "socket dir too long", cfg: Config{Entries: []Entry{ok}, StateDir: "/x", SocketDir: "/" + strings.Repeat("d", 100), Dial: dial}},
		{name: "per service above all", cfg: Config{Entries: []Entry{ok}, StateDir: "/x", Dial: dial, MaxConns: 4, MaxConnsPerService: 5}},
		{name: "negative", cfg: Config{Entries: []Entry{ok}, StateDir: "/x", Dial: dial, DialTimeout: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("New = %v, want ErrConfig", err)
			}
		})
	}
}

// TestAddOnionLine: one command per service, its key in Tor's expanded
// form, a Port= line per entry to its own socket, no Flags=Detach.
func TestAddOnionLine(t *testing.T) {
	svc := &service{key: vectorKey(), ports: []*port{
		{Entry: Entry{Port: 80}, sock: "/var/lib/torgate/onion-sock/s0-80.sock"},
		{Entry: Entry{Port: 443}, sock: "/var/lib/torgate/onion-sock/s0-443.sock"},
	}}
	want := "ADD_ONION " + vectorExpanded + " Port=80,unix:/var/lib/torgate/onion-sock/s0-80.sock Port=443,unix:/var/lib/torgate/onion-sock/s0-443.sock"
	if got := addOnionLine(svc); got != want {
		t.Errorf("addOnionLine =\n%s\nwant\n%s", got, want)
	}
}

// TestServices: entries with one target address are one service; the
// services and their ports come out sorted.
func TestServices(t *testing.T) {
	d := newDialLog(t)
	s := newServer(t, Config{Dial: d.dial, Entries: []Entry{
		{Port: 443, Target: netip.AddrPortFrom(ws2, 443)},
		{Port: 80, Target: netip.AddrPortFrom(ws1, 8080)},
		{Port: 22, Target: netip.AddrPortFrom(ws1, 22)},
	}})
	got := s.Services()
	if len(got) != 2 || got[0].Target != ws1 || got[1].Target != ws2 {
		t.Fatalf("Services = %+v", got)
	}
	if p := got[0].Ports; len(p) != 2 || p[0] != 22 || p[1] != 80 {
		t.Errorf("ports of the first = %v, want [22 80]", p)
	}
	if got[0].Address == got[1].Address || !strings.HasSuffix(got[0].Address, ".onion") || len(got[0].Address) != 56+len(".onion") {
		t.Errorf("addresses %q %q", got[0].Address, got[1].Address)
	}
	if got[0].Live || s.ReadyErr() == nil {
		t.Error("live before any control connection")
	}
}

// TestReAddOnReconnect: every new control connection gets the same
// ADD_ONION (same key, so the same address); between connections the
// services are down.
func TestReAddOnReconnect(t *testing.T) {
	f := newFakeControl(t)
	d := newDialLog(t)
	s := newServer(t, Config{Dial: d.dial, Entries: []Entry{
		{Port: 80, Target: netip.AddrPortFrom(ws1, 80)},
		{Port: 443, Target: netip.AddrPortFrom(ws1, 443)},
		{Port: 80, Target: netip.AddrPortFrom(ws2, 80)},
	}})
	teach(f, s)
	tor := attach(t, f, s)
	eventually(t, "services live", func() bool { return allLive(s) })
	if err := s.ReadyErr(); err != nil {
		t.Fatal(err)
	}
	first := f.addsOn(0)
	if len(first) != 2 {
		t.Fatalf("ADD_ONION on the first connection: %q, want 2 (one per service)", first)
	}
	for _, l := range first {
		if strings.Contains(l, "Detach") {
			t.Errorf("%q: the service must end with the connection", l)
		}
	}
	if !strings.Contains(first[0], " Port=80,unix:") || !strings.Contains(first[0], " Port=443,unix:") {
		t.Errorf("first service's command %q lacks a port", first[0])
	}

	f.dropAll() // tor restarted
	eventually(t, "reconnect", func() bool { return f.connections() >= 2 && len(f.addsOn(1)) == 2 })
	eventually(t, "services live again", func() bool { return allLive(s) && tor.Ready() })
	if again := f.addsOn(1); again[0] != first[0] || again[1] != first[1] {
		t.Errorf("re-added differently:\n%q\n%q", again, first)
	}
	if n := float64(s.stats.added.Load()); n != 4 {
		t.Errorf("onion_add_total{ok} = %v, want 4", n)
	}

	// torctl gone: the services are down.
	tor.Close()
	eventually(t, "services down", func() bool { return !allLive(s) })
}

// TestAddressSurvivesRestart: a new Server on the same state directory
// has the same addresses, which List reports without a Tor.
func TestAddressSurvivesRestart(t *testing.T) {
	state := t.TempDir()
	d := newDialLog(t)
	cfg := Config{StateDir: state, Dial: d.dial, Entries: []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 80)}}}
	s1 := newServer(t, cfg)
	a1 := s1.Services()[0].Address
	s1.Close()
	s2 := newServer(t, cfg)
	if a2 := s2.Services()[0].Address; a2 != a1 {
		t.Errorf("address after restart %s, before %s", a2, a1)
	}
	l, err := List(state)
	if err != nil || len(l) != 1 || l[0].Address != a1 || l[0].Target != ws1 {
		t.Errorf("List = %+v, %v", l, err)
	}
}

// TestRefusedService: a service Tor refuses is down with the reason, and
// the control connection (the workstations' traffic) stays.
func TestRefusedService(t *testing.T) {
	f := newFakeControl(t)
	f.refuse = "512 Bad arguments to ADD_ONION"
	d := newDialLog(t)
	s := newServer(t, Config{Dial: d.dial, Entries: []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 80)}}})
	tor := attach(t, f, s)
	eventually(t, "tor ready", tor.Ready)
	v := s.Services()[0]
	if v.Live || !strings.Contains(v.Err, "512") {
		t.Errorf("service = %+v, want down with Tor's 512", v)
	}
	if err := s.ReadyErr(); err == nil || !strings.Contains(err.Error(), v.Address) || strings.Contains(err.Error(), ws1.String()) {
		t.Errorf("ReadyErr = %v: want the address, not the target", err)
	}
	if f.connections() != 1 {
		t.Errorf("%d control connections, want 1 (a refused service keeps it)", f.connections())
	}
}

// TestServiceIDMismatch: a reply naming another service is an error.
func TestServiceIDMismatch(t *testing.T) {
	f := newFakeControl(t)
	d := newDialLog(t)
	s := newServer(t, Config{Dial: d.dial, Entries: []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 80)}}})
	f.know(torKey(s.svcs[0].key), vectorID)
	tor := attach(t, f, s)
	eventually(t, "tor ready", tor.Ready)
	if v := s.Services()[0]; v.Live || !strings.Contains(v.Err, "ServiceID") {
		t.Errorf("service = %+v, want down for the wrong ServiceID", v)
	}
}

// TestCollisionRetry: a key the tor still holds for torgate's previous
// connection is added again once tor lets go of it.
func TestCollisionRetry(t *testing.T) {
	f := newFakeControl(t)
	d := newDialLog(t)
	s := newServer(t, Config{Dial: d.dial, Entries: []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 80)}}})
	teach(f, s)
	attach(t, f, s)
	eventually(t, "services live", func() bool { return allLive(s) })
	f.mu.Lock()
	f.holdAfterClose = 1
	f.mu.Unlock()
	f.dropAll()
	eventually(t, "re-added after a collision", func() bool { return len(f.addsOn(1)) == 2 && allLive(s) })
}

// connectAsTor connects to the socket of s's service i, port j, as tor
// does for a client's stream.
func connectAsTor(t *testing.T, s *Server, i, j int) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: s.svcs[i].ports[j].sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRelay: a connection on an entry's socket is relayed to that
// entry's target, both ways, with half-close; only declared targets are
// dialled.
func TestRelay(t *testing.T) {
	d := newDialLog(t)
	s := newServer(t, Config{Dial: d.dial, Entries: []Entry{
		{Port: 80, Target: netip.AddrPortFrom(ws1, 8080)},
		{Port: 22, Target: netip.AddrPortFrom(ws2, 2222)},
	}})
	for i := range 2 {
		c := connectAsTor(t, s, i, 0)
		msg := "GET / HTTP/1.0\r\n\r\n" + strconv.Itoa(i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != msg {
			t.Fatalf("echo = %q, %v", got, err)
		}
	}
	want := []netip.AddrPort{netip.AddrPortFrom(ws1, 8080), netip.AddrPortFrom(ws2, 2222)}
	if got := d.dialled(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("dialled %v, want %v", got, want)
	}
	eventually(t, "no active relays", func() bool { return s.stats.active.Load() == 0 })
	if n := float64(s.stats.result[resultRelayed].Load()); n != 2 {
		t.Errorf("relayed = %v, want 2", n)
	}
	if err := testutil.CollectAndCompare(s.Metrics()[0], strings.NewReader(`
# HELP onion_connections_active Connections being relayed between Tor and a workstation.
# TYPE onion_connections_active gauge
onion_connections_active 0
`), "onion_connections_active"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(s.Metrics()[0]); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	// A target that refuses: Tor's connection is closed.
	d.mu.Lock()
	d.fail = errors.New("refused")
	d.mu.Unlock()
	c := connectAsTor(t, s, 0, 0)
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("read %q from a failed dial", b)
	}
	eventually(t, "dial_failed counted", func() bool {
		return float64(s.stats.result[resultDialFailed].Load()) == 1
	})
}

// TestCaps: beyond MaxConns, or a service's share, Tor's connection is
// closed at once; one service at its share leaves room for another.
func TestCaps(t *testing.T) {
	d := newDialLog(t)
	d.block = make(chan struct{})
	s := newServer(t, Config{Dial: d.dial, MaxConns: 3, MaxConnsPerService: 2, Entries: []Entry{
		{Port: 80, Target: netip.AddrPortFrom(ws1, 80)},
		{Port: 80, Target: netip.AddrPortFrom(ws2, 80)},
	}})
	held := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.held
	}
	closedAtOnce := func(c *net.UnixConn) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	connectAsTor(t, s, 0, 0)
	connectAsTor(t, s, 0, 0)
	eventually(t, "two held", func() bool { return held() == 2 })
	if !closedAtOnce(connectAsTor(t, s, 0, 0)) {
		t.Error("a third connection to a service at its share of 2 was not closed")
	}
	connectAsTor(t, s, 1, 0)
	eventually(t, "three held", func() bool { return held() == 3 })
	if !closedAtOnce(connectAsTor(t, s, 1, 0)) {
		t.Error("a connection beyond MaxConns 3 was not closed")
	}
	if n := float64(s.stats.result[resultOverLimit].Load()); n != 2 {
		t.Errorf("over_limit = %v, want 2", n)
	}
	close(d.block)
	eventually(t, "relays", func() bool { return s.stats.active.Load() == 3 })
	s.Close() // ends the relays
	if h := held(); h != 0 {
		t.Errorf("%d slots held after Close", h)
	}
}

// TestSocketModes: sockets for a Tor of torgate's own user are 0600 in a
// 0700 directory; for another user they are shared by its group (0660 in
// 0750, the group its primary one), which needs root to set up.
func TestSocketModes(t *testing.T) {
	d := newDialLog(t)
	s := newServer(t, Config{Dial: d.dial, Entries: []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 80)}}})
	checkMode(t, s.cfg.SocketDir, 0o700)
	sock := s.svcs[0].ports[0].sock
	checkSocketMode(t, sock, 0o600)
	s.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}

	t.Run("TorUser", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("giving the sockets to another user's group needs root")
		}
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Skip("no user nobody")
		}
		gid, _ := strconv.Atoi(u.Gid)
		state := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(state, 0o700); err != nil {
			t.Fatal(err)
		}
		// t.TempDir's parents are 0700 root's: give nobody the way in.
		for d := filepath.Dir(state); d != "/"; d = filepath.Dir(d) {
			fi, _ := os.Stat(d)
			os.Chmod(d, fi.Mode().Perm()|0o001)
		}
		s := newServer(t, Config{StateDir: state, TorUser: "nobody", Dial: d.dial, Entries: []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 80)}}})
		checkMode(t, s.cfg.SocketDir, 0o750)
		sock := s.svcs[0].ports[0].sock
		checkSocketMode(t, sock, 0o660)
		for _, p := range []string{s.cfg.SocketDir, sock} {
			fi, _ := os.Stat(p)
			if _, g := reach.Owner(fi); g != gid {
				t.Errorf("%s: group %d, want nobody's %d", p, g, gid)
			}
		}
		if fi, _ := os.Stat(state); fi.Mode().Perm()&0o001 == 0 {
			t.Error("the state directory was not made searchable for tor's user")
		}
		// The keys stay torgate's alone.
		checkMode(t, KeyDir(state), 0o700)
	})
}

func checkSocketMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want a socket with %v", path, fi.Mode(), want)
	}
}

// TestTargetsNotLogged: at debug level, relayed and failed connections
// and a refused service leave no target address in the logs, even when
// Dial's error names it.
func TestTargetsNotLogged(t *testing.T) {
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d := newDialLog(t)
	s := newServer(t, Config{Dial: d.dial, Logger: log, Entries: []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 8080)}}})
	c := connectAsTor(t, s, 0, 0)
	c.Write([]byte("x"))
	c.CloseWrite()
	io.ReadAll(c)
	d.mu.Lock()
	d.fail = errors.New("dial " + netip.AddrPortFrom(ws1, 8080).String() + ": refused")
	d.mu.Unlock()
	io.ReadAll(connectAsTor(t, s, 0, 0))
	eventually(t, "the failed dial", func() bool { return s.stats.result[resultDialFailed].Load() == 1 })

	f := newFakeControl(t)
	f.refuse = "512 Bad arguments"
	tor := attach(t, f, s)
	eventually(t, "tor ready", tor.Ready)
	tor.Close()
	s.Close()
	out := logs.String()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "level=WARN") {
		t.Fatalf("no debug or warning logs; the test proves nothing:\n%s", out)
	}
	if strings.Contains(out, ws1.String()) {
		t.Errorf("logs name the target %v:\n%s", ws1, out)
	}
}

// TestHalfCloseBounded: after Tor's side ended, a target that never
// finishes is given HalfCloseTimeout, then both ends are closed.
func TestHalfCloseBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c) // reads to EOF, never answers nor closes
		time.Sleep(time.Minute)
	}()
	s := newServer(t, Config{
		Dial: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		},
		HalfCloseTimeout: 100 * time.Millisecond,
		Entries:          []Entry{{Port: 80, Target: netip.AddrPortFrom(ws1, 80)}},
	})
	c := connectAsTor(t, s, 0, 0)
	// The clock starts before the half-close: the relay sets its
	// deadline as soon as it reads the EOF.
	c.Write([]byte("request"))
	start := time.Now()
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("read: %v (the relay did not end)", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("ended after %v, want about HalfCloseTimeout (100ms)", d)
	}
	eventually(t, "the relay's slot back", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.held == 0
	})
}

// TestCloseEndsEverything: Close ends relays and waits for blocked dials;
// no goroutine of the Server is left.
func TestCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	d := newDialLog(t)
	d.block = make(chan struct{})
	s, err := New(Config{StateDir: t.TempDir(), Dial: d.dial, Logger: testLogger(t), Entries: []Entry{
		{Port: 80, Target: netip.AddrPortFrom(ws1, 80)},
		{Port: 81, Target: netip.AddrPortFrom(ws1, 81)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	var cs []*net.UnixConn
	for range 3 {
		cs = append(cs, connectAsTor(t, s, 0, 0))
	}
	eventually(t, "three dials", func() bool { return len(d.dialled()) == 3 })
	s.Close()
	for _, c := range cs {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("Tor's side not closed: %v", err)
		}
		c.Close()
	}
	eventually(t, "goroutines back", func() bool { return runtime.NumGoroutine() <= before+2 }) // the echo server's accept loop and its test cleanup
}

// TestConnectionLostWhileAdding: a control connection that fails between
// two ADD_ONIONs is an error for torctl (which drops it), and no service
// stays live on it.
func TestConnectionLostWhileAdding(t *testing.T) {
	d := newDialLog(t)
	s := newServer(t, Config{Dial: d.dial, Entries: []Entry{
		{Port: 80, Target: netip.AddrPortFrom(ws1, 80)},
		{Port: 80, Target: netip.AddrPortFrom(ws2, 80)},
	}})
	a, b := net.Pipe()
	defer a.Close()
	go func() { // a control port that authenticates, accepts one ADD_ONION and hangs up
		defer b.Close()
		buf := make([]byte, 4096)
		replies := []string{
			"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n",
			"250 OK\r\n",
			"250-ServiceID=" + s.svcs[0].id + "\r\n250 OK\r\n",
		}
		for _, r := range replies {
			if _, err := b.Read(buf); err != nil {
				return
			}
			io.WriteString(b, r)
		}
		b.Read(buf) // the second ADD_ONION, never answered
	}()
	c := torctl.NewConn(a, nil)
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.Authenticate(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.OnConnect(ctx, c); err == nil {
		t.Fatal("OnConnect succeeded on a connection that failed")
	}
	for _, v := range s.Services() {
		if v.Live {
			t.Errorf("%s live on a dead connection", v.Address)
		}
	}
}
