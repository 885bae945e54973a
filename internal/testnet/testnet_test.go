package testnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/testlog"
)

// TestNetwork starts a full network with an onion service and checks,
// through the client's SocksPort: exit-resolved and IP-literal HTTP, the
// onion service, SOCKS RESOLVE, stream isolation, and that Close leaves
// no tor running.
func TestNetwork(t *testing.T) {
	Require(t)
	goroutines := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Second)
	defer cancel()

	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(testlog.Writer{TB: t}, &slog.HandlerOptions{Level: level}))
	n, err := Start(ctx, Config{Dir: t.TempDir(), Logger: log, Onion: true})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tor logs:\n%s", n.Logs(25))
		}
		if !closed {
			n.Close()
		}
	})
	rss, err := n.RSS()
	if err != nil {
		t.Errorf("RSS: %v", err)
	}
	t.Logf("block %v: keygen %v (cached %v), consensus %v, bootstrap %v, onion %v; %d tors, RSS %.1f MB",
		n.Block, n.KeygenTime.Round(time.Millisecond), n.KeysCached,
		n.ConsensusTime.Round(time.Millisecond), n.BootstrapTime.Round(time.Millisecond),
		n.OnionTime.Round(time.Millisecond), len(n.PIDs()), float64(rss)/(1<<20))

	webPort := strconv.Itoa(int(n.WebAddr.Port()))
	t.Run("HTTPByName", func(t *testing.T) {
		body, err := httpGet(ctx, n.SocksAddr, "name", "http://"+n.WebName+":"+webPort+"/")
		if err != nil || body != WebBody {
			t.Fatalf("GET by name = %q, %v; want %q", body, err, WebBody)
		}
	})
	t.Run("HTTPByIP", func(t *testing.T) {
		body, err := httpGet(ctx, n.SocksAddr, "ip", "http://"+n.WebAddr.String()+"/")
		if err != nil || body != WebBody {
			t.Fatalf("GET by IP = %q, %v; want %q", body, err, WebBody)
		}
		body, err = httpGet(ctx, n.SocksAddr, "ip", "http://"+n.WebAddr.String()+"/bytes?n=100000")
		if err != nil || len(body) != 100000 {
			t.Fatalf("GET /bytes?n=100000: %d bytes, %v", len(body), err)
		}
	})
	t.Run("Onion", func(t *testing.T) {
		body, err := httpGet(ctx, n.SocksAddr, "onion", "http://"+n.OnionAddr+"/")
		if err != nil || body != WebBody {
			t.Fatalf("GET onion = %q, %v; want %q", body, err, WebBody)
		}
	})
	t.Run("Resolve", func(t *testing.T) {
		// Mixed case: the exit and the DNS server must not care.
		got, err := socksResolve(ctx, n.SocksAddr, "WEB.test.LAN")
		if err != nil || got != n.WebAddr.Addr() {
			t.Fatalf("RESOLVE %s = %v, %v; want %v", n.WebName, got, err, n.WebAddr.Addr())
		}
		_, err = socksResolve(ctx, n.SocksAddr, "nx.test.lan")
		var se *socksError
		if !errors.As(err, &se) || se.code != 4 {
			t.Fatalf("RESOLVE nx.test.lan: err %v, want SOCKS reply 4 (host unreachable)", err)
		}
	})
	t.Run("Isolation", func(t *testing.T) { testIsolation(ctx, t, n) })
	t.Run("ClientTorrc", func(t *testing.T) { testClientTorrc(ctx, t, n) })

	pids := n.PIDs()
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			// The PID may have been reused; only a tor of ours counts.
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if bytes.Contains(cmdline, []byte(n.Dir)) {
				t.Errorf("tor pid %d still running after Close", pid)
			}
		}
	}
	if dialable(context.Background(), n.SocksAddr) || dialable(context.Background(), n.WebAddr.String()) {
		t.Errorf("SocksPort or web server still accepting after Close")
	}
	// Every goroutine of the harness (process reapers, control readers,
	// DNS and web servers) is gone; allow a moment for them to unwind.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Close, %d before Start:\n%s", g, goroutines, buf[:runtime.Stack(buf, true)])
	}
}

