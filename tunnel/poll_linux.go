package tunnel

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller tells the relay when upstream sockets become readable, with one
// goroutine for all of them: an epoll set of its own (one-shot, re-armed
// by the relay after it drained a socket) whose descriptor is itself
// parked in the runtime's poller, so waiting costs no thread either. The
// runtime's own poller cannot be asked "tell me when" without a goroutine
// blocked per socket, which is what an idle flow must not cost.
//
// If the set fails (epoll_wait errs, or its descriptor is closed under
// it), the poller fails for good: every registered source is kicked and
// its next read returns errPollerFailed, so each flow waiting on the set
// ends with a RST instead of waiting for a notification that cannot come;
// new flows then wait with a goroutine per direction (Tunnel.socketSource).
type poller struct {
	f   *os.File
	rc  syscall.RawConn
	log *slog.Logger

	// epollCtl is unix.EpollCtl. A test may replace it before the first
	// flow to inject errors (relay_fault_test.go); nothing else does.
	epollCtl func(epfd, op, fd int, ev *unix.EpollEvent) error

	mu   sync.Mutex
	fns  map[uint64]func() // guarded by mu; registration id -> kick
	next uint64            // guarded by mu

	events  []unix.EpollEvent // owned by loop
	n       int               // owned by loop
	waitErr error             // owned by loop
	waitFn  func(fd uintptr) bool
	done    chan struct{}

	failed  atomic.Bool // the set failed or was closed; see fail
	closing atomic.Bool // close was called: a failure is expected
}

// errPollerFailed is what a source reads once its poller has failed.
var errPollerFailed = errors.New("tunnel: epoll set failed")

func newPoller(log *slog.Logger) (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	// Non-blocking, so os.NewFile registers it with the runtime poller.
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &poller{f: f, rc: rc, log: log, epollCtl: unix.EpollCtl, fns: make(map[uint64]func()), events: make([]unix.EpollEvent, 128), done: make(chan struct{})}
	p.waitFn = p.wait
	go p.loop()
	return p, nil
}

// wait harvests ready events without blocking; false parks the loop in
// the runtime poller until the epoll descriptor is readable.
func (p *poller) wait(fd uintptr) bool {
	for {
		n, err := unix.EpollWait(int(fd), p.events, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Parking would wait for a readiness that never comes.
			p.waitErr = os.NewSyscallError("epoll_wait", err)
			p.n = 0
			return true
		}
		p.n = n
		return n > 0
	}
}

func (p *poller) loop() {
	defer close(p.done)
	for {
		err := p.rc.Read(p.waitFn)
		if err == nil {
			err = p.waitErr
		}
		if err != nil {
			p.fail(err)
			return
		}
		for _, ev := range p.events[:p.n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			kick := p.fns[id]
			p.mu.Unlock()
			if kick != nil {
				kick()
			}
		}
	}
}

// fail marks the poller failed and kicks every registered source, whose
// pumps then read errPollerFailed and end their flows. A source
// registered later fails at its first arm or read.
func (p *poller) fail(err error) {
	p.failed.Store(true)
	if !p.closing.Load() {
		p.log.Error("epoll set failed: resetting the flows waiting on it; new flows wait with a goroutine each", "err", err)
	}
	p.mu.Lock()
	kicks := make([]func(), 0, len(p.fns))
	for _, kick := range p.fns {
		kicks = append(kicks, kick)
	}
	p.mu.Unlock()
	for _, kick := range kicks {
		kick()
	}
}

func (p *poller) close() {
	p.closing.Store(true)
	p.f.Close()
	<-p.done
}

func (p *poller) add(kick func()) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	p.fns[p.next] = kick
	return p.next
}

func (p *poller) remove(id uint64) {
	p.mu.Lock()
	delete(p.fns, id)
	p.mu.Unlock()
}

// ctlOnce applies s's pending registration change (s.op on s.fd) to the
// epoll set whose descriptor is epfd. The caller holds s.mu and runs
// inside the socket's RawConn.Control, and this inside the set's, so
// neither descriptor can be closed (and its number reused) meanwhile.
func (s *socketSource) ctlOnce(epfd uintptr) {
	s.ev = unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd:     int32(uint32(s.id)),
		Pad:    int32(uint32(s.id >> 32)),
	}
	s.ctlErr = s.p.epollCtl(int(epfd), s.op, s.fd, &s.ev)
}

