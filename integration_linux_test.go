package torgate_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// TestIntegrationCurlThroughTUN: a namespace whose only route is a real
// TUN owned by the router; curl inside it fetches a page served on the
// host's loopback, reached only through the SOCKS server.
func TestIntegrationCurlThroughTUN(t *testing.T) {
	nstest.RequireRoot(t, "curl")
	ws := nstest.New(t, nstest.Options{})

	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello through torgate, host=%s\n", r.Host)
	}))
	defer web.Close()
	srv := sockstest.NewServer(t, sockstest.Config{
		RequireAuth: true,
		Connect: sockstest.DialTo(func(socks.Addr) string {
			return web.Listener.Addr().String()
		}),
	})

	r, err := torgate.New(torgate.Config{Device: ws.Dev, Upstream: srv.Dialer().Dial})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, url := range []string{"http://192.0.2.10/", "http://[2001:db8::10]/"} {
		out, err := ws.Run(ctx, "curl", "-sS", "--max-time", "10", url)
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", url, err, out)
		}
		if !strings.Contains(out, "hello through torgate") {
			t.Fatalf("curl %s: unexpected body %q", url, out)
		}
	}
	reqs := srv.Requests()
	if len(reqs) != 2 || reqs[0].Dst.String() != "192.0.2.10:80" || reqs[1].Dst.IP.String() != "2001:db8::10" {
		t.Fatalf("SOCKS requests %+v, want the two original destinations", reqs)
	}
	// The namespace has no other way out: a direct connection to the
	// host's loopback web server is impossible from inside.
	host, port, _ := net.SplitHostPort(web.Listener.Addr().String())
	if out, err := ws.Run(ctx, "curl", "-sS", "--max-time", "2", "http://"+net.JoinHostPort(host, port)+"/"); err == nil {
		t.Fatalf("namespace reached the host's loopback directly: %s", out)
	}
}

// TestIntegrationDNS: real dig and curl by name inside the namespace; the
// name, not an address, arrives in the CONNECT.
func TestIntegrationDNS(t *testing.T) {
	nstest.RequireRoot(t, "curl", "dig")
	ws := nstest.New(t, nstest.Options{Nameserver: "10.152.152.10"})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "named host=%s\n", r.Host)
	}))
	defer web.Close()
	srv := sockstest.NewServer(t, sockstest.Config{
		Connect: sockstest.DialTo(func(socks.Addr) string { return web.Listener.Addr().String() }),
	})
	r, err := torgate.New(torgate.Config{Device: ws.Dev, Upstream: srv.Dialer().Dial})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var va string // the first answer: addresses are drawn at random
	for _, args := range [][]string{
		{"+short", "+time=3", "+tries=1", "A", "site.example.test"},
		{"+short", "+time=3", "+tries=1", "+tcp", "AAAA", "site.example.test", "@198.51.100.53"},
		{"+short", "+time=3", "+tries=1", "-x", ""},
	} {
		if args[len(args)-1] == "" {
			args[len(args)-1] = va
		}
		out, err := ws.Run(ctx, "dig", args...)
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("dig %v: %v %q", args, err, out)
		}
		if va == "" {
			va = strings.TrimSpace(out)
		}
		t.Logf("dig %v: %s", args, strings.TrimSpace(out))
	}
	out, err := ws.Run(ctx, "curl", "-sS", "--max-time", "10", "http://site.example.test:8080/")
	if err != nil || !strings.Contains(out, "named host=site.example.test:8080") {
		t.Fatalf("curl by name: %v\n%s", err, out)
	}
	reqs := srv.Requests()
	if last := reqs[len(reqs)-1]; last.Dst.Name != "site.example.test" || last.Dst.Port != 8080 {
		t.Fatalf("CONNECT carried %v, want site.example.test:8080", last.Dst)
	}
}
