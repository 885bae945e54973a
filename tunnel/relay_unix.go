//go:build unix

package tunnel

import (
	"net"
	"os"
	"syscall"
)

// socketWaiter waits until a socket has data (or end of stream, or an
// error) without reading it: a non-blocking MSG_PEEK of one byte inside
// the runtime poller's RawConn.Read, which parks the goroutine until the
// descriptor is readable. The callback is a method value made once per
// flow, so a wait allocates nothing.
type socketWaiter struct {
	rc   syscall.RawConn
	peek func(fd uintptr) bool
	b    [1]byte
	err  error // set by peekOnce, returned by WaitRead
}

// newSocketWaiter returns a waiter for c if it is a socket, else nil.
func newSocketWaiter(c net.Conn) *socketWaiter {
	rc := rawConn(c)
	if rc == nil {
		return nil
	}
	w := &socketWaiter{rc: rc}
	w.peek = w.peekOnce
	return w
}

// WaitRead blocks until a Read on the socket would not block. Closing the
// socket ends the wait with an error, and so does a pending socket error
// (a RST): on Linux the peek consumes it, and the Read after would see a
// clean end of stream instead (tcp_recvmsg clears sk_err even with
// MSG_PEEK), so the caller must treat it as the read's result.
func (w *socketWaiter) WaitRead() error {
	w.err = nil
	if err := w.rc.Read(w.peek); err != nil {
		return err
	}
	return w.err
}

// peekOnce reports whether the socket is readable now. false makes the
// poller wait for readability and call again; the peek is non-blocking,
// so it never sleeps in the kernel, and it is repeated after every wake
// because readiness is edge-triggered and reset on entry.
func (w *socketWaiter) peekOnce(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), w.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch err {
	case syscall.EAGAIN:
		return false
	case nil, syscall.EINTR:
	default:
		w.err = os.NewSyscallError("recvfrom", err)
	}
	return true
}
