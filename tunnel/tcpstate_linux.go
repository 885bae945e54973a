package tunnel

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpClosed reports whether c is a TCP socket in state TCP_CLOSE. A
// stream read to its end is then reset, not finished, if this side has
// not sent its own FIN: an orderly close by the peer leaves the socket in
// CLOSE_WAIT until this side shuts down too, while a RST moves it to
// CLOSE at once. The check exists because Linux reports a RST once, to
// whichever call meets it first: when that is a write (the relay sending
// the workstation's data towards Tor), the read after it sees a clean end
// of stream. One getsockopt of TCP_INFO's first byte (tcpi_state), only
// when a TCP upstream ends first; a unix socket, managed Tor's, is not
// concerned (its writes do not consume the pending error).
func tcpClosed(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	rc.Control(func(fd uintptr) {
		state, err := unix.GetsockoptByte(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		closed = err == nil && state == tcpStateClose
	})
	return closed
}

// tcpStateClose is TCP_CLOSE in include/net/tcp_states.h.
const tcpStateClose = 7
