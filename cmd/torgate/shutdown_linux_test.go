package main

import (
	"context"
	"io"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/nstest"
)

// TestShutdownLogged: "torgate run" logs its stop: the reason (the
// signal), the flows the stop ended and how long it ran and took (issue
// 22: nothing was logged at shutdown). On the way it checks that the
// packet loop's counters name the LAN device in --lan mode.
func TestShutdownLogged(t *testing.T) {
	nstest.RequireRoot(t, "nsenter")
	g := newGwNet(t, buildTorgate(t), gwOptions{})
	g.startTorgate()
	p := g.tg
	// One flow open through torgate when it stops: an echo via SOCKS.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := dialIn(ctx, g.ws, "tcp", net.JoinHostPort(inetAddr4, "7"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("echo through torgate: %v", err)
	}
	// In --lan mode the packet loop's device is the LAN's (issue 22: its
	// counters were named torgate_tun_*).
	resp, err := g.adminClient().Get("http://" + gwAdmin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if m := regexp.MustCompile(`(?m)^torgate_device_packets_in_total\{kind="lan"\} [1-9]`); !m.Match(body) {
		t.Errorf("no torgate_device_packets_in_total{kind=\"lan\"} above 0 in /metrics")
	}
	if strings.Contains(string(body), "torgate_tun_") {
		t.Errorf("torgate_tun_* metrics in --lan mode")
	}
	g.stopTorgate(syscall.SIGTERM)
	line := regexp.MustCompile(`msg="torgate stopped" reason="terminated signal received" flows_ended=1 uptime=[0-9.]+m?s shutdown=[0-9.]+m?s`)
	if !line.MatchString(p.out.String()) {
		t.Errorf("no shutdown line matching %s:\n%s", line, p.out)
	}
}

// TestCheckGatewayDown: "torgate check" on a workstation whose gateway
// is down (torgate stopped: the LAN closed, nothing answers) says the
// gateway is unreachable, not "port 53 is not intercepted", which reads
// as a leak (issue 22).
func TestCheckGatewayDown(t *testing.T) {
	nstest.RequireRoot(t, "nsenter")
	bin := buildTorgate(t)
	g := newGwNet(t, bin, gwOptions{})
	g.startTorgate()
	g.stopTorgate(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	out, err := g.wsRun(ctx, bin, "check", "--url", url4, "--timeout", "3s", "--socks-port", "0", "--control-port", "0")
	t.Logf("torgate check, gateway down:\n%s", out)
	if exitCode(err) != 1 {
		t.Errorf("torgate check with the gateway down: %v, want exit status 1", err)
	}
	if !strings.Contains(out, "FAIL gateway       gateway "+gwLAN4+" unreachable") {
		t.Errorf("no \"gateway unreachable\" line")
	}
	if strings.Contains(out, "not intercepted") || !strings.Contains(out, "FAIL dns-intercept gateway unreachable") {
		t.Errorf("the intercept check reads as a leak, or does not say why it cannot tell")
	}
}
