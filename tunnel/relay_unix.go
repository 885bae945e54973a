//go:build unix

package tunnel

import (
	"net"
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
// socket ends the wait with an error.
func (w *socketWaiter) WaitRead() error { return w.rc.Read(w.peek) }

// peekOnce reports whether the socket is readable now. false makes the
// poller wait for readability and call again; the peek is non-blocking,
// so it never sleeps in the kernel, and it is repeated after every wake
// because readiness is edge-triggered and reset on entry.
func (w *socketWaiter) peekOnce(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), w.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}
