package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Copy buffers come in three sizes, pooled as pointers. A direction starts
// small and moves up a size when a read fills its buffer, down when reads
// use a quarter of it: interactive flows stay at 16 KiB, bulk ones reach
// 256 KiB, where one read takes what a loopback socket holds and one write
// hands gVisor several 64 KiB GSO segments at once (bench/README.md: 32
// KiB buffers gave 0.15 of the kernel path downstream, 256 KiB 0.29). An
// idle direction holds none (pipe).
const (
	relayBufSmall = 16 << 10
	relayBufMid   = 64 << 10
	relayBufLarge = 256 << 10
)

var relayBufSizes = [...]int{relayBufSmall, relayBufMid, relayBufLarge}

var relayBufs = [...]sync.Pool{
	{New: func() any { return new([relayBufSmall]byte) }},
	{New: func() any { return new([relayBufMid]byte) }},
	{New: func() any { return new([relayBufLarge]byte) }},
}

// relayBuf is a pooled buffer of size class class.
type relayBuf struct {
	class int
	ptr   any // *[N]byte, returned to relayBufs[class]
	b     []byte
}

func getRelayBuf(class int) relayBuf {
	p := relayBufs[class].Get()
	var b []byte
	switch v := p.(type) {
	case *[relayBufSmall]byte:
		b = v[:]
	case *[relayBufMid]byte:
		b = v[:]
	case *[relayBufLarge]byte:
		b = v[:]
	}
	return relayBuf{class: class, ptr: p, b: b}
}

func (r *relayBuf) put() {
	if r.ptr != nil {
		relayBufs[r.class].Put(r.ptr)
		*r = relayBuf{}
	}
}

// nextClass picks the buffer size class after a read of n bytes into a
// buffer of class c.
func nextClass(c, n int) int {
	switch {
	case n == relayBufSizes[c] && c < len(relayBufSizes)-1:
		return c + 1
	case n <= relayBufSizes[c]/4 && c > 0:
		return c - 1
	}
	return c
}

type closeWriter interface{ CloseWrite() error }

// A source is one direction's read side as the relay drives it: drained
// without blocking, then asked to announce more. While a flow is idle no
// goroutine and no buffer is held for it; a notification (gVisor's waiter
// queue for the workstation's side, epoll for the upstream socket) starts
// a pump goroutine that copies until the source is drained and then ends.
// At 1,000 idle flows that is the difference between ~10 MiB of goroutine
// stacks and none (bench/README.md).
type source interface {
	// tryRead reads what is there into b. wouldBlock reports that nothing
	// was. A source that cannot tell blocks instead.
	tryRead(b []byte) (n int, wouldBlock bool, err error)
	// arm asks for one kick once the source is readable. It reports true
	// if the source may be readable already (and then need not kick).
	arm() (readyNow bool)
	// stop ends the kicks. It is called before the connection is closed
	// and may be called more than once.
	stop()
	// drainedOnShort reports that a read shorter than the buffer means
	// the source is empty, so the pump can stop without another read.
	drainedOnShort() bool
}

// notifyConn is a connection that can be drained and can announce data:
// netstack.Conn.
type notifyConn interface {
	TryRead(b []byte) (n int, wouldBlock bool, err error)
	Readable() bool
	NotifyRead(fn func())
	StopNotifyRead()
}

// notifySource drives a notifyConn. The notification stays registered for
// the flow's life; kicks while a pump runs are ignored.
type notifySource struct{ c notifyConn }

func (s notifySource) tryRead(b []byte) (int, bool, error) { return s.c.TryRead(b) }
func (s notifySource) arm() bool                           { return s.c.Readable() }
func (s notifySource) stop()                               { s.c.StopNotifyRead() }
func (s notifySource) drainedOnShort() bool                { return true }

// blockingSource is any other net.Conn: the pump blocks in Read, holding
// its goroutine and buffer (pipes in tests, exotic upstreams).
type blockingSource struct{ c net.Conn }

