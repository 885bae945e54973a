package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/torgate/torgate/socks"
)

// TestRelayEndDecision is the reset-versus-FIN table: how each way a
// relayed flow can end reaches the workstation (the client socket here,
// which sees a RST as ECONNRESET), and which flows_ended_total label
// counts it. Only both peers finishing is a FIN.
func TestRelayEndDecision(t *testing.T) {
	for _, tc := range []struct {
		name string
		// end ends the flow; upRemote is Tor's side of the upstream
		// socket, clRemote the workstation's.
		end     func(tn *Tunnel, ready *atomic.Bool, clRemote, upRemote net.Conn)
		wantRST bool
		how     string
		grace   time.Duration // Config.EOFGrace
		gone    bool          // Config.UpstreamState's answer: gone
		known   bool          // Config.UpstreamState's answer: known
		// fallInGrace: readiness falls after the relay saw the upstream's
		// end of stream (its UpstreamState call), before the grace ends.
		fallInGrace bool
		// confirm, if set, is Config.UpstreamConfirm's answer, given
		// from another goroutine.
		confirm *bool
	}{
		{
			name: "upstream EOF after client EOF",
			end: func(_ *Tunnel, _ *atomic.Bool, cl, up net.Conn) {
				cl.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, up) // the client's FIN came through
				up.Write([]byte("tail"))
				up.(*net.TCPConn).CloseWrite()
			},
			how: "fin",
		},
		{
			name: "upstream EOF then client EOF",
			end: func(_ *Tunnel, _ *atomic.Bool, cl, up net.Conn) {
				up.(*net.TCPConn).CloseWrite()
				// The client reads the FIN, then finishes itself.
				go func() {
					io.Copy(io.Discard, cl)
					cl.(*net.TCPConn).CloseWrite()
				}()
			},
			how: "fin",
		},
		{
			name: "upstream reset",
			end: func(_ *Tunnel, _ *atomic.Bool, _, up net.Conn) {
				up.(*net.TCPConn).SetLinger(0)
				up.Close()
			},
			wantRST: true, how: "rst_upstream_error",
		},
		{
			name: "upstream EOF while tor not ready",
			end: func(_ *Tunnel, ready *atomic.Bool, _, up net.Conn) {
				ready.Store(false)
				up.(*net.TCPConn).CloseWrite()
			},
			wantRST: true, how: "rst_tor_down",
		},
		{
			// An upstream judged by the grace alone (plain SOCKS with the
			// caller's readiness): readiness falls a moment after its
			// sockets close, within the grace: once the relay has seen the
			// end of stream (fallInGrace), while it was still ready.
			name: "upstream EOF, tor not ready within the grace",
			end: func(_ *Tunnel, _ *atomic.Bool, _, up net.Conn) {
				up.(*net.TCPConn).CloseWrite()
			},
			wantRST: true, how: "rst_tor_down", grace: 250 * time.Millisecond, fallInGrace: true,
		},
		{
			name: "upstream EOF, tor ready through the grace",
			end: func(_ *Tunnel, _ *atomic.Bool, cl, up net.Conn) {
				up.(*net.TCPConn).CloseWrite()
				go func() {
					io.Copy(io.Discard, cl)
					cl.(*net.TCPConn).CloseWrite()
				}()
			},
			how: "fin", grace: 50 * time.Millisecond,
		},
		{
			// A managed Tor whose process is exiting: readiness has not
			// fallen yet, the process check says so.
			name: "upstream EOF from a dying tor",
			end: func(_ *Tunnel, _ *atomic.Bool, _, up net.Conn) {
				up.(*net.TCPConn).CloseWrite()
			},
			wantRST: true, how: "rst_tor_down", gone: true, known: true,
		},
		{
			// A managed Tor whose process is alive: the end passes at
			// once, whatever the grace (which would outlast the client's
			// 10 s read deadline).
			name: "upstream EOF from a live tor, no wait",
			end: func(_ *Tunnel, _ *atomic.Bool, cl, up net.Conn) {
				up.(*net.TCPConn).CloseWrite()
				go func() {
					io.Copy(io.Discard, cl)
					cl.(*net.TCPConn).CloseWrite()
				}()
			},
			how: "fin", known: true, grace: time.Minute,
		},
		{
			// A Tor exiting on SIGTERM: it closed the stream itself while
			// its process still looked alive, and never answers the
			// confirmation.
			name: "upstream EOF from a live-looking tor that does not confirm",
			end: func(_ *Tunnel, _ *atomic.Bool, _, up net.Conn) {
				up.(*net.TCPConn).CloseWrite()
			},
			wantRST: true, how: "rst_tor_down", known: true, confirm: new(false),
		},
		{
			// An attached Tor: its process is not known, and the end
			// is a RST unless Tor confirms it (killed: the control
			// connection closed; hung; exiting on SIGTERM).
			name: "upstream EOF from an attached tor that does not confirm",
			end: func(_ *Tunnel, _ *atomic.Bool, _, up net.Conn) {
				up.(*net.TCPConn).CloseWrite()
			},
			wantRST: true, how: "rst_tor_down", confirm: new(false), grace: time.Minute,
		},
		{
			name: "upstream EOF confirmed by tor",
			end: func(_ *Tunnel, _ *atomic.Bool, cl, up net.Conn) {
				up.(*net.TCPConn).CloseWrite()
				go func() {
					io.Copy(io.Discard, cl)
					cl.(*net.TCPConn).CloseWrite()
				}()
			},
			how: "fin", confirm: new(true), grace: time.Minute,
		},
		{
			// The process check comes first: a dying Tor's end is a RST
			// whatever a confirmation would say.
			name: "upstream EOF from a dying tor, before any confirmation",
			end: func(_ *Tunnel, _ *atomic.Bool, _, up net.Conn) {
				up.(*net.TCPConn).CloseWrite()
			},
			wantRST: true, how: "rst_tor_down", gone: true, known: true, confirm: new(true),
		},
		{
			name:    "EndAll",
			end:     func(tn *Tunnel, _ *atomic.Bool, _, _ net.Conn) { tn.EndAll() },
			wantRST: true, how: "rst_told",
		},
		{
			name:    "tor down",
			end:     func(tn *Tunnel, _ *atomic.Bool, _, _ net.Conn) { tn.EndAllBecause(EndTorDown) },
			wantRST: true, how: "rst_tor_down",
		},
		{
			name:    "shutdown",
			end:     func(tn *Tunnel, _ *atomic.Bool, _, _ net.Conn) { go tn.Close() },
			wantRST: true, how: "rst_shutdown",
		},
		{
			name:    "idle",
			end:     func(*Tunnel, *atomic.Bool, net.Conn, net.Conn) {},
			wantRST: true, how: "rst_idle",
		},
		{
			name: "client reset",
			end: func(_ *Tunnel, _ *atomic.Bool, cl, _ net.Conn) {
				cl.(*net.TCPConn).SetLinger(0)
				cl.Close()
			},
			how: "rst_client_error",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clLocal, clRemote := socketPair(t)
			upLocal, upRemote := socketPair(t)
			up := fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return upLocal, nil }}
			var ready atomic.Bool
			ready.Store(true)
			// eof carries readiness at the moment the relay met the
			// upstream's end of stream.
			eof := make(chan bool, 1)
			tn := newTunnel(t, up, func(c *Config) {
				c.Ready = ready.Load
				c.EOFGrace = tc.grace
				c.UpstreamState = func() (bool, bool) {
					select {
					case eof <- ready.Load():
					default:
					}
					return tc.gone, tc.known
				}
				if tc.confirm != nil {
					alive := *tc.confirm
					c.UpstreamConfirm = func(done func(bool)) { go done(alive) }
				}
				if tc.how == "rst_idle" {
					c.IdleTimeout = 200 * time.Millisecond
				}
			})
			tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, &fakeFlow{client: clLocal})
			// Data first, so that the end is mid-stream.
			if _, err := upRemote.Write([]byte("head")); err != nil {
				t.Fatal(err)
			}
			var b [4]byte
			clRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(clRemote, b[:]); err != nil {
				t.Fatal(err)
			}
			tc.end(tn, &ready, clRemote, upRemote)
			if tc.fallInGrace {
				select {
				case wasReady := <-eof:
					if !wasReady {
						t.Fatal("Tor not ready when the relay met the end of stream: the grace was not tested")
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the relay never met the upstream's end of stream")
				}
				// The grace timer starts after UpstreamState returns and
				// fires 250 ms later: readiness falls well within it.
				ready.Store(false)
			}
			if tc.how != "rst_client_error" {
				_, err := io.ReadAll(clRemote)
				switch {
				case tc.wantRST && !errors.Is(err, syscall.ECONNRESET):
					t.Fatalf("workstation read %v, want ECONNRESET", err)
				case !tc.wantRST && err != nil:
					t.Fatalf("workstation read %v, want a clean EOF", err)
				}
			}
			waitFor(t, func() bool { return tn.openFlows() == 0 })
			if got := testutil.ToFloat64(tn.ended[endHowIndex(t, tc.how)]); got != 1 {
				t.Fatalf("flows_ended_total{how=%q} = %v, want 1", tc.how, got)
			}
		})
	}
}

func endHowIndex(t *testing.T, label string) endHow {
	for i, l := range endHowLabels {
		if l == label {
			return endHow(i)
		}
	}
	t.Fatalf("no end label %q", label)
	return 0
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