// ctl changes s's registration (op on fd); the caller holds s.mu.
func (s *socketSource) ctl(op, fd int) error {
	if s.p.failed.Load() {
		return errPollerFailed
	}
	s.op, s.fd = op, fd
	if err := s.p.rc.Control(s.ctlFn); err != nil {
		return errPollerFailed // the set's descriptor was closed
	}
	return s.ctlErr
}

// socketSource drives an upstream socket: non-blocking reads through
// RawConn, readiness from the poller.
type socketSource struct {
	p  *poller
	rc syscall.RawConn
	id uint64

	mu      sync.Mutex // serializes arm and stop
	added   bool       // guarded by mu
	stopped bool       // guarded by mu
	// ctl's arguments and result, guarded by mu; ctlFn is ctlOnce, made
	// once so that arming allocates nothing.
	op, fd int
	ev     unix.EpollEvent
	ctlErr error
	ctlFn  func(epfd uintptr)

	// Read state, owned by the running pump.
	buf    []byte
	n      int
	err    error
	readFn func(fd uintptr) bool
	armFn  func(fd uintptr)
	armErr error
}

// socketSource returns a poller-driven source for a socket, or nil.
func (t *Tunnel) socketSource(c net.Conn, kick func()) source {
	rc := rawConn(c)
	if rc == nil {
		return nil
	}
	p := t.poller()
	if p == nil || p.failed.Load() {
		return nil
	}
	s := &socketSource{p: p, rc: rc, id: p.add(kick)}
	s.readFn = s.readOnce
	s.armFn = s.armOnce
	s.ctlFn = s.ctlOnce
	return s
}

func (s *socketSource) readOnce(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), s.buf)
		if err == unix.EINTR {
			continue
		}
		s.n, s.err = n, err
		return true
	}
}

func (s *socketSource) tryRead(b []byte) (int, bool, error) {
	// A failed registration or set: nothing would announce more data,
	// so end the flow rather than spin or wait forever. armErr is set by
	// arm, which ran before this pump started (on this goroutine, or
	// before the kick that started it).
	if s.armErr != nil {
		return 0, false, s.armErr
	}
	if s.p.failed.Load() {
		return 0, false, errPollerFailed
	}
	s.buf = b
	err := s.rc.Read(s.readFn)
	s.buf = nil
	if err != nil {
		return 0, false, err
	}
	switch {
	case s.err == unix.EAGAIN:
		return 0, true, nil
	case s.err != nil:
		return 0, false, os.NewSyscallError("read", s.err)
	case s.n == 0 && len(b) > 0:
		return 0, false, io.EOF
	}
	return s.n, false, nil
}

func (s *socketSource) armOnce(fd uintptr) {
	op := unix.EPOLL_CTL_MOD
	if !s.added {
		op = unix.EPOLL_CTL_ADD
	}
	if err := s.ctl(op, int(fd)); err != nil {
		s.armErr = os.NewSyscallError("epoll_ctl", err)
		return
	}
	s.added = true
}

func (s *socketSource) arm() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return true // let the pump read and see the end
	}
	if err := s.rc.Control(s.armFn); err != nil || s.armErr != nil {
		// Closed, or epoll refused: read now and meet the error
		// (tryRead returns armErr).
		return true
	}
	return false
}

// stop ends s's notifications. It leaves the socket in the epoll set:
// the flow closes the socket when it ends (flow.abort), and the kernel
// drops a file's registrations when the file is released, so an
// EPOLL_CTL_DEL here would be one more system call per flow for nothing
// (a tenth of a short connection's epoll_ctl calls, 2026-12-02). Until
// then a registration still armed can only deliver an event for an id
// that remove has forgotten, which the loop ignores; ids are never
// reused. TestRelayEpollReleasedAtClose checks the set empties.
func (s *socketSource) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	s.p.remove(s.id)
}

func (*socketSource) drainedOnShort() bool { return true }

// poller returns the tunnel's poller, made on first use; nil if epoll is
// unavailable (the relay then waits with a goroutine per direction).
func (t *Tunnel) poller() *poller {
	t.pollOnce.Do(func() {
		p, err := newPoller(t.log)
		if err != nil {
			t.log.Warn("epoll unavailable; idle flows hold goroutines", "err", err)
			return
		}
		t.poll = p
	})
	return t.poll
}

func (t *Tunnel) closePoller() {
	t.pollOnce.Do(func() {})
	if t.poll != nil {
		t.poll.close()
	}
}
