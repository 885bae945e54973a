package socks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// Handshake flow, one write and one exact read per step, never pipelined
// (see the package comment):
//
//	client                                  server
//	05 01 M                    greeting  ->          M = 00 (no auth) or 02 (username/password)
//	                                     <-  05 M    method reply
//	01 ULEN USER PLEN PASS     auth      ->          only when M = 02 (RFC 1929)
//	                                     <-  01 00   auth reply, 00 = success
//	05 CMD 00 ATYP ADDR PORT   request   ->
//	                                     <-  05 REP 00 ATYP ADDR PORT, then stream data
//
// The method codes are exported for servers (see ServerReader), which
// write the method reply.
const (
	MethodNoAuth       byte = 0x00 // RFC 1928: no authentication required
	MethodUserPass     byte = 0x02 // RFC 1929: username/password
	MethodNoAcceptable byte = 0xFF // RFC 1928: no acceptable methods

	userPassVersion = 0x01 // RFC 1929 sub-negotiation version
)

// reservedUserPrefix starts the usernames that Tor proposal 351 reserves for
// structured stream isolation ("<torS0X>0" is format zero). Tor parses such
// a username instead of using it as an opaque isolation key.
const reservedUserPrefix = "<torS0X>"

// Auth holds the RFC 1929 username/password that Tor uses for stream
// isolation: streams with different credentials never share a circuit
// (IsolateSOCKSAuth). An empty Username means no authentication (method
// 0x00).
type Auth struct {
	// Username is 1 to 255 bytes, or empty for no authentication. It must
	// not start with "<torS0X>", which proposal 351 reserves.
	Username string
	// Password is 1 to 255 bytes when Username is set, empty otherwise.
	Password string
}

// validate reports why a cannot be sent, without echoing the credentials.
func (a Auth) validate() error {
	switch {
	case a.Username == "" && a.Password != "":
		return fmt.Errorf("%w: password without username", ErrInvalidRequest)
	case a.Username == "":
		return nil
	case len(a.Username) > 255:
		return fmt.Errorf("%w: username is %d bytes, longer than 255", ErrInvalidRequest, len(a.Username))
	case a.Password == "":
		return fmt.Errorf("%w: empty password (RFC 1929 needs 1 to 255 bytes)", ErrInvalidRequest)
	case len(a.Password) > 255:
		return fmt.Errorf("%w: password is %d bytes, longer than 255", ErrInvalidRequest, len(a.Password))
	case strings.HasPrefix(a.Username, reservedUserPrefix):
		return fmt.Errorf("%w: username starts with %q, which Tor proposal 351 reserves", ErrInvalidRequest, reservedUserPrefix)
	}
	return nil
}

// Dialer speaks SOCKS5 to one upstream server. Its Dial func is the only way
// the package opens connections. A Dialer is safe for concurrent use; each
// request uses its own connection.
type Dialer struct {
	// Dial opens a connection to the SOCKS server (TCP or unix socket).
	// Required. It should honor ctx. Connect returns the connection it
	// returns as is.
	Dial func(ctx context.Context) (net.Conn, error)
	// Pipeline sends the username/password message and the request in
	// one write once the server has chosen username/password, instead of
	// waiting for the auth reply first: one round trip, one write and one
	// read less per stream on each side. Tor parses both from one read
	// (0.4.9.11, measured 2026-12-05; it does not accept the greeting and
	// the auth message together, and neither is ever sent so). Servers that
	// parse one message per read do not: microsocks 1.0.3 never answers.
	// Without a username it changes nothing.
	//
	// Over TCP it is not done. Tor sends its auth reply and, once the exit
	// has connected, its CONNECT reply as two small segments; the second
	// waits (Nagle) until the first is acknowledged, and a client that
	// sent everything already has nothing to carry that ACK, so its
	// kernel delays it: 40 ms per stream, against ~5 ms for the whole
	// CONNECT (capture of tgbench tor, attached Tor on 127.0.0.1,
	// 2026-12-06: time to first byte 49.5 ms against 12.7 through Tor's
	// TransPort). Sending the request after the auth reply carries that
	// ACK. A unix socket has neither Nagle nor delayed ACKs.
	Pipeline bool
}