// testIsolation opens three streams, u1, u2, u1, keeps them open, and maps
// each to its circuit through STREAM events (matched by the SOCKS client's
// address) and through stream-status / circuit-status.
func testIsolation(ctx context.Context, t *testing.T, n *Network) {
	ctl, err := n.Control(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if err := ctl.SetEvents(ctx, "STREAM"); err != nil {
		t.Fatal(err)
	}
	target := n.WebName
	port := n.WebAddr.Port()
	users := []string{"u1", "u2", "u1"}
	conns := make([]net.Conn, len(users))
	for i, u := range users {
		c, err := socksConnect(ctx, n.SocksAddr, u, "p", target, port)
		if err != nil {
			t.Fatalf("CONNECT as %s: %v", u, err)
		}
		defer c.Close()
		conns[i] = c
	}

	// Source address -> stream ID -> circuit ID, from events.
	streamOf := map[string]string{}
	circOf := map[string]string{}
	done := func() bool {
		for _, c := range conns {
			id, ok := streamOf[c.LocalAddr().String()]
			if !ok || circOf[id] == "" {
				return false
			}
		}
		return true
	}
	timeout := time.After(10 * time.Second)
	for !done() {
		select {
		case ev := <-ctl.Events():
			s, ok := ParseStreamEvent(ev)
			if !ok {
				continue
			}
			if s.SourceAddr != "" {
				streamOf[s.SourceAddr] = s.ID
			}
			if s.Status == "SUCCEEDED" {
				circOf[s.ID] = s.CircuitID
			}
		case <-timeout:
			t.Fatalf("no STREAM events for all streams: sources %v circuits %v", streamOf, circOf)
		}
	}
	circ := make([]string, len(conns))
	for i, c := range conns {
		circ[i] = circOf[streamOf[c.LocalAddr().String()]]
	}
	t.Logf("circuits: u1=%s u2=%s u1=%s", circ[0], circ[1], circ[2])
	if circ[0] != circ[2] {
		t.Errorf("same credentials used circuits %s and %s; want one", circ[0], circ[2])
	}
	if circ[0] == circ[1] {
		t.Errorf("different credentials share circuit %s", circ[0])
	}

	// The same through GETINFO, while the streams are open.
	sc, err := n.StreamCircuits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		id := streamOf[c.LocalAddr().String()]
		if sc[id] != circ[i] {
			t.Errorf("stream-status: stream %s on circuit %q, events said %s", id, sc[id], circ[i])
		}
	}
	circs, err := n.Circuits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	userOf := map[string]string{}
	for _, c := range circs {
		userOf[c.ID] = c.SocksUsername
		if c.ID == circ[0] && (c.Status != "BUILT" || len(c.Path) != 3) {
			t.Errorf("circuit %s: status %s path %v; want BUILT, 3 hops", c.ID, c.Status, c.Path)
		}
	}
	for i, u := range users {
		if userOf[circ[i]] != u {
			t.Errorf("circuit %s has SOCKS_USERNAME %q, want %q", circ[i], userOf[circ[i]], u)
		}
	}
}

