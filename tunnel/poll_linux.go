package tunnel

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller tells the relay when upstream sockets become readable, with one
// goroutine for all of them: an epoll set of its own (one-shot, re-armed
// by the relay after it drained a socket) whose descriptor is itself
// parked in the runtime's poller, so waiting costs no thread either. The
// runtime's own poller cannot be asked "tell me when" without a goroutine
// blocked per socket, which is what an idle flow must not cost.
type poller struct {
	f    *os.File
	rc   syscall.RawConn
	epfd int // f's descriptor; f.Fd() would switch it to blocking mode

	mu   sync.Mutex
	fns  map[uint64]func() // guarded by mu; registration id -> kick
	next uint64            // guarded by mu

	events []unix.EpollEvent // owned by loop
	n      int               // owned by loop
	waitFn func(fd uintptr) bool
	done   chan struct{}
}

func newPoller() (*poller, error) {
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
	p := &poller{f: f, rc: rc, epfd: fd, fns: make(map[uint64]func()), events: make([]unix.EpollEvent, 128), done: make(chan struct{})}
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
		p.n = max(n, 0) // an error (the set was closed) reads as no events
		return n > 0
	}
}

func (p *poller) loop() {
	defer close(p.done)
	for {
		if err := p.rc.Read(p.waitFn); err != nil {
			return // closed
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

func (p *poller) close() {
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

// ctl changes fd's registration. It runs inside RawConn.Control, so the
// descriptor cannot be closed (and its number reused) meanwhile.
func (p *poller) ctl(op, fd int, id uint64) error {
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd:     int32(uint32(id)),
		Pad:    int32(uint32(id >> 32)),
	}
	return unix.EpollCtl(p.epfd, op, fd, &ev)
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
	if p == nil {
		return nil
	}
	s := &socketSource{p: p, rc: rc, id: p.add(kick)}
	s.readFn = s.readOnce
	s.armFn = s.armOnce
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
	s.armErr = s.p.ctl(op, int(fd), s.id)
	if s.armErr == nil {
		s.added = true
	}
}

func (s *socketSource) arm() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return true // let the pump read and see the end
	}
	if err := s.rc.Control(s.armFn); err != nil || s.armErr != nil {
		// Closed, or epoll refused: read now and meet the error.
		return true
	}
	return false
}

func (s *socketSource) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	if s.added {
		s.rc.Control(func(fd uintptr) { s.p.ctl(unix.EPOLL_CTL_DEL, int(fd), s.id) })
	}
	s.p.remove(s.id)
}

func (*socketSource) drainedOnShort() bool { return true }

// poller returns the tunnel's poller, made on first use; nil if epoll is
// unavailable (the relay then waits with a goroutine per direction).
func (t *Tunnel) poller() *poller {
	t.pollOnce.Do(func() {
		p, err := newPoller()
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
