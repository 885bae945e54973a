package torgate_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/testnet"
	"github.com/torgate/torgate/internal/torctl"
	"github.com/torgate/torgate/socks"
)

// Bounds of the failure checks: generous for a loaded 2-core box; the
// measured times are logged.
const (
	hangBound    = 20 * time.Second // SIGSTOP -> not ready (probe: 2s + 5s)
	refuseBound  = 3 * time.Second  // a new flow's RST while not ready
	recoverBound = 30 * time.Second
)

// ownTor is a client tor on the test network that the test can stop,
// kill and restart (the network's own client must stay up).
type ownTor struct {
	t                 *testing.T
	dir, torrc        string
	control, socksAdr string
	cmd               *exec.Cmd
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startOwnTor(t *testing.T, n *testnet.Network) *ownTor {
	o := &ownTor{t: t, dir: t.TempDir(), control: freePort(t), socksAdr: freePort(t)}
	lines := append(n.ClientTorrc(),
		"DataDirectory "+filepath.Join(o.dir, "data"),
		"ControlPort "+o.control,
		"SocksPort "+o.socksAdr+" IsolateSOCKSAuth ExtendedErrors",
		"CookieAuthentication 1",
		"MapAddress "+byIPAddr+" "+n.WebAddr.Addr().String(),
		"Log notice file "+filepath.Join(o.dir, "notice.log"),
	)
	o.torrc = filepath.Join(o.dir, "torrc")
	if err := os.WriteFile(o.torrc, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.start()
	t.Cleanup(o.kill)
	return o
}

func (o *ownTor) start() {
	torPath, _, err := testnet.Binaries()
	if err != nil {
		o.t.Fatal(err)
	}
	o.cmd = exec.Command(torPath, "-f", o.torrc, "--defaults-torrc", "/dev/null")
	if err := o.cmd.Start(); err != nil {
		o.t.Fatal(err)
	}
}

// kill ends the tor (even a stopped one) and reaps it.
func (o *ownTor) kill() {
	if o.cmd != nil && o.cmd.Process != nil {
		o.cmd.Process.Signal(syscall.SIGCONT)
		o.cmd.Process.Kill()
		o.cmd.Wait()
		o.cmd = nil
	}
}

func (o *ownTor) signal(s syscall.Signal) {
	if err := o.cmd.Process.Signal(s); err != nil {
		o.t.Fatal(err)
	}
}

// requestServer listens on ip and, for every connection, reads an HTTP
// request's head and hands the connection to answer, which owns it.
func requestServer(t *testing.T, ip netip.Addr, answer func(c net.Conn)) netip.AddrPort {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
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
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil || l == "\r\n" {
						break
					}
				}
				answer(c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// slowServer serves every request an HTTP/1.0 answer with no
// Content-Length, streaming for about a minute: its end is the end of
// the connection, so a truncation is only visible as an error.
func slowServer(t *testing.T, ip netip.Addr) netip.AddrPort {
	return requestServer(t, ip, func(c net.Conn) {
		defer c.Close()
		c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"))
		chunk := make([]byte, 16<<10)
		for range 6000 {
			if _, err := c.Write(chunk); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// download is a download of the slow server in the namespace.
type download struct {
	cmd    *exec.Cmd
	stderr strings.Builder
	done   chan error
}

func startTransfer(t *testing.T, ws *nstest.Workstation, url string) *download {
	tr := &download{done: make(chan error, 1)}
	tr.cmd = ws.Command(t.Context(), "curl", "-sS", "--max-time", "120", "-o", "/dev/null", url)
	tr.cmd.Stderr = &tr.stderr
	if err := tr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { tr.done <- tr.cmd.Wait() }()
	time.Sleep(3 * time.Second) // under way
	select {
	case err := <-tr.done:
		t.Fatalf("transfer ended early: %v %s", err, tr.stderr.String())
	default:
	}
	return tr
}

// wait returns curl's exit code, failing after bound.
func (tr *download) wait(t *testing.T, bound time.Duration) int {
	select {
	case err := <-tr.done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(bound):
		tr.cmd.Process.Kill()
		<-tr.done
		t.Fatalf("transfer still running %v later", bound)
		return -1
	}
}

func waitUntil(t *testing.T, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > bound {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(began)
}

// refused checks that a new flow gets a RST at once (curl exit 7) and
// DNS a SERVFAIL, and returns how long the refusal took.
func refused(t *testing.T, g *gateway, url string) time.Duration {
	t.Helper()
	began := time.Now()
	out, code := g.curl(t.Context(), "--max-time", "10", url)
	took := time.Since(began)
	if code != 7 {
		t.Errorf("new flow while not ready: curl exit %d (%s), want 7 (connection refused)", code, strings.TrimSpace(out))
	}
	if took > refuseBound {
		t.Errorf("new flow refused after %v, want at once", took)
	}
	dig, _ := g.ws.Run(t.Context(), "dig", "+time=2", "+tries=1", "A", "other.test.lan")
	if !strings.Contains(dig, "status: SERVFAIL") {
		t.Errorf("DNS while not ready:\n%s\nwant SERVFAIL", dig)
	}
	return took
}

// checkFailures plays the failures of issue 12 against a tor of the
// test's own, attached: SIGSTOP during a transfer, SIGKILL during a
// transfer without Content-Length, the reconnect after a restart, and a
// plain SOCKS upstream killed.
func checkFailures(t *testing.T, n *testnet.Network) {
	web := slowServer(t, n.WebAddr.Addr())
	url := "http://" + byIPAddr + ":" + strconv.Itoa(int(web.Port())) + "/"
	o := startOwnTor(t, n)
	waitUntil(t, recoverBound, "own tor's control port", func() bool {
		c, err := net.Dial("tcp", o.control)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	g := newGateway(t, torgate.Config{AttachedTor: &torgate.AttachedTor{ControlAddr: o.control}})
	var report []string

	t.Run("Stopped", func(t *testing.T) {
		tr := startTransfer(t, g.ws, url)
		o.signal(syscall.SIGSTOP)
		notReady := waitUntil(t, hangBound, "not ready after SIGSTOP", func() bool { return !g.tor.Ready() })
		reason := g.tor.Status().Reason()
		rst := refused(t, g, url)
		code := tr.wait(t, 10*time.Second)
		if code == 0 {
			t.Errorf("the transfer through the stopped tor ended cleanly")
		}
		o.signal(syscall.SIGCONT)
		back := waitUntil(t, recoverBound, "ready after SIGCONT", g.tor.Ready)
		g.fetch(t.Context(), ipURL(n, "/"))
		report = append(report, fmt.Sprintf("SIGSTOP -> not ready %v (status %q); new flow refused in %v; transfer: curl exit %d; SIGCONT -> ready %v",
			notReady.Round(time.Millisecond), reason, rst.Round(time.Millisecond), code, back.Round(time.Millisecond)))
	})

	t.Run("Killed", func(t *testing.T) {
		// An attached Tor's process is not inspected: the end of the
		// transfer its death closes is judged by Confirm alone. The kill
		// closes the control connection, so Confirm answers false at
		// once, not at the probe deadline.
		if gone, known := g.tor.ProcessState(); gone || known {
			t.Errorf("attached tor: ProcessState = gone %v, known %v; want neither (Confirm decides)", gone, known)
		}
		tr := startTransfer(t, g.ws, url)
		killed := time.Now()
		o.kill()
		notReady := waitUntil(t, 5*time.Second, "not ready after SIGKILL", func() bool { return !g.tor.Ready() })
		asked, answer := time.Now(), make(chan bool, 1)
		g.tor.Confirm(func(alive bool) { answer <- alive })
		var confirmTook time.Duration
		select {
		case alive := <-answer:
			if confirmTook = time.Since(asked); alive {
				t.Errorf("killed attached tor: Confirm answered alive")
			}
		case <-time.After(torctl.DefaultProbeDeadline):
			t.Errorf("killed attached tor: no answer from Confirm by the probe deadline (%v); the closed control connection should answer false at once", torctl.DefaultProbeDeadline)
		}
		code := tr.wait(t, 10*time.Second)
		ended := time.Since(killed)
		if code == 0 {
			t.Errorf("curl exited 0 for a download without Content-Length cut off by the kill: a truncation looked complete (%s)", tr.stderr.String())
		}
		if ended >= torctl.DefaultProbeDeadline {
			t.Errorf("transfer ended %v after the kill: not before the probe deadline (%v), so not by the closed control connection", ended.Round(time.Millisecond), torctl.DefaultProbeDeadline)
		}
		rst := refused(t, g, url)
		// Restart: the attached control port comes back; torgate uses it.
		o.start()
		started := time.Now()
		listening := waitUntil(t, recoverBound, "restarted tor's control port", func() bool {
			c, err := net.Dial("tcp", o.control)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		connected := waitUntil(t, recoverBound, "control reconnected", func() bool { return g.tor.Status().Connected })
		ready := waitUntil(t, 90*time.Second, "ready after restart", g.tor.Ready)
		g.fetch(t.Context(), ipURL(n, "/"))
		report = append(report, fmt.Sprintf("SIGKILL -> not ready %v, Confirm false in %v; transfer ended %v after the kill, curl exit %d (%s); new flow refused in %v; restart: control port up %v after exec, torctl reconnected %v later, ready %v after that (total %v)",
			notReady.Round(time.Microsecond), confirmTook.Round(time.Microsecond), ended.Round(time.Millisecond), code, strings.TrimSpace(tr.stderr.String()), rst.Round(time.Millisecond),
			listening.Round(time.Millisecond), connected.Round(time.Millisecond), ready.Round(time.Millisecond), time.Since(started).Round(time.Millisecond)))
	})

	t.Run("Terminated", func(t *testing.T) {
		// SIGTERM: a client tor exits at once, but in its own time: it
		// closes its connections itself (tor_cleanup frees every
		// connection) before the kernel marks the process exiting. A
		// stream it closes that way reads as a clean end, and only
		// Confirm (Tor's main loop never answers again) makes it a RST;
		// the download must still end as an error.
		tr := startTransfer(t, g.ws, url)
		termed := time.Now()
		o.signal(syscall.SIGTERM)
		o.cmd.Wait()
		o.cmd = nil
		exited := time.Since(termed)
		code := tr.wait(t, 10*time.Second)
		if code == 0 {
			t.Errorf("curl exited 0 for a download without Content-Length cut off by tor's SIGTERM: a truncation looked complete (%s)", tr.stderr.String())
		}
		o.start()
		ready := waitUntil(t, 90*time.Second, "ready after restart", g.tor.Ready)
		g.fetch(t.Context(), ipURL(n, "/"))
		report = append(report, fmt.Sprintf("SIGTERM -> tor exited %v later; transfer: curl exit %d (%s); ready again %v after the restart",
			exited.Round(time.Millisecond), code, strings.TrimSpace(tr.stderr.String()), ready.Round(time.Millisecond)))
	})

	t.Run("PlainSocksKilled", func(t *testing.T) {
		ws := nstest.New(t, nstest.Options{Nameserver: gatewayDNS})
		up, err := socks.NewDialer("tcp", o.socksAdr)
		if err != nil {
			t.Fatal(err)
		}
		r, err := torgate.New(torgate.Config{Device: ws.Dev, Upstream: up.Dial, Logger: testlog.New(t, slog.LevelInfo)})
		if err != nil {
			t.Fatal(err)
		}
		r.Start()
		t.Cleanup(func() { r.Close() })
		if err := r.UpstreamErr(); err != nil {
			t.Fatalf("plain SOCKS to a live tor not ready: %v", err)
		}
		pg := &gateway{t: t, ws: ws, router: r}
		pg.fetch(t.Context(), ipURL(n, "/"))
		o.kill()
		// No flow: the periodic probe notices (every 5 s).
		notReady := waitUntil(t, hangBound, "plain SOCKS not ready after the kill", func() bool { return r.UpstreamErr() != nil })
		rst := refused(t, pg, url)
		report = append(report, fmt.Sprintf("plain SOCKS upstream killed -> not ready %v without traffic (%v); new flow refused in %v",
			notReady.Round(time.Millisecond), r.UpstreamErr(), rst.Round(time.Millisecond)))
	})
	for _, l := range report {
		t.Log(l)
	}
}