// NewDialer returns a Dialer that connects to the SOCKS server at address
// over network "tcp" (also "tcp4", "tcp6") or "unix". A TCP address must be
// an IP literal and a non-zero port ("127.0.0.1:9050", "[::1]:9050"): the
// router must not depend on a DNS lookup to find Tor. A unix address is the
// socket path.
func NewDialer(network, address string) (*Dialer, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return nil, fmt.Errorf("socks dialer: server address %q is not IP:port (no DNS lookup is done for it): %w", address, err)
		}
		if ap.Port() == 0 {
			return nil, fmt.Errorf("socks dialer: server address %q has port 0", address)
		}
		if (network == "tcp4" && !ap.Addr().Unmap().Is4()) || (network == "tcp6" && !ap.Addr().Is6()) {
			return nil, fmt.Errorf("socks dialer: server address %q does not match network %q", address, network)
		}
		address = ap.String()
	case "unix":
		// 108 is the size of sun_path on Linux.
		if address == "" || len(address) > 108 || strings.IndexByte(address, 0) >= 0 {
			return nil, fmt.Errorf("socks dialer: unix socket path %q is empty, longer than 108 bytes or contains NUL", address)
		}
	default:
		return nil, fmt.Errorf("socks dialer: unsupported network %q, want \"tcp\" or \"unix\"", network)
	}
	return &Dialer{Dial: func(ctx context.Context) (net.Conn, error) {
		return Dial(ctx, network, address)
	}}, nil
}

// Dial connects to a SOCKS server at address on network ("tcp" or
// "unix") the way a stream to Tor wants: no TCP keepalive (the server is
// local; Go's default would cost three setsockopt calls per stream) and,
// on a unix socket, a send buffer of unixSendBuffer. NewDialer's
// connections and torctl's (a managed or attached Tor's SocksPort) are
// made here.
//
// An IP:port address is dialed as such (DialTCP), without the resolver's
// address-list machinery that DialContext runs for every string: a dozen
// allocations per stream.
func Dial(ctx context.Context, network, address string) (net.Conn, error) {
	nd := net.Dialer{KeepAlive: -1}
	switch network {
	case "tcp", "tcp4", "tcp6":
		if ap, err := netip.ParseAddrPort(address); err == nil {
			nd.Control = noPortAtBind
			c, err := nd.DialTCP(ctx, network, netip.AddrPort{}, ap)
			if err != nil {
				return nil, err // not a typed nil in an interface
			}
			return c, nil
		}
	case "unix":
		c, err := nd.DialUnix(ctx, network, nil, &net.UnixAddr{Name: address, Net: network})
		if err != nil {
			return nil, err
		}
		// Best effort: the default (wmem_default, 208 KiB) is all a
		// unix stream socket may hold in flight, which stalls a bulk
		// upload between two context switches; a loopback TCP socket
		// auto-tunes to megabytes. Kernel memory is charged only for
		// bytes actually queued, so an idle stream costs nothing.
		c.SetWriteBuffer(unixSendBuffer)
		return c, nil
	}
	return nd.DialContext(ctx, network, address)
}

// unixSendBuffer is SO_SNDBUF for a unix-socket SOCKS connection. One
// stream upstream over a unix socket: 0.25 of the kernel path with the
// default, 0.31 with 1 MiB, no better with 4 MiB (bench/README.md).
const unixSendBuffer = 1 << 20

// Connect performs CONNECT to dst and returns the raw connection to the
// server, ready for the stream: the net.Conn that Dial returned (a
// *net.TCPConn or *net.UnixConn from NewDialer), not a wrapper, so io.Copy
// can use splice and ReadFrom. Bytes the server sent right after its reply
// are still unread on it.
//
// ctx bounds the dial and the handshake only: its deadline is set on the
// connection and its cancellation expires that deadline at once; the
// deadline is cleared before Connect returns. The stream itself is not tied
// to ctx.
//
// A non-zero reply is a *ReplyError. On any error the connection is closed.
func (d *Dialer) Connect(ctx context.Context, dst Addr, auth Auth) (net.Conn, error) {
	if dst.Port == 0 {
		return nil, fmt.Errorf("socks connect: %w: port 0", ErrInvalidRequest)
	}
	c, _, err := d.request(ctx, CmdConnect, dst, auth)
	return c, err
}

