//go:build linux

package tunnel

// The relay's randomized model test. Many flows run at once through the
// production wiring (a workstation's gVisor stack, netstack.Stack,
// Tunnel.HandleTCP, the relay, a loopback TCP socket as the SOCKS stream),
// each following a random script: data of random sizes and chunking both
// ways, half-closes from either side, resets from either side, upstream
// write errors, idle flows for the sweep, and EndAllBecause mid-flight.
// What each side saw is then held to the relay's contract:
//
//   - every byte arrives in order and at most once, and all of it when the
//     flow ends cleanly;
//   - the workstation sees a FIN only after the whole upstream stream and
//     the upstream's own FIN (never a truncation dressed as success), and
//     a RST whenever torgate cut the flow off;
//   - the relay closes the workstation's connection exactly once, with a
//     FIN (Close) only when both peers finished and a RST (Abort)
//     otherwise, and flows_ended_total agrees, label by label, with what
//     the scripts allow;
//   - every flow is released once: open-flow and per-source accounting,
//     flows_active, the poller's registrations and the pump pool's idle
//     workers all return to zero, and no goroutine or descriptor outlives
//     the run.
//
// Replay a failure with the seed it prints: go test -run RelayModel
// ./tunnel -relay.seed=N (the flag after the package: before it, go test
// takes the package for an argument of the test binary). Run longer with
// -relay.iterations.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/torgate/torgate/bench"
	handoff "github.com/torgate/torgate/internal/flow" // tunnel has a flow type of its own
	"github.com/torgate/torgate/netstack"
	"github.com/torgate/torgate/socks"
)

var (
	relaySeed       = flag.Uint64("relay.seed", 0, "TestRelayModel: seed of the first run (0 picks one at random)")
	relayIterations = flag.Int("relay.iterations", 2, "TestRelayModel: runs, each with its own seed (seed, seed+1, ...)")
	relayFlows      = flag.Int("relay.flows", 0, "TestRelayModel: flows per run (0 picks 64-160 per run)")
)

func TestRelayModel(t *testing.T) {
	seed := *relaySeed
	if seed == 0 {
		seed = rand.Uint64()>>1 | 1
	}
	for i := range *relayIterations {
		s := seed + uint64(i)
		ok := t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			r := rand.New(rand.NewPCG(s, 0x7e1a7))
			n := *relayFlows
			if n == 0 {
				n = 64 + r.IntN(97)
			}
			res := runModel(t, modelConfig{seed: s, flows: n, events: true})
			t.Logf("seed %d: %d flows, ended %v", s, n, res.ended)
		})
		if !ok {
			t.Fatalf("replay with: go test -race -run RelayModel ./tunnel -relay.seed=%d -relay.iterations=1", s)
		}
	}
}

// Scripts.
type flowKind int

const (
	kindClean      flowKind = iota // both sides send and half-close
	kindWSAbort                    // the workstation resets mid-stream
	kindTorAbort                   // Tor's side resets (SO_LINGER 0) mid-stream
	kindUpWriteErr                 // writing the upstream fails
	kindIdle                       // some data, maybe one half-close, then silence (tunnel B)
	numKinds
)

var kindNames = [numKinds]string{"clean", "ws_abort", "tor_abort", "up_write_error", "idle"}

// script is what one flow's two peers do.
type script struct {
	kind     flowKind
	idle     bool       // on the short-timeout tunnel
	src      netip.Addr // the source the tunnel accounts it to
	up, down []byte     // workstation to Tor, Tor to workstation
	wChunk   int        // largest write, either side
	rChunk   int        // read buffer, either side
	pauses   bool       // sleep now and then between writes
	wClose   bool       // the workstation half-closes after writing
	tClose   bool       // Tor's side half-closes after writing
	wAbortAt int        // workstation resets after this many bytes (kindWSAbort)
	tAbortAt int        // Tor's side resets after this many bytes (kindTorAbort)
	upFailAt int        // upstream writes fail past this many bytes (kindUpWriteErr)
	startIn  time.Duration
	seed     uint64 // the peers' own choices (chunk sizes, pauses)

	// kindIdle: the side that half-closed resets a moment later, a RST
	// after a FIN, which the relay notices only if it is still reading
	// that side (it stopped at the FIN) or writes to it.
	wAbortAfterClose, tAbortAfterClose bool
}

