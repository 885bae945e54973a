package torgate_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// TestIntegrationLAN: a workstation namespace on a veth whose other end
// is the gateway namespace's eth1; the router serves eth1 with Config.LAN.
// curl over IPv4 and IPv6 and dig reach the web server only through the
// SOCKS server; the gateway's own address is refused, not forwarded.
func TestIntegrationLAN(t *testing.T) {
	nstest.RequireRoot(t, "curl", "dig")
	b := make([]byte, 3)
	rand.Read(b)
	ws, gw := "tgrws-"+hex.EncodeToString(b), "tgrgw-"+hex.EncodeToString(b)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	for _, ns := range []string{ws, gw} {
		ip("netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	}
	nstest.RemoveLANNamespaces(t, gw, "eth1")
	ip("link", "add", "veth-ws", "netns", ws, "type", "veth", "peer", "name", "eth1", "netns", gw)
	for _, c := range [][]string{
		{"-n", ws, "link", "set", "lo", "up"},
		{"-n", ws, "addr", "add", "10.152.152.11/18", "dev", "veth-ws"},
		{"-n", ws, "addr", "add", "fd19:7a2b::11/64", "dev", "veth-ws", "nodad"},
		{"-n", ws, "link", "set", "veth-ws", "up"},
		{"-n", ws, "route", "add", "default", "via", "10.152.152.10"},
		{"-n", ws, "-6", "route", "add", "default", "via", "fd19:7a2b::1"},
		{"-n", gw, "addr", "add", "10.152.152.10/18", "dev", "eth1"},
		{"-n", gw, "addr", "add", "fd19:7a2b::1/64", "dev", "eth1", "nodad"},
		{"-n", gw, "link", "set", "eth1", "up"},
	} {
		ip(c...)
	}

	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello over the LAN, host=%s\n", r.Host)
	}))
	defer web.Close()
	srv := sockstest.NewServer(t, sockstest.Config{
		Connect: sockstest.DialTo(func(socks.Addr) string { return web.Listener.Addr().String() }),
	})

	// The router is built on a thread inside gw (with gw's sysfs, which
	// Open reads); its SOCKS dials happen on other threads, in the host
	// namespace, where the SOCKS server listens on loopback.
	var r *torgate.Router
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return err
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return err
			}
			f, err := os.Open("/var/run/netns/" + gw)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				return err
			}
			if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
				return err
			}
			r, err = torgate.New(torgate.Config{LAN: []string{"eth1"}, Upstream: srv.Dialer().Dial})
			return err
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Close()
	if err := r.LAN().Ready(); err != nil {
		t.Fatalf("LANReady: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	run := func(name string, args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ws, name}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, url := range []string{"http://192.0.2.10/", "http://[2001:db8:20::10]/"} {
		out, err := run("curl", "-sS", "--max-time", "10", url)
		if err != nil || !strings.Contains(out, "hello over the LAN") {
			t.Fatalf("curl %s: %v\n%s", url, err, out)
		}
	}
	for _, server := range []string{"@10.152.152.10", "@fd19:7a2b::1"} {
		out, err := run("dig", "+short", "+time=3", "+tries=2", server, "A", "site.example.test")
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("dig %s: %v %q", server, err, out)
		}
	}
	// The gateway's own address is no destination: refused at once.
	if out, err := run("curl", "-sS", "--max-time", "10", "http://10.152.152.10:22/"); err == nil || !strings.Contains(out, "Failed to connect") {
		t.Fatalf("curl to the gateway's own address: %v %s", err, out)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 || reqs[0].Dst.String() != "192.0.2.10:80" {
		t.Fatalf("SOCKS requests %+v, want the two curls only", reqs)
	}
}
