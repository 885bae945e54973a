package onion

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/nstest/gate"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/testnet"
	"github.com/torgate/torgate/internal/torctl"
	"github.com/torgate/torgate/socks"
)

// TestTorIntegration hosts an onion service on the private Tor network's
// client tor, through torctl's attach mode and OnConnect, and fetches it
// through the same tor's SocksPort; then does it again with a new Server
// and control connection on the same state directory, which must give
// the same address. The target is a local HTTP server standing in for the
// workstation (the way through netstack is TestThroughStack's). Behind
// the integration opt-in (TORGATE_TEST_INTEGRATION=1 or CI=true).
func TestTorIntegration(t *testing.T) {
	testnet.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	n, err := testnet.Start(ctx, testnet.Config{Dir: t.TempDir(), Logger: testlog.New(t, slog.LevelWarn)})
	cancel()
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tor logs:\n%s", n.Logs(30))
		}
		n.Close()
	})

	const body = "hello from a workstation's onion service\n"
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }))
	t.Cleanup(func() { web.Close() })
	target := netip.AddrPortFrom(ws1, 80)
	dial := func(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
		if to != target {
			return nil, fmt.Errorf("dial to an undeclared target")
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", web.Addr().String())
	}

	state := t.TempDir()
	run := func(t *testing.T) string {
		ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
		defer cancel()
		s, err := New(Config{StateDir: state, Dial: dial, Entries: []Entry{{Port: 80, Target: target}}, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		addr := s.Services()[0].Address
		id := strings.TrimSuffix(addr, ".onion")

		ctl, err := n.Control(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer ctl.Close()
		if err := ctl.SetEvents(ctx, "HS_DESC"); err != nil {
			t.Fatal(err)
		}
		tor, err := torctl.New(torctl.Config{ControlAddr: n.ControlAddr, SocksAddr: n.SocksAddr, OnConnect: s.OnConnect, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer tor.Close()
		if err := tor.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.ReadyErr(); err != nil {
			t.Fatal(err)
		}
		// Wait for the descriptor on every HSDir (the three authorities):
		// a client that asks before caches the failure.
		uploaded := map[string]bool{}
		for len(uploaded) < 3 {
			select {
			case ev := <-ctl.Events():
				f := strings.Fields(ev.Raw)
				if len(f) >= 4 && f[0] == "UPLOADED" && f[1] == id {
					uploaded[f[3]] = true
				}
			case <-ctx.Done():
				t.Fatalf("descriptor uploads: %v: %v", uploaded, ctx.Err())
			}
		}
		d, err := socks.NewDialer("tcp", n.SocksAddr)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		for attempt := 0; ; attempt++ {
			got, err = fetch(ctx, d, addr)
			if err == nil || ctx.Err() != nil {
				break
			}
			t.Logf("fetch %d: %v", attempt, err)
			time.Sleep(time.Second)
		}
		if err != nil {
			t.Fatalf("fetch %s: %v", addr, err)
		}
		if !strings.HasSuffix(got, body) {
			t.Fatalf("fetched %q", got)
		}
		if r := s.stats.result[resultRelayed].Load(); r == 0 {
			t.Error("nothing relayed")
		}
		// A fresh client view for the next run: forget the descriptor.
		ctl.Signal(ctx, "NEWNYM")
		return addr
	}
	t.Run("Attach", func(t *testing.T) {
		var first string
		t.Run("First", func(t *testing.T) { first = run(t) })
		t.Run("Again", func(t *testing.T) {
			if again := run(t); again != first {
				t.Errorf("address %s after re-adding, %s before", again, first)
			}
		})
	})
	t.Run("Managed", func(t *testing.T) { managedAsTorUser(t, n, dial, target, body) })
}

// managedAsTorUser hosts the service on a managed tor that runs as
// Debian's tor user, as torgate runs it as root: tor must reach the
// sockets through their group (Config.TorUser), and the client tor of
// the network fetches the service through its SocksPort.
func managedAsTorUser(t *testing.T, n *testnet.Network, dial func(context.Context, netip.AddrPort) (net.Conn, error), target netip.AddrPort, body string) {
	if os.Geteuid() != 0 {
		if gate.CI() {
			t.Fatal("needs root (tor runs as debian-tor)")
		}
		t.Skip("needs root (tor runs as debian-tor)")
	}
	if _, err := user.Lookup("debian-tor"); err != nil {
		t.Skipf("no debian-tor user: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	// tor, as debian-tor, reads the network's files and its own data
	// directory in the state directory: the directories above them must
	// let it pass (torctl and onion make the state directory itself so).
	for _, d := range []string{filepath.Dir(n.Dir), n.Dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	top := t.TempDir()
	if err := os.Chmod(filepath.Dir(top), 0o711); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(top, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{StateDir: state, TorUser: "debian-tor", Dial: dial, Entries: []Entry{{Port: 80, Target: target}}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	addr := s.Services()[0].Address
	id := strings.TrimSuffix(addr, ".onion")
	dataDir := filepath.Join(state, "tor")
	tor, err := torctl.New(torctl.Config{
		DataDir:    dataDir,
		User:       "debian-tor",
		TorrcLines: n.ClientTorrc(),
		OnConnect:  s.OnConnect,
		Logger:     testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tor.Close()
	if err := tor.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the service on the managed tor", func() bool { return s.ReadyErr() == nil })

	// A second control connection, to follow the descriptor's uploads.
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, "unix", dataDir+"-run/control.sock")
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan torctl.Event, 256)
	ctl := torctl.NewConn(nc, func(ev torctl.Event) {
		select {
		case events <- ev:
		default:
		}
	})
	defer ctl.Close()
	if err := ctl.Authenticate(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := ctl.SetEvents(ctx, "HS_DESC"); err != nil {
		t.Fatal(err)
	}
	uploaded := map[string]bool{}
	for len(uploaded) < 3 {
		select {
		case ev := <-events:
			f := strings.Fields(ev.Raw)
			if len(f) >= 4 && f[0] == "UPLOADED" && f[1] == id {
				uploaded[f[3]] = true
			}
		case <-ctx.Done():
			t.Fatalf("descriptor uploads: %v: %v", uploaded, ctx.Err())
		}
	}
	d, err := socks.NewDialer("tcp", n.SocksAddr)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for attempt := 0; ; attempt++ {
		got, err = fetch(ctx, d, addr)
		if err == nil || ctx.Err() != nil {
			break
		}
		t.Logf("fetch %d: %v", attempt, err)
		time.Sleep(time.Second)
	}
	if err != nil || !strings.HasSuffix(got, body) {
		t.Fatalf("fetch %s: %q, %v", addr, got, err)
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fetch gets http://addr/ through the SOCKS dialer, on a circuit of its
// own.
func fetch(ctx context.Context, d *socks.Dialer, addr string) (string, error) {
	b := make([]byte, 8)
	rand.Read(b)
	c, err := d.Connect(ctx, socks.HostPort(addr, 80), socks.Auth{Username: hex.EncodeToString(b), Password: "x"})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		return "", err
	}
	out, err := io.ReadAll(c)
	return string(out), err
}
