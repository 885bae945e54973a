package admin

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestListenRefusesNonLoopback: anyone who reaches the endpoint can
// rotate identities and read traffic volumes, so Listen binds loopback
// and unix sockets only; any other address is ErrNotLocal before a
// socket is opened, and a malformed one is an error.
func TestListenRefusesNonLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		notLoc  bool // want ErrNotLocal (else some other error)
		comment string
	}{
		{addr: "0.0.0.0:9052", notLoc: true, comment: "every IPv4 interface"},
		{addr: "[::]:9052", notLoc: true, comment: "every interface"},
		{addr: "192.0.2.1:9052", notLoc: true, comment: "a LAN address"},
		{addr: "10.152.152.10:9052", notLoc: true, comment: "the workstations' side"},
		{addr: "[fd19:7a2b::1]:9052", notLoc: true, comment: "a ULA"},
		{addr: "example.com:9052", comment: "a name: no lookup is done"},
		{addr: "127.0.0.1", comment: "no port"},
		{addr: "127.0.0.1:0", comment: "port 0"},
		{addr: "", comment: "empty"},
		{addr: "unix:", comment: "empty socket path"},
	} {
		t.Run(tc.comment, func(t *testing.T) {
			ln, err := Listen(tc.addr)
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%q) = %v, want an error", tc.addr, ln.Addr())
			}
			if got := errors.Is(err, ErrNotLocal); got != tc.notLoc {
				t.Fatalf("Listen(%q): %v; errors.Is(ErrNotLocal) = %v, want %v", tc.addr, err, got, tc.notLoc)
			}
		})
	}
}

// freePort returns a TCP port that was free on host a moment ago (admin
// addresses need an explicit port).
func freePort(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("no %s: %v", host, err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestListenLoopback: 127.0.0.0/8, ::1 and "localhost" (read as
// 127.0.0.1, without a lookup) are accepted, and bound on loopback.
func TestListenLoopback(t *testing.T) {
	for _, tc := range []struct {
		host, prefix string
		want         netip.Addr
	}{
		{host: "127.0.0.1", prefix: "127.0.0.1:", want: netip.MustParseAddr("127.0.0.1")},
		{host: "127.0.0.1", prefix: "localhost:", want: netip.MustParseAddr("127.0.0.1")},
		{host: "::1", prefix: "[::1]:", want: netip.MustParseAddr("::1")},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			addr := tc.prefix + freePort(t, tc.host)
			ln, err := Listen(addr)
			if err != nil {
				t.Fatalf("Listen(%q): %v", addr, err)
			}
			defer ln.Close()
			if got := ln.Addr().(*net.TCPAddr).AddrPort().Addr(); got != tc.want {
				t.Fatalf("Listen(%q) bound %v, want %v", addr, got, tc.want)
			}
		})
	}
}

// TestListenUnix: a unix socket, as a path or "unix:PATH", replaces a
// stale socket file, is made 0600, and Client reaches it.
func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	for _, addr := range []string{filepath.Join(dir, "a.sock"), "unix:" + filepath.Join(dir, "b.sock")} {
		t.Run(addr, func(t *testing.T) {
			path := strings.TrimPrefix(addr, "unix:")
			if err := os.WriteFile(path, []byte("stale"), 0o644); err != nil {
				t.Fatal(err)
			}
			ln, err := Listen(addr)
			if err != nil {
				t.Fatalf("Listen(%q): %v", addr, err)
			}
			defer ln.Close()
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: mode %v, want a socket with 0600", path, fi.Mode())
			}
			srv := &http.Server{Handler: Handler(Config{Healthy: func() error { return nil }})}
			go srv.Serve(ln)
			defer srv.Close()
			c, base, err := Client(addr)
			if err != nil {
				t.Fatal(err)
			}
			code, body := do(t, c, http.MethodGet, base+"/healthz")
			if code != http.StatusOK || body != "ok\n" {
				t.Fatalf("GET /healthz over %s: %d %q", addr, code, body)
			}
		})
	}
}

// TestClientLoopback: Client reaches a loopback listener at the address
// Listen was given, "localhost:PORT" included.
func TestClientLoopback(t *testing.T) {
	addr := "localhost:" + freePort(t, "127.0.0.1")
	ln, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(Config{Ready: func() error { return nil }, Mode: "attach"})}
	go srv.Serve(ln)
	defer srv.Close()
	c, base, err := Client(addr)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := do(t, c, http.MethodGet, base+"/readyz"); code != http.StatusOK || body != "ok (mode attach)\n" {
		t.Fatalf("GET /readyz: %d %q", code, body)
	}
	if _, _, err := Client("0.0.0.0:1"); err != nil {
		// Client does not police the address (Listen does); it only
		// parses it.
		t.Fatalf("Client: %v", err)
	}
	if _, _, err := Client("example.com:80"); err == nil {
		t.Fatal("Client accepted a name")
	}
}