// Resolve asks the server for an address of name with Tor's RESOLVE
// extension (command 0xF0) and returns the address in the reply, IPv4 or
// IPv6 as the exit found it. Tor returns a single address per request. A
// name that does not resolve is a *ReplyError, usually with
// ReplyHostUnreachable.
func (d *Dialer) Resolve(ctx context.Context, name string, auth Auth) (netip.Addr, error) {
	if err := validateName(name); err != nil {
		return netip.Addr{}, fmt.Errorf("socks resolve: %w", err)
	}
	c, bnd, err := d.request(ctx, CmdResolve, Addr{Name: name}, auth)
	if err != nil {
		return netip.Addr{}, err
	}
	c.Close()
	if !bnd.IP.IsValid() {
		return netip.Addr{}, fmt.Errorf("socks resolve: %w", &ProtocolError{Step: "reply", Err: errors.New("answer is a hostname, not an address")})
	}
	return bnd.IP, nil
}

// ResolvePTR asks the server for the hostname of ip with Tor's RESOLVE_PTR
// extension (command 0xF1) and returns the hostname in the reply.
func (d *Dialer) ResolvePTR(ctx context.Context, ip netip.Addr, auth Auth) (string, error) {
	if !ip.IsValid() {
		return "", fmt.Errorf("socks resolve_ptr: %w: invalid IP", ErrInvalidRequest)
	}
	c, bnd, err := d.request(ctx, CmdResolvePTR, Addr{IP: ip}, auth)
	if err != nil {
		return "", err
	}
	c.Close()
	if bnd.Name == "" {
		return "", fmt.Errorf("socks resolve_ptr: %w", &ProtocolError{Step: "reply", Err: errors.New("answer is an address, not a hostname")})
	}
	return bnd.Name, nil
}

// maxAuthLen is the longest RFC 1929 message.
const maxAuthLen = 3 + 255 + 255

// handshakeBuf holds every message of one handshake in turn; the longest
// write is an auth message pipelined with a request.
type handshakeBuf [maxAuthLen + maxMessageLen]byte

// bufPool recycles handshake buffers: a buffer passed to net.Conn.Write
// escapes, and pooling it keeps a handshake free of allocations.
var bufPool = sync.Pool{New: func() any { return new(handshakeBuf) }}

// request validates the arguments, dials the server and runs the handshake
// for cmd. It returns the open connection and the reply's bound address; on
// error the connection is closed.
func (d *Dialer) request(ctx context.Context, cmd byte, dst Addr, auth Auth) (net.Conn, Addr, error) {
	op := commandName(cmd)
	if err := dst.validate(); err != nil {
		return nil, Addr{}, fmt.Errorf("socks %s: %w", op, err)
	}
	if err := auth.validate(); err != nil {
		return nil, Addr{}, fmt.Errorf("socks %s: %w", op, err)
	}
	if d == nil || d.Dial == nil {
		return nil, Addr{}, fmt.Errorf("socks %s: Dialer has no Dial func", op)
	}
	c, err := d.Dial(ctx)
	if err != nil {
		return nil, Addr{}, fmt.Errorf("socks %s: dial server: %w", op, ctxErr(ctx, err))
	}
	if c == nil {
		return nil, Addr{}, fmt.Errorf("socks %s: dial server: Dial returned no connection", op)
	}
	buf := bufPool.Get().(*handshakeBuf)
	bnd, err := handshake(ctx, c, buf, cmd, dst, auth, d.Pipeline)
	bufPool.Put(buf)
	if err != nil {
		c.Close()
		var re *ReplyError
		if errors.As(err, &re) {
			return nil, Addr{}, err // already says "socks connect: ..."
		}
		return nil, Addr{}, fmt.Errorf("socks %s: %w", op, err)
	}
	return c, bnd, nil
}

// aLongTimeAgo is a deadline in the past: setting it makes blocked reads and
// writes return at once.
var aLongTimeAgo = time.Unix(1, 0)

// handshake runs the exchange on c under ctx: ctx's deadline becomes the
// conn's deadline, and cancelling ctx expires that deadline from a
// context.AfterFunc goroutine (as x/net's internal/socks does with a watcher
// goroutine, minus the goroutine when nothing is cancelled). The deadline is
// cleared again on success.
func handshake(ctx context.Context, c net.Conn, buf *handshakeBuf, cmd byte, dst Addr, auth Auth, pipeline bool) (Addr, error) {
	if err := ctx.Err(); err != nil {
		return Addr{}, err
	}
	dl, hasDeadline := ctx.Deadline()
	if hasDeadline {
		if err := c.SetDeadline(dl); err != nil {
			return Addr{}, fmt.Errorf("set deadline: %w", err)
		}
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	}
	bnd, err := exchange(ctx, c, buf, cmd, dst, auth, pipeline)
	if stop != nil && !stop() && err == nil {
		// ctx ended after the last read but its AfterFunc has already
		// started and poisons the deadline: the conn is unusable.
		err = ctx.Err()
	}
	if err == nil && (hasDeadline || stop != nil) {
		// The error is ignored: a socket only fails this once closed on our
		// side, and net.Pipe fails it as soon as the server has closed its
		// end, which a server may do right after the reply and the data.
		c.SetDeadline(time.Time{})
	}
	return bnd, err
}