func genScript(r *rand.Rand, i int) script {
	size := func(big int) int {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return r.IntN(2 << 10)
		case 2:
			return r.IntN(64 << 10)
		}
		return r.IntN(big)
	}
	s := script{
		src:     netip.AddrFrom4([4]byte{10, 152, 152, byte(11 + i%5)}),
		pauses:  r.IntN(3) == 0,
		startIn: time.Duration(r.IntN(600)) * time.Millisecond,
		seed:    r.Uint64(),
	}
	switch w := r.IntN(100); {
	case w < 40:
		s.kind = kindClean
	case w < 55:
		s.kind = kindWSAbort
	case w < 70:
		s.kind = kindTorAbort
	case w < 80:
		s.kind = kindUpWriteErr
	default:
		s.kind = kindIdle
	}
	big := 256 << 10
	if s.kind == kindIdle {
		big = 4 << 10
	}
	s.up, s.down = make([]byte, size(big)), make([]byte, size(big))
	fill(r, s.up)
	fill(r, s.down)
	s.wChunk = []int{1, 100, 1460, 16 << 10, 128 << 10}[r.IntN(5)]
	s.rChunk = []int{1, 7, 512, 4 << 10, 64 << 10}[r.IntN(5)]
	// Keep the number of calls bounded under the race detector.
	s.wChunk = max(s.wChunk, (len(s.up)+len(s.down))/400)
	s.rChunk = max(s.rChunk, (len(s.up)+len(s.down))/400)
	switch s.kind {
	case kindClean:
		s.wClose, s.tClose = true, true
	case kindWSAbort:
		s.wAbortAt = r.IntN(len(s.up) + 1)
		s.tClose = r.IntN(2) == 0
	case kindTorAbort:
		s.tAbortAt = r.IntN(len(s.down) + 1)
		s.wClose = r.IntN(2) == 0
	case kindUpWriteErr:
		if len(s.up) == 0 {
			s.up = make([]byte, 1+r.IntN(32<<10))
			fill(r, s.up)
		}
		s.upFailAt = r.IntN(len(s.up))
		s.wClose = r.IntN(2) == 0
		s.tClose = r.IntN(2) == 0
	case kindIdle:
		s.idle = true
		switch r.IntN(3) {
		case 1:
			s.wClose = true
			s.wAbortAfterClose = r.IntN(2) == 0
		case 2:
			s.tClose = true
			s.tAbortAfterClose = r.IntN(2) == 0
		}
	}
	return s
}

