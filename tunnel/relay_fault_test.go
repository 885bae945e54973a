//go:build linux

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
	"golang.org/x/sys/unix"

	"github.com/torgate/torgate/socks"
)

// Faults of the relay's epoll set. Whatever happens to it, a flow that
// waits on it must still end, with a RST, be released once, and leave
// nothing behind; flows opened afterwards must still work.

// TestRelayEpollCtlErrorResets: a flow whose epoll_ctl fails (ENOSPC once
// fs.epoll.max_user_watches is reached) ends with a RST at once. It used
// to spin: arm reported the source readable, the pump read EAGAIN and
// armed again, a goroutine at full CPU until data came or the idle limit
// (1 h) ended the flow.
func TestRelayEpollCtlErrorResets(t *testing.T) {
	clLocal, clRemote := socketPair(t)
	upLocal, upRemote := socketPair(t)
	up := fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return upLocal, nil }}
	tn := newTunnel(t, up, nil)
	var calls atomic.Int64
	tn.poller().epollCtl = func(epfd, op, fd int, ev *unix.EpollEvent) error {
		calls.Add(1)
		if op == unix.EPOLL_CTL_DEL {
			return unix.EpollCtl(epfd, op, fd, ev)
		}
		return unix.ENOSPC
	}
	tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, &fakeFlow{client: clLocal})
	clRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(clRemote); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("workstation read %v, want ECONNRESET", err)
	}
	upRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(upRemote); err != nil {
		t.Fatalf("upstream read %v, want EOF", err)
	}
	waitFor(t, func() bool { return tn.openFlows() == 0 })
	// One failed arm per direction (both are sockets here), and no retry.
	if n := calls.Load(); n > 4 {
		t.Errorf("epoll_ctl called %d times for one flow: the pump spins", n)
	}
	rst := testutil.ToFloat64(tn.ended[endUpstreamError]) + testutil.ToFloat64(tn.ended[endClientError])
	if rst != 1 || testutil.ToFloat64(tn.ended[endFIN]) != 0 {
		t.Errorf("flows_ended_total: %v resets, %v fins; want 1 reset", rst, testutil.ToFloat64(tn.ended[endFIN]))
	}
}

// TestRelayEpollFaultClosed closes the epoll set's descriptor under a
// running model: flows waiting on it end with a RST (rst_upstream_error),
// the rest of the model's contract holds, and flows opened afterwards
// wait with a goroutine each and finish normally.
func TestRelayEpollFaultClosed(t *testing.T) {
	var p *poller
	runModel(t, modelConfig{
		seed:  faultSeed(t),
		flows: 64,
		setup: func(tn *Tunnel) { p = tn.poller() },
		fault: func(*Tunnel) []endHow {
			p.f.Close()
			return []endHow{endUpstreamError}
		},
	})
	if !p.failed.Load() {
		t.Error("the poller did not notice its descriptor closed")
	}
}

// TestRelayEpollFaultCtl makes a share of epoll_ctl calls fail from a
// moment mid-flight on: the flows they belong to end with a RST, the
// others are unaffected.
func TestRelayEpollFaultCtl(t *testing.T) {
	var fail atomic.Bool
	var n atomic.Int64
	runModel(t, modelConfig{
		seed:  faultSeed(t),
		flows: 64,
		setup: func(tn *Tunnel) {
			tn.poller().epollCtl = func(epfd, op, fd int, ev *unix.EpollEvent) error {
				if fail.Load() && op != unix.EPOLL_CTL_DEL && n.Add(1)%5 == 0 {
					return unix.ENOSPC
				}
				return unix.EpollCtl(epfd, op, fd, ev)
			}
		},
		fault: func(*Tunnel) []endHow {
			fail.Store(true)
			return []endHow{endUpstreamError}
		},
	})
	if n.Load() == 0 {
		t.Error("no epoll_ctl call after the fault: the test did not test")
	}
}

// faultSeed is -relay.seed, or a fresh seed, logged for replay.
func faultSeed(t *testing.T) uint64 {
	s := *relaySeed
	if s == 0 {
		s = uint64(time.Now().UnixNano())>>1 | 1
	}
	t.Logf("seed %d (replay with -relay.seed=%d)", s, s)
	return s
}

// TestRelayWaitSourcePeekedResetStaysRST: without the epoll set (it
// failed, or could not be made: EMFILE at the first flow), a direction
// waits with a MSG_PEEK. On Linux that peek consumes a RST's pending
// error, and the read after it returns a clean end of stream: the relay
// used to pass Tor's reset on to the workstation as a FIN, a truncated
// download that looked complete. The model found it after closing the
// epoll descriptor (TestRelayEpollFaultClosed).
func TestRelayWaitSourcePeekedResetStaysRST(t *testing.T) {
	clLocal, clRemote := socketPair(t)
	upLocal, upRemote := socketPair(t)
	up := fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return upLocal, nil }}
	tn := newTunnel(t, up, nil)
	tn.pollOnce.Do(func() {}) // no poller: every direction waits with a peek
	tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, &fakeFlow{client: clLocal})
	if _, err := upRemote.Write([]byte("head")); err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	clRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(clRemote, b[:]); err != nil {
		t.Fatal(err)
	}
	// The relay is parked in the peek now; Tor's side resets.
	time.Sleep(50 * time.Millisecond)
	upRemote.(*net.TCPConn).SetLinger(0)
	upRemote.Close()
	if _, err := io.ReadAll(clRemote); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("workstation read %v after Tor's RST, want ECONNRESET", err)
	}
	waitFor(t, func() bool { return tn.openFlows() == 0 })
	if got := testutil.ToFloat64(tn.ended[endUpstreamError]); got != 1 {
		t.Fatalf("flows_ended_total{how=rst_upstream_error} = %v, want 1", got)
	}
}