func (s blockingSource) tryRead(b []byte) (int, bool, error) {
	n, err := s.c.Read(b)
	return n, false, err
}
func (blockingSource) arm() bool            { return true }
func (blockingSource) stop()                {}
func (blockingSource) drainedOnShort() bool { return false }

// waitSource is a connection that can wait for data without a buffer but
// cannot announce it: each wait costs a goroutine (but no buffer).
type waitSource struct {
	c    net.Conn
	w    readWaiter
	kick func()
	// err is what the last wait met (a RST it consumed): the next read's
	// result.
	err atomic.Pointer[error]
}

func (s *waitSource) tryRead(b []byte) (int, bool, error) {
	if err := s.err.Load(); err != nil {
		return 0, false, *err
	}
	n, err := s.c.Read(b)
	return n, false, err
}

func (s *waitSource) arm() bool {
	go func() {
		if err := s.w.WaitRead(); err != nil {
			s.err.Store(&err)
		}
		s.kick()
	}()
	return false
}
func (*waitSource) stop()                {}
func (*waitSource) drainedOnShort() bool { return true }

// readWaiter is implemented by connections that can wait for data without
// a buffer.
type readWaiter interface{ WaitRead() error }

// rawConn returns c's descriptor access if c is a socket (or file), else
// nil.
func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// sourceFor picks how to drive c's reads; kick starts a pump.
func (t *Tunnel) sourceFor(c net.Conn, kick func()) source {
	if nc, ok := c.(notifyConn); ok {
		nc.NotifyRead(kick)
		return notifySource{nc}
	}
	if s := t.socketSource(c, kick); s != nil {
		return s
	}
	if w := newSocketWaiter(c); w != nil {
		return &waitSource{c: c, w: w, kick: kick}
	}
	return blockingSource{c}
}

// Pump states of a direction.
const (
	pumpStarting int32 = iota // being set up: kicks are ignored
	pumpIdle                  // armed, no goroutine
	pumpRunning               // a pump goroutine owns the direction
	pumpDone                  // finished (EOF) or the flow ended
)

// direction is one way of a flow: src's bytes to dst.
type direction struct {
	f       *flow
	src     source
	srcConn net.Conn
	dst     net.Conn
	state   atomic.Int32
	class   int   // buffer size class; owned by the running pump
	total   int64 // bytes copied; owned by the running pump
}

// kick starts a pump unless one runs or the direction is finished. It is
// called from notifications and must not block.
func (d *direction) kick() {
	if !d.state.CompareAndSwap(pumpIdle, pumpRunning) {
		return
	}
	if !d.f.hold() {
		d.state.Store(pumpDone)
		return
	}
	d.f.t.pumps.run(d)
}

// pumpPool runs pumps on goroutines that outlive one drain. A pump goes
// idle whenever it has drained its source, which in a bulk transfer is
// thousands of times a second: a fresh goroutine each time would pay for
// creation and grow its stack anew through the socket and gVisor call
// chains (one stream upstream lost ~10 % of its rate to that). Idle
// workers wait a little for the next pump, then exit, so a quiet tunnel
// holds none.
type pumpPool struct {
	work    chan *direction // unbuffered: a send succeeds only into a waiting worker
	quit    chan struct{}
	idle    atomic.Int32
	maxIdle int32
	keep    time.Duration
}

func newPumpPool() pumpPool {
	return pumpPool{
		work:    make(chan *direction),
		quit:    make(chan struct{}),
		maxIdle: int32(2 * runtime.GOMAXPROCS(0)),
		keep:    2 * time.Second,
	}
}

// run hands d to an idle worker, or starts one.
func (p *pumpPool) run(d *direction) {
	select {
	case p.work <- d:
	default:
		go p.worker(d)
	}
}

