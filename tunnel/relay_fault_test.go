//go:build linux

package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
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
	parked := make(chan struct{}, 1)
	up := fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) {
		return &parkConn{TCPConn: upLocal.(*net.TCPConn), parked: parked}, nil
	}}
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
	// Once the relay is parked in the peek (it found nothing to read
	// after "head"), Tor's side resets.
	select {
	case <-parked:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay never waited on the upstream with a peek")
	}
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

// parkConn is an upstream socket that reports when a wait on it parks
// after data was read from it: its RawConn's Read callback (socketWaiter's
// peek) found nothing more to read, and the runtime poller waits for
// readability. It is not a *net.TCPConn, so tcpClosed does not look at
// it: only a test where the relay ends on an error, not an end of stream,
// may use it.
type parkConn struct {
	*net.TCPConn
	read   atomic.Bool // a Read returned data
	parked chan struct{}
}

func (c *parkConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if n > 0 {
		c.read.Store(true)
	}
	return n, err
}

func (c *parkConn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.TCPConn.SyscallConn()
	return parkRawConn{rc, c}, err
}

type parkRawConn struct {
	syscall.RawConn
	c *parkConn
}

func (rc parkRawConn) Read(f func(fd uintptr) bool) error {
	return rc.RawConn.Read(func(fd uintptr) bool {
		done := f(fd)
		if !done && rc.c.read.Load() {
			select {
			case rc.c.parked <- struct{}{}:
			default:
			}
		}
		return done
	})
}

// TestRelayEpollReleasedAtClose: the relay does not remove a socket from
// its epoll set when the socket's direction ends (socketSource.stop); the
// flow closes the socket, and the kernel drops the registration with the
// file. The set must be empty once the flows are done, whether they ended
// with FINs or with a RST, or every flow would leak an epoll entry (and a
// reference to its socket) for the life of the process.
func TestRelayEpollReleasedAtClose(t *testing.T) {
	up := make(chan net.Conn, 1)
	tn := newTunnel(t, fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return <-up, nil }}, nil)
	var ops [4]atomic.Int64
	tn.poller().epollCtl = func(epfd, op, fd int, ev *unix.EpollEvent) error {
		ops[op].Add(1)
		return unix.EpollCtl(epfd, op, fd, ev)
	}
	for i := range 8 {
		clLocal, clRemote := socketPair(t)
		upLocal, upRemote := socketPair(t)
		up <- upLocal
		tn.HandleTCP(netip.AddrPortFrom(srcA, uint16(1000+i)), dst, &fakeFlow{client: clLocal})
		clRemote.Write([]byte("GET"))
		clRemote.(*net.TCPConn).CloseWrite()
		upRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
		if b, err := io.ReadAll(upRemote); err != nil || string(b) != "GET" {
			t.Fatalf("flow %d: upstream read %q, %v", i, b, err)
		}
		if i%2 == 1 { // Tor resets every other flow
			upRemote.(*net.TCPConn).SetLinger(0)
		} else {
			upRemote.Write([]byte("200"))
		}
		upRemote.Close()
		clRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(clRemote)
		if i%2 == 1 && !errors.Is(err, syscall.ECONNRESET) || i%2 == 0 && (err != nil || string(b) != "200") {
			t.Fatalf("flow %d: workstation read %q, %v", i, b, err)
		}
	}
	waitFor(t, func() bool { return tn.openFlows() == 0 })
	if n := ops[unix.EPOLL_CTL_DEL].Load(); n != 0 {
		t.Errorf("%d EPOLL_CTL_DEL calls; the flows' close should remove the sockets", n)
	}
	if ops[unix.EPOLL_CTL_ADD].Load() == 0 {
		t.Fatal("no socket was added to the epoll set: the test did not test")
	}
	// /proc/self/fdinfo of an epoll descriptor lists one "tfd:" line per
	// registered file.
	var info []byte
	tn.poller().rc.Control(func(fd uintptr) {
		info, _ = os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	})
	if info == nil {
		t.Fatal("cannot read the epoll set's fdinfo")
	}
	if n := bytes.Count(info, []byte("tfd:")); n != 0 {
		t.Errorf("%d sockets still in the epoll set after their flows closed:\n%s", n, info)
	}
}

