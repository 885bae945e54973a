package torgate_test

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/wstest"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// TestTorDeathResetsDownload plays Tor dying in the middle of an HTTP/1.0
// download whose end is the end of the connection (no Content-Length):
// the SOCKS server drops every connection (as the kernel does for a
// killed tor) and readiness falls a little later (as torctl notices).
// The workstation must see an error, never a clean end of a truncated
// body; a download the server finishes stays a clean EOF.
func TestTorDeathResetsDownload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		torDies bool
	}{
		{name: "server finishes", torDies: false},
		{name: "tor dies", torDies: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ready atomic.Bool
			ready.Store(true)
			targets := make(chan net.Conn, 1)
			f := newFixture(t, sockstest.Config{Connect: func(sockstest.Request) (socks.Reply, net.Conn) {
				a, b := net.Pipe()
				targets <- b
				return socks.ReplySucceeded, a
			}}, func(c *torgate.Config) { c.Ready = ready.Load })
			conn, err := f.dial(t, ws1, netip.AddrPortFrom(dst4.Addr(), 80))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			target := <-targets
			go io.Copy(io.Discard, target)
			body := bytes.Repeat([]byte("x"), 1<<20)
			go func() {
				target.Write([]byte("HTTP/1.0 200 OK\r\n\r\n"))
				target.Write(body)
				if !tc.torDies {
					target.Close()
					return
				}
				// Tor dies: its sockets close (a clean EOF at torgate's
				// end), and torctl reports it within the EOF grace. The
				// relay consults readiness only when the grace ends, so
				// when in the grace it falls does not matter; a pause
				// here could only outlast the grace (250 ms) on a slow
				// machine and turn the reset into a FIN.
				f.socks.Close()
				ready.Store(false)
			}()
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			got, err := io.ReadAll(conn)
			if tc.torDies {
				if err == nil {
					t.Fatalf("workstation read a clean end of stream after %d bytes; want a reset", len(got))
				}
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("workstation saw nothing: %v", err)
				}
				t.Logf("workstation: %d bytes, then %v", len(got), err)
				return
			}
			if err != nil || len(got) != len(body)+19 {
				t.Fatalf("read %d bytes, %v; want %d and a clean EOF", len(got), err, len(body)+19)
			}
		})
	}
}

// TestPlainSocksReadiness: with a plain SOCKS upstream (no control port)
// readiness comes from evidence. An upstream that accepts connections
// but never answers a greeting is not ready from the start; once it
// answers, the router is ready again within a couple of seconds; once
// it is gone, the next dial marks it not ready and later flows get a
// RST at once.
func TestPlainSocksReadiness(t *testing.T) {
	t.Parallel() // waits out upstream probes (~9 s) on the clock: overlap it with the other waiting tests
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var answer atomic.Bool
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var b [3]byte
				if _, err := io.ReadFull(c, b[:]); err != nil || !answer.Load() {
					io.Copy(io.Discard, c) // hang: read, never answer
					return
				}
				c.Write([]byte{5, 0})
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	up, err := socks.NewDialer("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	hub, _ := wstest.New(t, 1500, ws1)
	r, err := torgate.New(torgate.Config{Device: hub, Upstream: up.Dial})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { r.Close() })
	if err := r.UpstreamErr(); err == nil {
		t.Fatal("ready with an upstream that never answers a greeting")
	} else {
		t.Logf("not ready: %v", err)
	}
	answer.Store(true)
	began := time.Now()
	waitCond(t, 10*time.Second, func() bool { return r.UpstreamErr() == nil })
	t.Logf("ready again %v after the upstream answered", time.Since(began).Round(time.Millisecond))
	ln.Close()
	// No flow needed: the next probe (at most upstreamProbeEvery) finds
	// the port closed.
	began = time.Now()
	waitCond(t, 15*time.Second, func() bool { return r.UpstreamErr() != nil })
	t.Logf("not ready %v after the upstream closed: %v", time.Since(began).Round(time.Millisecond), r.UpstreamErr())
}

// TestPlainSocksDialFailureRefuses: a real dial that cannot connect makes
// the router not ready at once, and the next flow gets a RST without a
// dial.
func TestPlainSocksDialFailureRefuses(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, nil)
	c, err := f.dial(t, ws1, dst4)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	f.socks.Close()
	// This flow's dial meets a closed port.
	if c, err := f.dial(t, ws1, dst4); err == nil {
		c.Close()
		t.Fatal("flow accepted with the upstream gone")
	}
	if f.r.UpstreamErr() == nil {
		t.Fatal("ready after a dial to the upstream failed")
	}
	began := time.Now()
	if c, err := f.dial(t, ws1, dst4); err == nil {
		c.Close()
		t.Fatal("flow accepted while not ready")
	}
	t.Logf("refused in %v", time.Since(began).Round(time.Microsecond))
}

func waitCond(t *testing.T, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