func (p *pumpPool) worker(d *direction) {
	var timer *time.Timer
	for {
		d.pump()
		if p.idle.Add(1) > p.maxIdle {
			p.idle.Add(-1)
			return
		}
		if timer == nil {
			timer = time.NewTimer(p.keep)
		} else {
			timer.Reset(p.keep)
		}
		select {
		case d = <-p.work:
			p.idle.Add(-1)
		case <-timer.C:
			p.idle.Add(-1)
			return
		case <-p.quit:
			p.idle.Add(-1)
			return
		}
	}
}

func (p *pumpPool) close() { close(p.quit) }

// pump copies until the source is drained, then arms it and ends.
func (d *direction) pump() {
	defer d.f.unhold()
	var buf relayBuf
	defer buf.put()
	for {
		if buf.ptr == nil {
			buf = getRelayBuf(d.class)
		}
		size := len(buf.b)
		n, wouldBlock, err := d.src.tryRead(buf.b)
		if n > 0 {
			d.f.last.Store(time.Now().UnixNano())
			if _, werr := d.dst.Write(buf.b[:n]); werr != nil {
				d.state.Store(pumpDone)
				d.f.abort(d.errHow(false))
				return
			}
			d.total += int64(n)
			if next := nextClass(d.class, n); next != d.class {
				d.class = next
				buf.put()
			}
		}
		if err != nil {
			d.state.Store(pumpDone)
			if errors.Is(err, io.EOF) {
				d.finish()
			} else {
				d.f.abort(d.errHow(true))
			}
			return
		}
		if wouldBlock || (n < size && d.src.drainedOnShort()) {
			// Drained: give the buffer back, hand the direction to the
			// next notification, and end unless data is already there.
			buf.put()
			d.state.Store(pumpIdle)
			if !d.src.arm() || !d.state.CompareAndSwap(pumpIdle, pumpRunning) {
				return
			}
		}
	}
}

// errHow names the end of a flow whose direction d failed: reading its
// source (read) or writing its destination. The upstream is the source
// of the downstream direction (dirs[1]) and the destination of the
// other.
func (d *direction) errHow(read bool) endHow {
	fromUp := d == &d.f.dirs[1]
	if fromUp == read {
		return endUpstreamError
	}
	return endClientError
}

// finish ends a direction whose source reached EOF. An end of stream
// from the upstream is a RST if the upstream is known to be gone
// (Config.UpstreamState), fails its confirmation (Config.UpstreamConfirm)
// or Tor is not ready, and otherwise a FIN: once confirmed, else at once
// when the upstream is known to be alive, else after Config.EOFGrace if
// set (and then only if Tor is still ready and the flow was not cut off
// meanwhile).
func (d *direction) finish() {
	d.src.stop()
	if d != &d.f.dirs[1] {
		d.finishNow()
		return
	}
	f := d.f
	// A write towards Tor may have met Tor's RST first and taken the
	// error with it (tcpClosed); then this end of stream is a reset. A
	// socket whose FINs were exchanged in order is in TCP_CLOSE too once
	// this side's FIN is acknowledged, so the check must not see one the
	// other direction sent: it holds upMu, under which the upstream
	// direction marks upShut and half-closes, so upShut false means no
	// FIN of ours (a check between reading upShut and the socket's state
	// took one that the other direction sent in between, and its ACK
	// from loopback, for a RST: seen under qemu, 2026-12-06).
	f.upMu.Lock()
	reset := !f.upShut && tcpClosed(f.up)
	f.upMu.Unlock()
	if reset {
		f.abort(endUpstreamError)
		return
	}
	grace := f.t.cfg.EOFGrace
	if state := f.lane.UpstreamState; state != nil {
		gone, known := state()
		if known && gone {
			f.abort(endTorDown)
			return
		}
		if known {
			grace = 0
		}
	}
	if confirm := f.lane.UpstreamConfirm; confirm != nil {
		// The confirmation keeps the flow referenced until it has
		// decided.
		if !f.hold() {
			return
		}
		confirm(func(alive bool) {
			defer f.unhold()
			if !alive {
				f.abort(endTorDown)
				return
			}
			d.passEOF()
		})
		return
	}
	if grace == 0 {
		d.passEOF()
		return
	}
	// The timer keeps the flow referenced until it has decided.
	if !f.hold() {
		return
	}
	time.AfterFunc(grace, func() {
		defer f.unhold()
		d.passEOF()
	})
}