// TestRelayUpstreamResetTakenByWrite: Tor resets a stream while the
// workstation is still sending. Linux reports a TCP reset once, to
// whichever call meets it first; when that is the relay's write towards
// Tor, the read after it returns a clean end of stream. The relay used to
// pass that on as a FIN before the write's error ended the flow with a
// RST, so the workstation read a truncated download to a clean end (found
// by TestRelayModel, seed 5129401683936936427, about one such flow in a
// hundred). Here the write that takes the error is made before the relay
// starts, so the relay's first read of the upstream is that clean-looking
// end: deterministic.
func TestRelayUpstreamResetTakenByWrite(t *testing.T) {
	clLocal, clRemote := socketPair(t)
	upLocal, upRemote := socketPair(t)
	upRemote.(*net.TCPConn).SetLinger(0)
	upRemote.Close()
	// The RST's error goes to the first call that meets it: this write.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := upLocal.Write([]byte("x"))
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes after Tor's RST: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	var fins atomic.Int32
	tn := newTunnel(t, fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return upLocal, nil }}, nil)
	tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, &fakeFlow{client: finCounter{clLocal.(*net.TCPConn), &fins}})
	clRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(clRemote); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("workstation read %v, want ECONNRESET", err)
	}
	if n := fins.Load(); n != 0 {
		t.Errorf("the relay sent the workstation %d FIN(s) for a stream Tor reset", n)
	}
	waitFor(t, func() bool { return tn.openFlows() == 0 })
	if rst := testutil.ToFloat64(tn.ended[endUpstreamError]); rst != 1 {
		t.Errorf("flows_ended_total{how=rst_upstream_error} = %v, want 1", rst)
	}
}

// TestRelayUpstreamFINWhileSending is the other side of the reset check
// (tcpClosed): Tor ends its stream cleanly while the workstation is still
// sending. The upstream socket is then in CLOSE_WAIT, not CLOSE, and the
// workstation must get a FIN, its data still flowing to Tor.
func TestRelayUpstreamFINWhileSending(t *testing.T) {
	clLocal, clRemote := socketPair(t)
	upLocal, upRemote := socketPair(t)
	tn := newTunnel(t, fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return upLocal, nil }}, nil)
	tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, &fakeFlow{client: clLocal})
	upRemote.Write([]byte("reply"))
	upRemote.(*net.TCPConn).CloseWrite()
	clRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(clRemote); err != nil || string(b) != "reply" {
		t.Fatalf("workstation read %q, %v; want the reply and a FIN", b, err)
	}
	clRemote.Write([]byte("more"))
	clRemote.(*net.TCPConn).CloseWrite()
	upRemote.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(upRemote); err != nil || string(b) != "more" {
		t.Fatalf("Tor read %q, %v; want the rest and a FIN", b, err)
	}
	waitFor(t, func() bool { return tn.openFlows() == 0 })
	if fin := testutil.ToFloat64(tn.ended[endFIN]); fin != 1 {
		t.Errorf("flows_ended_total{how=fin} = %v, want 1", fin)
	}
}

// TestTCPClosedAfterOwnFIN is why finish reads the upstream's state
// under upMu: a socket whose peer ended first reads TCP_CLOSE, like a
// reset one, as soon as this side's own FIN is acknowledged (LAST_ACK,
// then CLOSE). A check that read upShut before the upstream direction's
// FIN and the state after it took a clean end for a reset (TestRelayModel
// under qemu-mips, 2026-12-06: a clean flow ended rst_upstream_error).
func TestTCPClosedAfterOwnFIN(t *testing.T) {
	local, peer := socketPair(t)
	peer.(*net.TCPConn).CloseWrite()
	local.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(local); err != nil {
		t.Fatal(err)
	}
	if tcpClosed(local) {
		t.Fatal("CLOSE_WAIT read as closed")
	}
	local.(*net.TCPConn).CloseWrite()
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(peer); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return tcpClosed(local) })
}

// finCounter is a workstation connection that counts the FINs the relay
// sends it (CloseWrite); the rest is the socket's own.
type finCounter struct {
	*net.TCPConn
	n *atomic.Int32
}

func (c finCounter) CloseWrite() error { c.n.Add(1); return c.TCPConn.CloseWrite() }