func fill(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// How a side's reader ended.
type readEnd int

const (
	endNone    readEnd = iota
	endEOF             // a FIN after the data
	endReset           // a RST
	endSelf            // its own side reset first
	endTimeout         // nothing for the flow's deadline: a hang
	endOther
)

var readEndNames = []string{"none", "eof", "reset", "self", "timeout", "other"}

// How the relay closed the workstation's connection.
const (
	closedNone = iota
	closedFIN  // Close
	closedRST  // Abort
)

// modelFlow is one flow's script and what was observed.
type modelFlow struct {
	i   int
	s   script
	tor chan net.Conn // Tor's end of the upstream, handed over at connect

	closeCalls atomic.Int32
	closeHow   atomic.Int32
	closeSeq   atomic.Int64 // run sequence number of the first close call
	rejected   atomic.Bool
	// acceptFailed: the workstation reset during the handshake.
	acceptFailed atomic.Bool
	// notEnded: the scripts finished, but the relay never closed the
	// workstation's connection.
	notEnded bool
	dialSeq  int64 // sequence number once the workstation's dial returned

	wGot, tGot   []byte
	wEnd, tEnd   readEnd
	wErr, tErr   error
	dialErr      error
	tWroteAll    bool // Tor's side wrote all its data and half-closed
	wAborted     atomic.Bool
	wWriteReset  bool // the workstation's write met the RST (its read then sees EOF)
	upstreamSeen atomic.Bool
}

func (m *modelFlow) closed(how int32, seq int64) {
	if m.closeCalls.Add(1) == 1 {
		m.closeHow.Store(how)
		m.closeSeq.Store(seq)
	}
}

// recConn is the workstation's connection as the relay sees it, recording
// whether the relay ended it with a FIN or a RST. Everything else is
// netstack.Conn's own (embedding keeps TryRead/NotifyRead, CloseWrite,
// CloseRead).
type recConn struct {
	*netstack.Conn
	m   *modelFlow
	seq *atomic.Int64
}

func (c *recConn) Close() error { c.m.closed(closedFIN, c.seq.Add(1)); return c.Conn.Close() }
func (c *recConn) Abort() error { c.m.closed(closedRST, c.seq.Add(1)); return c.Conn.Abort() }

type recFlow struct {
	r   *netstack.TCPRequest
	m   *modelFlow
	seq *atomic.Int64
}

func (f recFlow) Accept() (net.Conn, error) {
	c, err := f.r.Accept()
	if err != nil {
		f.m.acceptFailed.Store(true)
		return nil, err
	}
	return &recConn{Conn: c.(*netstack.Conn), m: f.m, seq: f.seq}, nil
}

func (f recFlow) Reject() { f.m.rejected.Store(true); f.r.Reject() }

// failConn is an upstream socket whose writes fail past a budget: the
// relay still reads it through epoll (SyscallConn is the socket's).
type failConn struct {
	*net.TCPConn
	left int
}

var errInjected = errors.New("injected upstream write error")

func (c *failConn) Write(b []byte) (int, error) {
	if len(b) <= c.left {
		n, err := c.TCPConn.Write(b)
		c.left -= n
		return n, err
	}
	n, _ := c.TCPConn.Write(b[:c.left])
	c.left = 0
	return n, errInjected
}

// A global event on tunnel A: EndAllBecause, with Tor not ready around it
// for EndTorDown. Its sequence number is taken before it acts.
type globalEvent struct {
	how        endHow
	seq, until int64
}

type modelConfig struct {
	seed   uint64
	flows  int
	events bool // EndAllBecause mid-flight
	// setup, if set, runs on tunnel A before the first flow.
	setup func(tn *Tunnel)
	// fault, if set, runs once mid-flight on tunnel A and reports the
	// labels that flows open at that moment may then end with.
	fault func(tn *Tunnel) []endHow
}

type modelResult struct {
	ended map[string]int
}

// runModel runs one seed's flows and checks everything.
func runModel(t *testing.T, mc modelConfig) modelResult {
	fdsBefore, grBefore := countFDs(t), runtime.NumGoroutine()
	r := rand.New(rand.NewPCG(mc.seed, 1))
	var seq atomic.Int64
	flows := make([]*modelFlow, mc.flows)
	for i := range flows {
		flows[i] = &modelFlow{i: i, s: genScript(r, i), tor: make(chan net.Conn, 1)}
	}

	// Tor: a loopback listener; each connect is paired with its accept.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var connectMu sync.Mutex
	connect := func(_ context.Context, dst socks.Addr, _ socks.Auth) (net.Conn, error) {
		m := flows[int(dst.Port)-modelPort0]
		connectMu.Lock()
		defer connectMu.Unlock()
		local, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		remote, err := ln.Accept()
		if err != nil {
			local.Close()
			return nil, err
		}
		m.upstreamSeen.Store(true)
		m.tor <- remote
		if m.s.kind == kindUpWriteErr {
			return &failConn{TCPConn: local.(*net.TCPConn), left: m.s.upFailAt}, nil
		}
		return local, nil
	}
	var ready atomic.Bool
	ready.Store(true)
	tnA := newModelTunnel(t, connect, func(c *Config) { c.Ready = ready.Load })
	if mc.setup != nil {
		mc.setup(tnA)
	}
	// Tunnel B: short limits, for the idle sweep. Its flows do nothing
	// else, so a slow machine cannot turn another script into an idle end.
	tnB := newModelTunnel(t, connect, func(c *Config) {
		c.IdleTimeout = 300 * time.Millisecond
		c.HalfCloseTimeout = 200 * time.Millisecond
	})

	ws := newModelWorkstation(t, netip.MustParseAddr("10.152.152.11"))
	st, err := netstack.New(netstack.Config{
		Device: ws.link,
		TCP: netstack.TCPHandlerFunc(func(f handoff.Request) {
			req := f.(*netstack.TCPRequest)
			m := flows[int(req.Dst().Port())-modelPort0]
			tn := tnA
			if m.s.idle {
				tn = tnB
			}
			tn.HandleTCP(netip.AddrPortFrom(m.s.src, req.Src().Port()), req.Dst(), recFlow{r: req, m: m, seq: &seq})
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Start()

	var wg sync.WaitGroup
	for _, m := range flows {
		wg.Go(func() { runFlow(ws, m, &seq) })
	}
	var events []globalEvent
	var faultHows []endHow
	var faultSeq int64 = -1
	if mc.events {
		// Half the runs see none, so that most flows end on their own.
		for range []int{0, 0, 1, 2}[r.IntN(4)] {
			time.Sleep(time.Duration(r.IntN(400)) * time.Millisecond)
			why := []EndReason{EndTold, EndTorDown, EndShutdown}[r.IntN(3)]
			ev := globalEvent{how: why.how(), seq: seq.Add(1)}
			if why == EndTorDown {
				// Tor is down for a moment: new flows are refused and
				// an upstream EOF in its grace turns into a RST.
				ready.Store(false)
				tnA.EndAllBecause(why)
				time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
				ready.Store(true)
			} else {
				tnA.EndAllBecause(why)
			}
			ev.until = seq.Add(1)
			events = append(events, ev)
		}
	}
	if mc.fault != nil {
		time.Sleep(time.Duration(100+r.IntN(300)) * time.Millisecond)
		faultSeq = seq.Add(1)
		faultHows = mc.fault(tnA)
	}
	wg.Wait()
	for _, m := range flows {
		// Tor's end of a flow refused after its dial.
		select {
		case c := <-m.tor:
			c.Close()
		default:
		}
	}

	// Every flow released once, with nothing left behind in the tunnel.
	for i, tn := range []*Tunnel{tnA, tnB} {
		if !eventually(func() bool { return tn.openFlows() == 0 }) {
			t.Errorf("tunnel %c: %d flows still open after the run", 'A'+i, tn.openFlows())
		}
		tn.mu.Lock()
		nsrc, listed := len(tn.sources), tn.flows != nil
		tn.mu.Unlock()
		if nsrc != 0 || listed {
			t.Errorf("after the run: %d sources accounted, flow list empty %v", nsrc, !listed)
		}
		if g := testutil.ToFloat64(tn.flowsActive); g != 0 {
			t.Errorf("flows_active = %v after the run", g)
		}
		if p := tn.poll; p != nil {
			p.mu.Lock()
			nfns := len(p.fns)
			p.mu.Unlock()
			if nfns != 0 {
				t.Errorf("poller holds %d registrations after the run", nfns)
			}
		}
		// Idle pump workers linger pumpPool.keep (2 s), then exit.
		if !eventually(func() bool { return tn.pumps.idle.Load() == 0 }) {
			t.Errorf("tunnel %c: %d idle pump workers left", 'A'+i, tn.pumps.idle.Load())
		}
	}

	res := modelResult{ended: map[string]int{}}
	checkModel(t, mc, flows, events, faultSeq, faultHows, tnA, tnB, &res)

	tnA.Close()
	tnB.Close()
	st.Close()
	ws.close()
	ln.Close()
	checkLeaks(t, fdsBefore, grBefore)
	return res
}

const modelPort0 = 20000

// runFlow plays one flow's script on both sides and records what each
// side read.
func runFlow(ws *modelWorkstation, m *modelFlow, seq *atomic.Int64) {
	s := m.s
	time.Sleep(s.startIn)
	deadline := time.Now().Add(60 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	w, wep, err := ws.dial(ctx, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(modelPort0+m.i)))
	m.dialSeq = seq.Add(1)
	if err != nil {
		if !m.rejected.Load() && strings.Contains(err.Error(), "connection reset by peer") {
			// Accepted, then cut off (EndAll) before the workstation's
			// connect returned: it met the RST there.
			m.wEnd = endReset
			return
		}
		m.dialErr = err
		return
	}
	defer w.Close()
	w.SetDeadline(deadline)
	var tor *net.TCPConn
	select {
	case c := <-m.tor:
		tor = c.(*net.TCPConn)
	case <-ctx.Done():
		m.dialErr = errors.New("accepted without an upstream")
		return
	}
	defer tor.Close()
	tor.SetDeadline(deadline)

	var wg sync.WaitGroup
	r := rand.New(rand.NewPCG(s.seed, 2))
	r2 := rand.New(rand.NewPCG(s.seed, 3))
	pause := func(r *rand.Rand) {
		if s.pauses && r.IntN(8) == 0 {
			time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
		}
	}
	// The workstation writes.
	wg.Go(func() {
		n := 0
		for n < len(s.up) {
			if s.kind == kindWSAbort && n >= s.wAbortAt {
				break
			}
			k := min(1+r.IntN(s.wChunk), len(s.up)-n)
			if s.kind == kindWSAbort {
				k = min(k, s.wAbortAt-n)
			}
			if _, err := w.Write(s.up[n : n+k]); err != nil {
				// A reset is reported once, to the read or the write
				// that meets it first (gVisor and Linux alike).
				m.wWriteReset = strings.Contains(err.Error(), "connection reset by peer")
				return
			}
			n += k
			pause(r)
		}
		switch {
		case s.kind == kindWSAbort:
			m.wAborted.Store(true)
			wep.Abort()
		case s.wClose:
			w.CloseWrite()
			if s.wAbortAfterClose {
				time.Sleep(time.Duration(r.IntN(50)) * time.Millisecond)
				m.wAborted.Store(true)
				wep.Abort()
			}
		}
	})
	// Tor writes.
	wg.Go(func() {
		n := 0
		for n < len(s.down) {
			if s.kind == kindTorAbort && n >= s.tAbortAt {
				break
			}
			k := min(1+r2.IntN(s.wChunk), len(s.down)-n)
			if s.kind == kindTorAbort {
				k = min(k, s.tAbortAt-n)
			}
			if _, err := tor.Write(s.down[n : n+k]); err != nil {
				return
			}
			n += k
			pause(r2)
		}
		switch {
		case s.kind == kindTorAbort:
			tor.SetLinger(0)
			tor.Close()
		case s.tClose:
			if tor.CloseWrite() == nil {
				m.tWroteAll = true
			}
			if s.tAbortAfterClose {
				time.Sleep(time.Duration(r2.IntN(50)) * time.Millisecond)
				tor.SetLinger(0)
				tor.Close()
			}
		}
	})
	// Both read until the end.
	wg.Go(func() { m.wGot, m.wEnd, m.wErr = readAll(w, s.rChunk, &m.wAborted) })
	var never atomic.Bool
	wg.Go(func() {
		if s.kind == kindTorAbort || s.tAbortAfterClose {
			// Its reads end when it resets itself.
			m.tGot, m.tEnd, m.tErr = readAll(tor, s.rChunk, &never)
			if m.tEnd != endTimeout {
				m.tEnd = endSelf
			}
			return
		}
		m.tGot, m.tEnd, m.tErr = readAll(tor, s.rChunk, &never)
	})
	wg.Wait()
	// Every script ends its flow without help: wait for the relay to
	// close the workstation's connection before the deferred Close does.
	for m.closeCalls.Load() == 0 && !m.acceptFailed.Load() {
		if time.Now().After(deadline) {
			m.notEnded = true
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readAll(c net.Conn, chunk int, self *atomic.Bool) ([]byte, readEnd, error) {
	var got []byte
	buf := make([]byte, chunk)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		switch {
		case err == nil:
			continue
		case err == io.EOF:
			return got, endEOF, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return got, endTimeout, err
		case self.Load():
			return got, endSelf, err
		case errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "connection reset by peer"):
			return got, endReset, err
		}
		if errors.Is(err, net.ErrClosed) {
			return got, endSelf, err
		}
		return got, endOther, err
	}
}

// checkModel holds each flow, and the tunnels' counters, to the contract.
func checkModel(t *testing.T, mc modelConfig, flows []*modelFlow, events []globalEvent, faultSeq int64, faultHows []endHow, tnA, tnB *Tunnel, res *modelResult) {
	t.Helper()
	// Per label: flows that must end with it, flows that may.
	var must, may [2][numEndHow]int
	var fins [2]int
	var relayed, handshake [2]int
	refused := 0
	for _, m := range flows {
		s := m.s
		tun := 0
		if s.idle {
			tun = 1
		}
		fail := func(format string, args ...any) {
			t.Errorf("flow %d (%s, up %d down %d bytes, wClose %v tClose %v, wAbortAt %d tAbortAt %d upFailAt %d): %s; workstation read %d bytes, %s (%v); Tor read %d bytes, %s (%v); relay closed %d time(s), how %d",
				m.i, kindNames[s.kind], len(s.up), len(s.down), s.wClose, s.tClose, s.wAbortAt, s.tAbortAt, s.upFailAt,
				fmt.Sprintf(format, args...),
				len(m.wGot), readEndNames[m.wEnd], m.wErr, len(m.tGot), readEndNames[m.tEnd], m.tErr, m.closeCalls.Load(), m.closeHow.Load())
		}
		closeSeq := m.closeSeq.Load()
		// Global cut-offs that may have decided this flow's end: those
		// that began before the relay closed it.
		var global []endHow
		torDownBeforeDial := false
		if !s.idle {
			for _, ev := range events {
				if ev.seq < closeSeq || closeSeq == 0 {
					global = append(global, ev.how)
				}
				if ev.how == endTorDown && ev.seq < m.dialSeq {
					torDownBeforeDial = true
				}
			}
			if faultSeq >= 0 && (faultSeq < closeSeq || closeSeq == 0) {
				global = append(global, faultHows...)
			}
		}
		if m.dialErr != nil || m.rejected.Load() {
			// Only a Tor-down window may refuse a flow.
			if !torDownBeforeDial || !m.rejected.Load() {
				fail("dial failed (%v), rejected %v", m.dialErr, m.rejected.Load())
			}
			refused++
			if m.closeCalls.Load() != 0 {
				fail("a refused flow's connection was closed by the relay")
			}
			continue
		}
		if m.acceptFailed.Load() {
			// The workstation reset before the router finished the
			// handshake: Accept failed, and the flow was refused.
			if !m.wAborted.Load() || m.closeCalls.Load() != 0 || len(m.tGot) != 0 {
				fail("Accept failed, but the workstation did not reset")
			}
			handshake[tun]++
			continue
		}
		relayed[tun]++
		if !bytes.HasPrefix(s.up, m.tGot) {
			fail("Tor's side read bytes the workstation did not send (or out of order)")
		}
		if !bytes.HasPrefix(s.down, m.wGot) {
			fail("the workstation read bytes Tor did not send (or out of order)")
		}
		if m.wEnd == endTimeout || m.tEnd == endTimeout || m.notEnded {
			fail("hung")
			continue
		}
		if n := m.closeCalls.Load(); n != 1 {
			fail("the relay closed the workstation's connection %d times, want once", n)
			continue
		}
		fin := m.closeHow.Load() == closedFIN
		wReset := m.wEnd == endReset || m.wWriteReset
		if m.wEnd == endEOF && !m.wWriteReset && (!m.tWroteAll || len(m.wGot) != len(s.down)) {
			fail("the workstation got a FIN for a stream Tor did not finish")
		}
		if wReset && fin {
			fail("the workstation was reset, but the relay ended with a FIN")
		}
		if fin {
			fins[tun]++
			if len(m.wGot) != len(s.down) || len(m.tGot) != len(s.up) || m.wEnd != endEOF || m.tEnd != endEOF || wReset {
				fail("ended with a FIN without both streams complete")
			}
		}
		if m.wEnd == endOther || m.tEnd == endOther {
			fail("unexpected read error")
		}
		// The label the script calls for, then what global events allow.
		var own endHow
		switch s.kind {
		case kindClean:
			own = endFIN
			if len(global) == 0 && !fin {
				fail("a clean flow was reset")
			}
		case kindWSAbort:
			own = endClientError
		case kindTorAbort, kindUpWriteErr:
			own = endUpstreamError
			// Unless the workstation had read a whole stream and its
			// FIN, and stopped writing: then it cannot see the RST.
			if len(global) == 0 && !wReset && m.wEnd != endEOF {
				fail("the upstream failed, but the workstation was not reset")
			}
			if s.kind == kindUpWriteErr && len(m.tGot) > s.upFailAt {
				fail("Tor's side read past the failed write")
			}
		case kindIdle:
			own = endIdle
			// A RST after a FIN may be noticed first.
			if s.wAbortAfterClose {
				global = append(global, endClientError)
			}
			if s.tAbortAfterClose {
				global = append(global, endUpstreamError)
			}
		}
		if fin && own != endFIN {
			fail("ended with a FIN, but the script (%s) cannot", kindNames[s.kind])
		}
		if len(global) == 0 {
			must[tun][own]++
		}
		may[tun][own]++
		seen := map[endHow]bool{own: true}
		for _, h := range global {
			if !seen[h] {
				seen[h] = true
				may[tun][h]++
			}
		}
	}
	for i, tn := range []*Tunnel{tnA, tnB} {
		sum := 0
		for h := range numEndHow {
			got := int(testutil.ToFloat64(tn.ended[h]))
			sum += got
			res.ended[endHowLabels[h]] += got
			if got < must[i][h] || got > may[i][h] {
				t.Errorf("tunnel %c: flows_ended_total{how=%q} = %d, want %d to %d", 'A'+i, endHowLabels[h], got, must[i][h], may[i][h])
			}
		}
		if sum != relayed[i] {
			t.Errorf("tunnel %c: flows_ended_total sums to %d, %d flows relayed", 'A'+i, sum, relayed[i])
		}
		if got := int(testutil.ToFloat64(tn.ended[endFIN])); got != fins[i] {
			t.Errorf("tunnel %c: flows_ended_total{how=\"fin\"} = %d, but the relay closed %d flows with a FIN", 'A'+i, got, fins[i])
		}
		if got := int(testutil.ToFloat64(tn.refused.WithLabelValues(refuseHandshk))); got != handshake[i] {
			t.Errorf("tunnel %c: flows_refused_total{reason=handshake} = %d, %d workstations reset during the handshake", 'A'+i, got, handshake[i])
		}
		if got := int(testutil.ToFloat64(tn.flowsTotal)); got != relayed[i] {
			t.Errorf("tunnel %c: flows_total = %d, %d flows relayed", 'A'+i, got, relayed[i])
		}
	}
	if got := int(testutil.ToFloat64(tnA.refused.WithLabelValues(refuseNotReady))); got != refused {
		t.Errorf("flows_refused_total{reason=not_ready} = %d, %d flows refused", got, refused)
	}
	res.ended["refused"] = refused
	res.ended["handshake"] = handshake[0] + handshake[1]
}

func newModelTunnel(t *testing.T, connect func(context.Context, socks.Addr, socks.Auth) (net.Conn, error), mod func(*Config)) *Tunnel {
	iso, err := NewIsolator(IsolateSource, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Upstream: fakeUpstream{connect: connect}, Isolator: iso}
	mod(&cfg)
	tn, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

// eventually polls cond for up to 10 s.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// countFDs is the number of open descriptors of this process.
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// checkLeaks waits (boundedly) for goroutines and descriptors to return to
// what they were before the run.
func checkLeaks(t *testing.T, fds, goroutines int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		nf, ng := countFDs(t), runtime.NumGoroutine()
		if nf <= fds && ng <= goroutines {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("leak: %d descriptors (were %d), %d goroutines (were %d)\n%s", nf, fds, ng, goroutines, buf)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// modelWorkstation is a workstation's gVisor stack joined to the router's
// netstack.Stack by a bench.Link. Unlike bench.Workstation it hands out its
// endpoints, so a test can reset a connection (Abort), which gonet cannot.
type modelWorkstation struct {
	link *bench.Link
	st   *stack.Stack
	mtu  uint32
	disp atomic.Pointer[stack.NetworkDispatcher]
}

var _ stack.LinkEndpoint = (*modelWorkstation)(nil)

func newModelWorkstation(t *testing.T, addr netip.Addr) *modelWorkstation {
	w := &modelWorkstation{mtu: 1500}
	w.link = bench.NewLink(int(w.mtu), w.inject)
	w.st = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	sack := tcpip.TCPSACKEnabled(true)
	w.st.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	if err := w.st.CreateNIC(1, w); err != nil {
		t.Fatalf("workstation nic: %v", err)
	}
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix()}
	if err := w.st.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		t.Fatalf("workstation address: %v", err)
	}
	w.st.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	return w
}

// dial connects to dst through the router and returns the connection and
// its endpoint.
func (w *modelWorkstation) dial(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, tcpip.Endpoint, error) {
	var wq waiter.Queue
	ep, terr := w.st.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, nil, errors.New(terr.String())
	}
	entry, ch := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	switch terr := ep.Connect(tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}); terr.(type) {
	case nil:
	case *tcpip.ErrConnectStarted:
		select {
		case <-ch:
		case <-ctx.Done():
			ep.Close()
			return nil, nil, ctx.Err()
		}
		if terr := ep.LastError(); terr != nil {
			ep.Close()
			return nil, nil, errors.New(terr.String())
		}
	default:
		ep.Close()
		return nil, nil, errors.New(terr.String())
	}
	return gonet.NewTCPConn(&wq, ep), ep, nil
}

func (w *modelWorkstation) close() {
	w.link.Close()
	w.st.Close()
	w.st.Wait()
}

// inject delivers a packet the router wrote.
func (w *modelWorkstation) inject(pkt []byte) {
	d := w.disp.Load()
	if d == nil || *d == nil || len(pkt) == 0 {
		return
	}
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	(*d).DeliverNetworkPacket(header.IPv4ProtocolNumber, pkb)
	pkb.DecRef()
}

// WritePackets queues the workstation's packets towards the router.
func (w *modelWorkstation) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		buf, idx, ok := w.link.Get()
		if !ok || pkt.Size() > len(buf) {
			w.link.Drop() // TCP retransmits; a full queue is a congested link
			break
		}
		v := pkt.ToView() // a copy: tests may allocate
		copy(buf, v.AsSlice())
		v.Release()
		w.link.Put(idx, pkt.Size())
		n++
	}
	if n == 0 && pkts.Len() > 0 {
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return n, nil
}

func (w *modelWorkstation) MTU() uint32                                  { return w.mtu }
func (w *modelWorkstation) SetMTU(mtu uint32)                            {}
func (w *modelWorkstation) MaxHeaderLength() uint16                      { return 0 }
func (w *modelWorkstation) LinkAddress() tcpip.LinkAddress               { return "" }
func (w *modelWorkstation) SetLinkAddress(tcpip.LinkAddress)             {}
func (w *modelWorkstation) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (w *modelWorkstation) Attach(d stack.NetworkDispatcher)             { w.disp.Store(&d) }
func (w *modelWorkstation) IsAttached() bool                             { p := w.disp.Load(); return p != nil && *p != nil }
func (w *modelWorkstation) Wait()                                        {}
func (w *modelWorkstation) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (w *modelWorkstation) AddHeader(*stack.PacketBuffer)                {}
func (w *modelWorkstation) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (w *modelWorkstation) Close()                                       {}
func (w *modelWorkstation) SetOnCloseAction(func())                      {}
