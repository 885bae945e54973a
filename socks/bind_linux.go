package socks

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// noPortAtBind sets IP_BIND_ADDRESS_NO_PORT before Dial's bind. Dialer.DialTCP
// takes a local AddrPort, and its zero value still makes Go bind to
// 0.0.0.0:0, which reserves an ephemeral port outright: a port whose last
// connection is in TIME_WAIT cannot be picked again, so ~28,000 streams to
// Tor within a minute (470 a second, sustained) exhausted the range and
// every further dial failed with EADDRINUSE (seen 2026-12-05 when tests
// made 40,000 loopback streams in a minute). With the option the port is
// chosen at connect, which may reuse a TIME_WAIT one towards loopback
// (tcp_tw_reuse's default) or share one across destinations. An error is
// ignored: the bind then reserves as before.
func noPortAtBind(_, _ string, rc syscall.RawConn) error {
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	return nil
}
