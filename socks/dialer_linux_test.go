package socks

import (
	"errors"
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUnixSendBuffer: a unix-socket connection to Tor gets a send buffer
// large enough for a bulk upload (the kernel reports twice what was set).
func TestUnixSendBuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "socks.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := NewDialer("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := sockopt(t, c, unix.SOL_SOCKET, unix.SO_SNDBUF)
	// The kernel caps the request at net.core.wmem_max (often 208 KiB,
	// 4 MiB on this machine), so compare with what was possible; the
	// default without the request is wmem_default, half of that.
	if want := min(unixSendBuffer, wmemMax(t)) * 2; got < want {
		t.Fatalf("SO_SNDBUF %d, want at least %d", got, want)
	}
}

func wmemMax(t *testing.T) int {
	// Ask the kernel what an oversized request yields on a fresh socket.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<30)
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		t.Fatal(err)
	}
	return v / 2
}

// TestDialNoKeepalive: a stream to a local SOCKS server carries no TCP
// keepalive (Go turns it on by default, at three setsockopt calls per
// connection).
func TestDialNoKeepalive(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := Dial(t.Context(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if ka := sockopt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE); ka != 0 {
			t.Errorf("%s: SO_KEEPALIVE = %d, want 0", addr, ka)
		}
		// The bind Go does before connect reserves no port (bind_linux.go:
		// without it ~28,000 streams a minute ran out of ports).
		// qemu's user-mode emulation (the router architectures' tests in
		// CI) knows no IP_BIND_ADDRESS_NO_PORT and answers ENOPROTOOPT;
		// there the option cannot be set either, and Dial ignores that.
		var got int
		var gerr error
		rc, err := c.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rc.Control(func(fd uintptr) {
			got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT)
		})
		switch {
		case errors.Is(gerr, unix.ENOPROTOOPT):
			t.Logf("%s: IP_BIND_ADDRESS_NO_PORT unknown here (an emulator): not checked", addr)
		case gerr != nil:
			t.Fatal(gerr)
		case got != 1:
			t.Errorf("%s: IP_BIND_ADDRESS_NO_PORT = %d, want 1", addr, got)
		}
	}
}

// sockopt reads an integer socket option of c.
func sockopt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}