// passEOF passes the upstream's end of stream on: a FIN while Tor is
// ready, a RST once it is not.
func (d *direction) passEOF() {
	if !d.f.t.ready(d.f.lane) {
		d.f.abort(endTorDown)
		return
	}
	d.finishNow()
}

// finishNow half-closes the other side, and ends the flow once both
// directions are done.
func (d *direction) finishNow() {
	if d.f.aborted.Load() {
		return
	}
	f := d.f
	// The second direction to finish does not half-close: abort closes
	// both ends at once, and a close after both ends of stream sends the
	// FIN itself (nothing is left unread on either side). For a short
	// connection that is one shutdown system call less (2026-12-02).
	if f.halfDone.Add(1) == 2 {
		f.abort(endFIN)
		return
	}
	if cw, ok := d.dst.(closeWriter); ok {
		if d == &f.dirs[0] {
			// The FIN to the upstream and its mark, together: see finish.
			f.upMu.Lock()
			f.upShut = true
			cw.CloseWrite()
			f.upMu.Unlock()
		} else {
			cw.CloseWrite()
		}
	}
	// The source needs no CloseRead: it has read its EOF, and for a
	// socket a shutdown(SHUT_RD) would be one more system call per flow
	// for nothing. This was the first direction done: from now on the
	// other must make progress within the (shorter) half-close limit.
	f.last.Store(time.Now().UnixNano())
}

// flow is one relayed connection: the workstation's end and the
// upstream's, and a direction each way.
type flow struct {
	t          *Tunnel
	lane       *lane // the upstream the flow went out on
	client, up net.Conn
	dirs       [2]direction // upstream (client to up), downstream
	// last is the time of the last byte either way, in UnixNano.
	last     atomic.Int64
	halfDone atomic.Int32
	// upShut is set, under upMu, when the upstream direction
	// half-closes the upstream (finishNow); see finish.
	upMu   sync.Mutex
	upShut bool
	// refs counts the flow itself (until abort) and running pumps; the
	// last one out ends the flow.
	refs    atomic.Int32
	aborted atomic.Bool
	end     func() // releases the flow's admission

	prev, next *flow // the tunnel's list of open flows; guarded by t.mu
}

