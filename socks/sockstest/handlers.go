package sockstest

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/torgate/torgate/socks"
)

// marker is a placeholder connection that a ConnectFunc returns to ask the
// server to handle the stream itself. Its net.Conn methods are never called.
type marker struct {
	net.Conn
	kind int
}

// Marker kinds.
const (
	markEcho = iota
	markDiscard
	markHang
)

var (
	echoConn    net.Conn = &marker{kind: markEcho}
	discardConn net.Conn = &marker{kind: markDiscard}
	hangConn    net.Conn = &marker{kind: markHang}
)

// Echo accepts every CONNECT and echoes the stream back: the server writes
// each byte it reads, and half-closes when the client does.
func Echo(Request) (socks.Reply, net.Conn) { return socks.ReplySucceeded, echoConn }

// Discard accepts every CONNECT, reads and drops the stream and never writes.
func Discard(Request) (socks.Reply, net.Conn) { return socks.ReplySucceeded, discardConn }

// Hang never answers a CONNECT, like Tor waiting for a circuit; the server
// holds the connection until the client or Close ends it.
func Hang(Request) (socks.Reply, net.Conn) { return 0, hangConn }

// Refuse answers every CONNECT with code.
func Refuse(code socks.Reply) ConnectFunc {
	return func(Request) (socks.Reply, net.Conn) { return code, nil }
}

// DialLoopback connects CONNECT requests whose destination is a loopback IP
// (127.0.0.0/8, ::1) to that destination and refuses every other one with
// ReplyNotAllowed, without any network access. It is the default.
func DialLoopback(req Request) (socks.Reply, net.Conn) {
	if req.Dst.Name != "" || !req.Dst.IP.IsLoopback() {
		return socks.ReplyNotAllowed, nil
	}
	return dialLoopback(netip.AddrPortFrom(req.Dst.IP, req.Dst.Port).String())
}

// DialTo connects each CONNECT to the loopback address route returns for
// its destination, such as the "127.0.0.1:port" of an httptest server; this
// is how a test reaches its own server through a name like "example.com".
// An empty route answers ReplyHostUnreachable; a target that is not a
// loopback IP:port answers ReplyNotAllowed and is never dialed. A refused
// dial answers ReplyConnectionRefused.
func DialTo(route func(dst socks.Addr) string) ConnectFunc {
	return func(req Request) (socks.Reply, net.Conn) {
		target := route(req.Dst)
		if target == "" {
			return socks.ReplyHostUnreachable, nil
		}
		return dialLoopback(target)
	}
}

// DialMap is DialTo over a fixed table: destination to loopback "IP:port".
// Destinations missing from routes answer ReplyHostUnreachable. The map
// must not change while the server runs.
func DialMap(routes map[socks.Addr]string) ConnectFunc {
	return DialTo(func(dst socks.Addr) string { return routes[dst] })
}

// dialTimeout bounds a loopback dial; it only matters on a loaded machine.
const dialTimeout = 5 * time.Second

// dialLoopback dials target if it is a loopback IP:port.
func dialLoopback(target string) (socks.Reply, net.Conn) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return socks.ReplyNotAllowed, nil
	}
	c, err := net.DialTimeout("tcp", ap.String(), dialTimeout)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return socks.ReplyConnectionRefused, nil
	case err != nil:
		return socks.ReplyHostUnreachable, nil
	}
	return socks.ReplySucceeded, c
}