// exchange writes each handshake message and reads its answer before the
// next, using buf for all of them; with pipeline, the auth message and
// the request go in one write and their answers are read in turn.
func exchange(ctx context.Context, c net.Conn, buf *handshakeBuf, cmd byte, dst Addr, auth Auth, pipeline bool) (Addr, error) {
	if pipeline && isTCP(c) {
		pipeline = false // see Dialer.Pipeline
	}
	method := MethodNoAuth
	if auth.Username != "" {
		method = MethodUserPass
	}
	// Offer exactly one method, so the server cannot choose a weaker one.
	if _, err := c.Write(append(buf[:0], version5, 1, method)); err != nil {
		return Addr{}, ioError(ctx, "write greeting", err)
	}
	if err := readFull(c, buf[:2], "method reply"); err != nil {
		return Addr{}, ioError(ctx, "read method reply", err)
	}
	switch {
	case buf[0] != version5:
		return Addr{}, &ProtocolError{Step: "method reply", Err: fmt.Errorf("unexpected version 0x%02x", buf[0])}
	case buf[1] == MethodNoAcceptable:
		return Addr{}, ErrNoAcceptableMethod
	case buf[1] != method:
		return Addr{}, &ProtocolError{Step: "method reply", Err: fmt.Errorf("server chose method 0x%02x, offered only 0x%02x", buf[1], method)}
	}

	if method == MethodUserPass {
		b := append(buf[:0], userPassVersion, byte(len(auth.Username)))
		b = append(b, auth.Username...)
		b = append(b, byte(len(auth.Password)))
		b = append(b, auth.Password...)
		if pipeline {
			b = appendMessage(b, cmd, dst)
		}
		if _, err := c.Write(b); err != nil {
			return Addr{}, ioError(ctx, "write auth", err)
		}
		if err := readFull(c, buf[:2], "auth reply"); err != nil {
			return Addr{}, ioError(ctx, "read auth reply", err)
		}
		if buf[0] != userPassVersion {
			return Addr{}, &ProtocolError{Step: "auth reply", Err: fmt.Errorf("unexpected version 0x%02x", buf[0])}
		}
		if buf[1] != 0 {
			return Addr{}, fmt.Errorf("%w (status 0x%02x)", ErrAuthRejected, buf[1])
		}
	}

	if method != MethodUserPass || !pipeline {
		if _, err := c.Write(appendMessage(buf[:0], cmd, dst)); err != nil {
			return Addr{}, ioError(ctx, "write request", err)
		}
	}
	rep, bnd, err := readReply(c, (*[maxMessageLen]byte)(buf[:maxMessageLen]))
	if err != nil {
		return Addr{}, ioError(ctx, "read reply", err)
	}
	if rep != ReplySucceeded {
		return Addr{}, &ReplyError{Command: cmd, Reply: rep}
	}
	return bnd, nil
}

// ioError adds the step to an I/O error and turns deadline and cancel errors
// into ctx's error. A *ProtocolError already names its step.
func ioError(ctx context.Context, step string, err error) error {
	if _, ok := err.(*ProtocolError); ok {
		return err
	}
	return fmt.Errorf("%s: %w", step, ctxErr(ctx, err))
}

// ctxErr returns ctx's error if ctx has ended, or if err is the conn
// deadline that mirrors ctx's deadline (the conn timer can fire a moment
// before ctx's own); otherwise err.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			return context.DeadlineExceeded
		}
	}
	return err
}

// isTCP reports whether c runs over TCP (its local address says so, also
// through a wrapper that embeds the net.Conn).
func isTCP(c net.Conn) bool {
	a := c.LocalAddr()
	if a == nil {
		return false
	}
	switch a.Network() {
	case "tcp", "tcp4", "tcp6":
		return true
	}
	return false
}