func do(t *testing.T, c *http.Client, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestEndpoints drives every endpoint of Handler: each answer's status
// and body, what reaches the router's funcs, and 404 for an endpoint
// whose func is nil.
func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	flows := prometheus.NewCounter(prometheus.CounterOpts{Name: "torgate_flows_total", Help: "test"})
	reg.MustRegister(flows)
	flows.Add(3)
	var healthErr, readyErr, newnymErr error
	var all int
	var sources []netip.Addr
	srv := httptest.NewServer(Handler(Config{
		Gatherer:       reg,
		Healthy:        func() error { return healthErr },
		Ready:          func() error { return readyErr },
		Mode:           "managed",
		NewIdentity:    func(a netip.Addr) error { sources = append(sources, a); return newnymErr },
		NewIdentityAll: func() error { all++; return newnymErr },
	}))
	defer srv.Close()
	c := srv.Client()

	for _, tc := range []struct {
		name         string
		method, path string
		setup        func()
		code         int
		body         string // exact, or a prefix if it ends in "*"
	}{
		{name: "metrics", method: "GET", path: "/metrics", code: 200, body: "# HELP torgate_flows_total test\n# TYPE torgate_flows_total counter\ntorgate_flows_total 3\n"},
		{name: "healthy", method: "GET", path: "/healthz", code: 200, body: "ok\n"},
		{name: "unhealthy", method: "GET", path: "/healthz", setup: func() { healthErr = errors.New("packet loop ended") },
			code: 503, body: "not ok: packet loop ended\n"},
		{name: "ready", method: "GET", path: "/readyz", code: 200, body: "ok (mode managed)\n"},
		{name: "not ready", method: "GET", path: "/readyz", setup: func() { readyErr = errors.New("bootstrap 40%") },
			code: 503, body: "not ok (mode managed): bootstrap 40%\n"},
		{name: "newnym all", method: "POST", path: "/newnym", code: 200, body: "ok\n"},
		{name: "newnym source", method: "POST", path: "/newnym?source=10.152.152.11", code: 200, body: "ok\n"},
		{name: "newnym mapped source", method: "POST", path: "/newnym?source=::ffff:10.152.152.12", code: 200, body: "ok\n"},
		{name: "newnym bad source", method: "POST", path: "/newnym?source=ws1", code: 400, body: "bad source address\n"},
		{name: "newnym fails", method: "POST", path: "/newnym", setup: func() { newnymErr = errors.New("tor not ready") },
			code: 503, body: "tor not ready\n"},
		{name: "newnym unknown workstation", method: "POST", path: "/newnym?source=10.152.152.99",
			setup: func() { newnymErr = NotFound(errors.New("unknown workstation 10.152.152.99")) },
			code:  404, body: "unknown workstation 10.152.152.99\n"},
		{name: "newnym by GET", method: "GET", path: "/newnym", code: 405, body: "*"},
		{name: "probe by POST", method: "POST", path: "/healthz", code: 405, body: "*"},
		{name: "unknown path", method: "GET", path: "/debug/pprof/", code: 404, body: "*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			code, body := do(t, c, tc.method, srv.URL+tc.path)
			if code != tc.code {
				t.Fatalf("%s %s: status %d, want %d (body %q)", tc.method, tc.path, code, tc.code, body)
			}
			if p, ok := strings.CutSuffix(tc.body, "*"); ok && !strings.HasPrefix(body, p) || !ok && body != tc.body {
				t.Fatalf("%s %s: body %q, want %q", tc.method, tc.path, body, tc.body)
			}
		})
	}
	// "newnym all" and "newnym fails"; the two sources, the mapped one
	// unmapped; the bad one reached nothing.
	if all != 2 {
		t.Errorf("NewIdentityAll called %d times, want 2", all)
	}
	want := []netip.Addr{netip.MustParseAddr("10.152.152.11"), netip.MustParseAddr("10.152.152.12"), netip.MustParseAddr("10.152.152.99")}
	if !slices.Equal(sources, want) {
		t.Errorf("NewIdentity got %v, want %v", sources, want)
	}
}

// TestNilFuncsDisableEndpoints: an endpoint whose func (or Gatherer) is
// nil answers 404, so a caller cannot mistake it for a working one.
func TestNilFuncsDisableEndpoints(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{}))
	defer srv.Close()
	for _, r := range []struct{ method, path string }{
		{"GET", "/metrics"}, {"GET", "/healthz"}, {"GET", "/readyz"},
		{"POST", "/newnym"}, {"POST", "/newnym?source=10.152.152.11"},
	} {
		if code, body := do(t, srv.Client(), r.method, srv.URL+r.path); code != http.StatusNotFound {
			t.Errorf("%s %s with nil funcs: %d %q, want 404", r.method, r.path, code, body)
		}
	}
	// Only one of the two newnym funcs: the other scope is 404.
	var called bool
	srv2 := httptest.NewServer(Handler(Config{NewIdentityAll: func() error { called = true; return nil }}))
	defer srv2.Close()
	if code, _ := do(t, srv2.Client(), "POST", srv2.URL+"/newnym?source=10.152.152.11"); code != http.StatusNotFound {
		t.Errorf("per-source newnym without NewIdentity: %d, want 404", code)
	}
	if called {
		t.Error("per-source newnym called NewIdentityAll")
	}
}