// hold takes a reference unless the flow has ended.
func (f *flow) hold() bool {
	for {
		r := f.refs.Load()
		if r == 0 {
			return false
		}
		if f.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

func (f *flow) unhold() {
	if f.refs.Add(-1) == 0 {
		f.ended()
	}
}

// abort closes both connections (ending any pump blocked in a write) and
// drops the flow's own reference; how says why, and anything but endFIN
// resets the workstation's connection. Only the first call acts.
func (f *flow) abort(how endHow) {
	if !f.aborted.CompareAndSwap(false, true) {
		return
	}
	for i := range f.dirs {
		f.dirs[i].src.stop()
	}
	f.t.ended[how].Inc()
	if how != endFIN {
		reset(f.client)
	} else {
		f.client.Close()
	}
	f.up.Close()
	f.unhold()
}

// aborter is a connection that can end with a RST: netstack.Conn.
type aborter interface{ Abort() error }

// linger is a socket whose close can send a RST (SO_LINGER 0):
// *net.TCPConn.
type linger interface{ SetLinger(sec int) error }

// reset closes c with a RST where c can send one, else plainly.
func reset(c net.Conn) {
	switch v := c.(type) {
	case aborter:
		v.Abort()
		return
	case linger:
		v.SetLinger(0)
	}
	c.Close()
}

// ended runs once, when the flow and all its pumps are done.
func (f *flow) ended() {
	f.t.unlist(f)
	f.t.bytes.WithLabelValues("upstream").Add(float64(f.dirs[0].total))
	f.t.bytes.WithLabelValues("downstream").Add(float64(f.dirs[1].total))
	f.end()
	f.t.wg.Done()
}

// expired reports whether the flow has been quiet for longer than its
// limit: IdleTimeout, or HalfCloseTimeout once one direction finished.
func (f *flow) expired(now int64) bool {
	limit := f.t.cfg.IdleTimeout
	if f.halfDone.Load() > 0 {
		limit = f.t.cfg.HalfCloseTimeout
	}
	return time.Duration(now-f.last.Load()) >= limit
}

// relay starts copying both ways and returns; the flow runs on
// notifications until both directions finish, an error or the idle sweep
// ends it, or EndAll. A clean EOF one way half-closes the other side. end
// is called once everything is closed.
func (t *Tunnel) relay(l *lane, gen context.Context, client, up net.Conn, end func()) {
	// Close waits on wg once it has set shut: a flow that reaches this
	// point after that (its dial raced the shutdown) is reset here and
	// never joins wg, whose Add must not race that Wait.
	t.mu.Lock()
	if t.shut {
		t.mu.Unlock()
		t.ended[endShutdown].Inc()
		reset(client)
		up.Close()
		end()
		return
	}
	t.wg.Add(1)
	t.mu.Unlock()
	f := &flow{t: t, lane: l, client: client, up: up, end: end}
	// One reference for the flow, one for this setup, so that nothing
	// ends it before every field is set.
	f.refs.Store(2)
	defer f.unhold()
	f.last.Store(time.Now().UnixNano())
	for i, pair := range [2][2]net.Conn{{client, up}, {up, client}} {
		d := &f.dirs[i]
		d.f, d.srcConn, d.dst = f, pair[0], pair[1]
		d.src = t.sourceFor(pair[0], d.kick)
	}
	if !t.list(f, gen) {
		// EndAll or EndLane ran while this flow was dialing.
		f.abort(t.endHow(l))
		return
	}
	// Kicks count from here on; arm catches what arrived before.
	for i := range f.dirs {
		d := &f.dirs[i]
		d.state.Store(pumpIdle)
		if d.src.arm() {
			d.kick()
		}
	}
}

// list adds f to the open flows, unless gen (the generation f was
// admitted in) has ended. The first flow starts the idle sweep.
func (t *Tunnel) list(f *flow, gen context.Context) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen.Err() != nil {
		return false
	}
	f.next = t.flows
	if t.flows != nil {
		t.flows.prev = f
	}
	t.flows = f
	if t.sweep == nil {
		t.sweep = time.AfterFunc(t.sweepEvery, t.sweepIdle)
	}
	return true
}

func (t *Tunnel) unlist(f *flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.prev != nil {
		f.prev.next = f.next
	} else if t.flows == f {
		t.flows = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	}
	f.prev, f.next = nil, nil
}

// sweepIdle ends flows quiet past their limit. One timer for all flows
// instead of one each (a timer and its closure are ~200 bytes a flow);
// it runs every sweepEvery while flows are open, so a flow ends at most
// that much after its limit.
func (t *Tunnel) sweepIdle() {
	now := time.Now().UnixNano()
	var idle []*flow
	t.mu.Lock()
	for f := t.flows; f != nil; f = f.next {
		if f.expired(now) {
			idle = append(idle, f)
		}
	}
	if t.flows != nil || len(idle) > 0 {
		t.sweep.Reset(t.sweepEvery)
	} else {
		t.sweep = nil
	}
	t.mu.Unlock()
	for _, f := range idle {
		f.abort(endIdle)
	}
}

// sweepInterval is an eighth of the shortest limit, between 10 ms and 10 s.
func sweepInterval(idle, half time.Duration) time.Duration {
	return min(max(min(idle, half)/8, 10*time.Millisecond), 10*time.Second)
}
