package main

import (
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
)

// TestCheckGateway: a gateway whose nameserver answered, or that accepts
// or resets a TCP connection to port 53, is there; one that answers
// nothing (time-out, no neighbour) is "unreachable", which is no DNS
// leak (issue 22). The real silence of a stopped gateway is
// TestCheckGatewayDown's.
func TestCheckGateway(t *testing.T) {
	ctx := context.Background()
	dialErr := func(err error) func(context.Context, string, string) (net.Conn, error) {
		return func(ctx context.Context, _, addr string) (net.Conn, error) {
			if addr != "10.152.152.10:53" {
				t.Errorf("dialled %s, want the gateway's port 53", addr)
			}
			if err != nil {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
			}
			a, b := net.Pipe()
			b.Close()
			return a, nil
		}
	}
	for _, c := range []struct {
		name      string
		answered  bool
		dialErr   error
		reachable bool
	}{
		{name: "nameserver answered", answered: true, dialErr: syscall.ETIMEDOUT, reachable: true},
		{name: "accepted", dialErr: nil, reachable: true},
		{name: "reset", dialErr: syscall.ECONNREFUSED, reachable: true},
		{name: "time-out", dialErr: context.DeadlineExceeded, reachable: false},
		{name: "no neighbour", dialErr: syscall.EHOSTUNREACH, reachable: false},
	} {
		ok, msg, err := checkGateway(ctx, "10.152.152.10", c.answered, dialErr(c.dialErr))
		if ok != c.reachable || (err == nil) != c.reachable {
			t.Errorf("%s: reachable %v (%q, %v), want %v", c.name, ok, msg, err, c.reachable)
		}
		if !c.reachable && (err == nil || !strings.Contains(err.Error(), "gateway 10.152.152.10 unreachable")) {
			t.Errorf("%s: %v, want \"gateway ... unreachable\"", c.name, err)
		}
	}
}
