package main

import (
	"context"
	"io"
	"net"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/nstest"
)

// TestShutdownLogged: "torgate run" logs its stop: the reason (the
// signal), the flows the stop ended and how long it ran and took (issue
// 22: nothing was logged at shutdown).
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
	g.stopTorgate(syscall.SIGTERM)
	line := regexp.MustCompile(`msg="torgate stopped" reason="terminated signal received" flows_ended=1 uptime=[0-9.]+m?s shutdown=[0-9.]+m?s`)
	if !line.MatchString(p.out.String()) {
		t.Errorf("no shutdown line matching %s:\n%s", line, p.out)
	}
}
