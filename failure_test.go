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
				// end), and torctl reports it a moment later.
				f.socks.Close()
				time.Sleep(20 * time.Millisecond)
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