// testClientTorrc starts a second client tor from ClientTorrc, as torgate
// would in managed mode, and fetches the web page through it.
func testClientTorrc(ctx context.Context, t *testing.T, n *Network) {
	dir := t.TempDir()
	addr := blockAddr(n.Block, hostExtra)
	socks, ctlAddr := hostPort(addr, socksPort), hostPort(addr, controlPort)
	lines := append(n.ClientTorrc(),
		"DataDirectory "+dir,
		"SocksPort "+socks,
		"ControlPort "+ctlAddr,
		"CookieAuthentication 1",
		"Log notice file "+filepath.Join(dir, "notice.log"),
		"__OwningControllerProcess "+strconv.Itoa(os.Getpid()))
	torrcPath := filepath.Join(dir, "torrc")
	if err := os.WriteFile(torrcPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(n.cfg.TorPath, "--defaults-torrc", n.files.empty, "-f", torrcPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	t0 := time.Now()
	for {
		if ctl, err := DialControl(ctx, ctlAddr); err == nil {
			p, err := bootstrapProgress(ctx, ctl)
			ctl.Close()
			if err == nil && p == 100 {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("second client not bootstrapped: %v\n%s", ctx.Err(), strings.Join(logTail(filepath.Join(dir, "notice.log"), 20), "\n"))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("second client bootstrapped in %v", time.Since(t0).Round(time.Millisecond))
	body, err := httpGet(ctx, socks, "second", "http://"+n.WebName+":"+strconv.Itoa(int(n.WebAddr.Port()))+"/")
	if err != nil || body != WebBody {
		t.Fatalf("GET through second client = %q, %v", body, err)
	}
}

// --- a minimal SOCKS5 client with tor's RESOLVE extension ---

// socksError is a SOCKS5 reply code other than success.
type socksError struct{ code byte }

func (e *socksError) Error() string { return fmt.Sprintf("socks reply %d", e.code) }

const (
	socksCmdConnect = 0x01
	socksCmdResolve = 0xF0 // tor extension
)

// socksConnect dials addr and CONNECTs to host:port, authenticating with
// user/pass (tor's isolation credentials) when user is not empty.
func socksConnect(ctx context.Context, addr, user, pass, host string, port uint16) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := socksRequest(c, user, pass, socksCmdConnect, host, port); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// socksResolve asks tor to resolve name at an exit.
func socksResolve(ctx context.Context, addr, name string) (netip.Addr, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	return socksRequest(c, "resolve", "p", socksCmdResolve, name, 0)
}

// socksRequest runs the greeting, optional RFC 1929 authentication and one
// request, and returns the bound address of the reply.
func socksRequest(c net.Conn, user, pass string, cmd byte, host string, port uint16) (netip.Addr, error) {
	method := byte(0x00)
	if user != "" {
		method = 0x02
	}
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		return netip.Addr{}, err
	}
	var rep [2]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return netip.Addr{}, err
	}
	if rep[0] != 5 || rep[1] != method {
		return netip.Addr{}, fmt.Errorf("socks method reply %v", rep)
	}
	if method == 0x02 {
		msg := []byte{1, byte(len(user))}
		msg = append(msg, user...)
		msg = append(msg, byte(len(pass)))
		msg = append(msg, pass...)
		if _, err := c.Write(msg); err != nil {
			return netip.Addr{}, err
		}
		if _, err := io.ReadFull(c, rep[:]); err != nil {
			return netip.Addr{}, err
		}
		if rep[1] != 0 {
			return netip.Addr{}, fmt.Errorf("socks auth failed: %v", rep)
		}
	}
	req := []byte{5, cmd, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		req = append(req, 1)
		req = append(req, a.AsSlice()...)
	} else {
		req = append(req, 3, byte(len(host)))
		req = append(req, host...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := c.Write(req); err != nil {
		return netip.Addr{}, err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return netip.Addr{}, err
	}
	if hdr[0] != 5 {
		return netip.Addr{}, fmt.Errorf("socks reply version %d", hdr[0])
	}
	if hdr[1] != 0 {
		// Tor pads failed RESOLVE replies with ATYP 0; don't parse them.
		return netip.Addr{}, &socksError{code: hdr[1]}
	}
	var alen int
	switch hdr[3] {
	case 1:
		alen = 4
	case 4:
		alen = 16
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return netip.Addr{}, err
		}
		alen = int(l[0])
	default:
		return netip.Addr{}, fmt.Errorf("socks reply address type %d", hdr[3])
	}
	rest := make([]byte, alen+2)
	if _, err := io.ReadFull(c, rest); err != nil {
		return netip.Addr{}, err
	}
	a, _ := netip.AddrFromSlice(rest[:alen])
	return a, nil
}

// httpGet fetches url through the SOCKS port with isolation user u; the
// host name is passed to tor, so the exit resolves it.
func httpGet(ctx context.Context, socksAddr, user, url string) (string, error) {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, p, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			port, err := strconv.ParseUint(p, 10, 16)
			if err != nil {
				return nil, err
			}
			return socksConnect(ctx, socksAddr, user, "p", host, uint16(port))
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("HTTP %s", resp.Status)
	}
	return string(b), nil
}
