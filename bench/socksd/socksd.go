// Package socksd is a small, fast SOCKS5 server for benchmarks: the
// stand-in for Tor when what is measured is the router, not Tor.
//
// It speaks the subset of RFC 1928/1929 a TUN-to-SOCKS router needs: no
// authentication or username/password (any credentials are accepted, as
// Tor does for stream isolation), and CONNECT to IPv4, IPv6 and domain
// addresses. Other commands get "command not supported".
//
// A CONNECT either goes to a real destination (Config.Dial, for the
// system benchmark: the relay is io.Copy between two *net.TCPConn, which
// Linux turns into splice, so the server itself costs little CPU) or to a
// built-in sink chosen by Config.Sink, for in-process benchmarks that must
// not depend on another server:
//
//   - SinkEcho writes back what it reads.
//   - SinkCount reads until EOF, then writes the byte count as 8 bytes
//     big-endian and closes: an upload whose end the client can confirm.
//   - SinkSource reads an 8-byte big-endian length n, writes n bytes and
//     closes: a download of known size.
//   - SinkPark answers the CONNECT and then holds the connection with no
//     goroutine and no buffer until the client or Close ends it: an idle
//     flow whose cost is the router's alone.
package socksd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Sink is what a CONNECT is served by when Config.Dial is off.
type Sink uint8

// Sinks.
const (
	SinkEcho Sink = iota
	SinkCount
	SinkSource
	SinkPark
)

// Well-known ports that SinkByPort maps to sinks: RFC 862 echo, RFC 863
// discard (here: count), RFC 864 chargen (here: source of known length).
const (
	PortEcho   = 7
	PortCount  = 9
	PortSource = 19
)

// SinkByPort picks a sink from the destination port: 7 echo, 9 count, 19
// source, anything else park.
func SinkByPort(port uint16) Sink {
	switch port {
	case PortEcho:
		return SinkEcho
	case PortCount:
		return SinkCount
	case PortSource:
		return SinkSource
	default:
		return SinkPark
	}
}

// Config configures a Server.
type Config struct {
	// Listener accepts the router's connections. Required. The Server
	// closes it in Close.
	Listener net.Listener
	// Dial connects CONNECT requests to their real destination. When false,
	// Sink decides.
	Dial bool
	// DialTimeout bounds a real dial. Default 5s.
	DialTimeout time.Duration
	// Sink picks the sink for a destination port; nil means SinkByPort.
	Sink func(port uint16) Sink
	// Logger for rare errors; nil discards.
	Logger *slog.Logger
}

// Server is a running SOCKS5 server.
type Server struct {
	cfg Config
	log *slog.Logger
	wg  sync.WaitGroup

	mu     sync.Mutex
	closed bool                  // guarded by mu
	conns  map[net.Conn]struct{} // every open conn, parked ones included; guarded by mu
}

// New starts serving cfg.Listener.
func New(cfg Config) (*Server, error) {
	if cfg.Listener == nil {
		return nil, errors.New("socksd: nil Listener")
	}
	if cfg.DialTimeout < 0 {
		return nil, errors.New("socksd: negative DialTimeout")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Sink == nil {
		cfg.Sink = SinkByPort
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, conns: make(map[net.Conn]struct{})}
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.cfg.Listener.Addr() }

// Close stops accepting, closes every connection and waits for the
// server's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	err := s.cfg.Listener.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) acceptLoop() {
	var delay time.Duration
	for {
		c, err := s.cfg.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("socksd accept failed", "err", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Go(func() { s.serve(c) })
	}
}

// errProtocol is a client that does not speak SOCKS5 as expected.
var errProtocol = errors.New("socksd: protocol error")

// serve runs one connection. A parked connection stays tracked (and open)
// after serve returns.
func (s *Server) serve(c net.Conn) {
	parked := false
	defer func() {
		if !parked {
			s.untrack(c)
		}
	}()
	dst, early, err := handshake(c)
	if err != nil {
		return
	}
	if s.cfg.Dial {
		s.dial(c, dst, early)
		return
	}
	if len(early) > 0 {
		return // the sinks serve clients that wait for the reply
	}
	if err := reply(c, 0x00); err != nil {
		return
	}
	switch s.cfg.Sink(dst.port) {
	case SinkEcho:
		// Hide ReadFrom so io.Copy does not splice a socket into itself.
		buf := bufPool.Get().(*[bufSize]byte)
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf[:])
		bufPool.Put(buf)
		closeWrite(c)
		drain(c)
	case SinkCount:
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			return
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		c.Write(b[:])
	case SinkSource:
		var b [8]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		writeZeros(c, int64(binary.BigEndian.Uint64(b[:])))
		closeWrite(c)
		drain(c)
	case SinkPark:
		parked = true
	}
}

// destination is a CONNECT target.
type destination struct {
	host string // IP literal or name
	port uint16
}

func (d destination) String() string {
	return net.JoinHostPort(d.host, strconv.Itoa(int(d.port)))
}

// handshake reads the greeting, an optional RFC 1929 sub-negotiation and a
// CONNECT request. Each step is normally one read: the client waits for
// each answer. Bytes after the request (a client that does not wait for
// the reply) are returned in early, to be sent on first.
func handshake(c net.Conn) (d destination, early []byte, err error) {
	var b [2 + 255 + 1 + 255 + 512]byte
	r := reader{c: c, buf: b[:]}
	g, err := r.need(2)
	if err != nil {
		return d, nil, err
	}
	if g[0] != 5 || g[1] == 0 {
		return d, nil, errProtocol
	}
	g, err = r.need(2 + int(g[1]))
	if err != nil {
		return d, nil, err
	}
	method := byte(0xff)
	for _, m := range g[2:] {
		if m == 0x02 {
			method = 0x02 // Tor prefers credentials: they carry isolation
			break
		}
		if m == 0x00 {
			method = 0x00
		}
	}
	r.consume(len(g))
	if _, err := c.Write([]byte{5, method}); err != nil || method == 0xff {
		return d, nil, errProtocol
	}
	if method == 0x02 {
		a, err := r.need(2)
		if err != nil {
			return d, nil, err
		}
		ulen := int(a[1])
		if a, err = r.need(2 + ulen + 1); err != nil {
			return d, nil, err
		}
		plen := int(a[2+ulen])
		if a, err = r.need(2 + ulen + 1 + plen); err != nil {
			return d, nil, err
		}
		r.consume(len(a))
		if _, err := c.Write([]byte{1, 0}); err != nil {
			return d, nil, err
		}
	}
	q, err := r.need(5)
	if err != nil {
		return d, nil, err
	}
	if q[0] != 5 || q[2] != 0 {
		return d, nil, errProtocol
	}
	if q[1] != 0x01 { // CONNECT only
		reply(c, 0x07)
		return d, nil, errProtocol
	}
	var alen int
	switch q[3] {
	case 0x01:
		alen = 4
	case 0x04:
		alen = 16
	case 0x03:
		alen = 1 + int(q[4])
	default:
		reply(c, 0x08)
		return d, nil, errProtocol
	}
	if q, err = r.need(4 + alen + 2); err != nil {
		return d, nil, err
	}
	switch a := q[4 : 4+alen]; q[3] {
	case 0x01:
		d.host = netip.AddrFrom4([4]byte(a)).String()
	case 0x04:
		d.host = netip.AddrFrom16([16]byte(a)).String()
	case 0x03:
		d.host = string(a[1:])
	}
	d.port = binary.BigEndian.Uint16(q[4+alen:])
	r.consume(len(q))
	if rest := r.rest(); len(rest) > 0 {
		early = append([]byte(nil), rest...)
	}
	return d, early, nil
}

// reader accumulates a connection's bytes so that each handshake message
// costs one read, not one per field.
type reader struct {
	c         net.Conn
	buf       []byte
	off, have int // buf[off:have] is unconsumed
}

// need returns the next n unconsumed bytes, reading as needed.
func (r *reader) need(n int) ([]byte, error) {
	if r.off+n > len(r.buf) {
		return nil, errProtocol
	}
	for r.have-r.off < n {
		k, err := r.c.Read(r.buf[r.have:])
		r.have += k
		if err != nil && r.have-r.off < n {
			return nil, err
		}
	}
	return r.buf[r.off : r.off+n], nil
}

func (r *reader) consume(n int) { r.off += n }

func (r *reader) rest() []byte { return r.buf[r.off:r.have] }

// reply sends a reply with bound address 0.0.0.0:0, as Tor does.
func reply(c net.Conn, code byte) error {
	_, err := c.Write([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0})
	return err
}

// dial connects to the real destination and relays until both directions
// end.
func (s *Server) dial(c net.Conn, dst destination, early []byte) {
	up, err := net.DialTimeout("tcp", dst.String(), s.cfg.DialTimeout)
	if err != nil {
		code := byte(0x05) // connection refused
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			code = 0x04 // host unreachable
		}
		reply(c, code)
		return
	}
	if !s.track(up) {
		up.Close()
		return
	}
	defer s.untrack(up)
	if err := reply(c, 0x00); err != nil {
		return
	}
	if len(early) > 0 {
		if _, err := up.Write(early); err != nil {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { pipe(up, c) })
	pipe(c, up)
	wg.Wait()
}

// pipe copies src to dst and passes EOF on as a half-close; an error
// closes both so the other direction ends too. Between two *net.TCPConn,
// io.Copy splices.
func pipe(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	closeWrite(dst)
}

// bufSize is one copy buffer for the echo sink.
const bufSize = 64 << 10

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

var zeros [bufSize]byte

func writeZeros(c net.Conn, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := c.Write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// drain waits for the client's end of stream after ours, so that the
// client, not the server, closes first and the server holds no TIME_WAIT.
func drain(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	io.Copy(io.Discard, c)
}

// ListenAndServe is a convenience for commands: listen on addr (TCP) and
// serve until Close.
func ListenAndServe(addr string, dial bool, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("socksd: listen %s: %w", addr, err)
	}
	return New(Config{Listener: ln, Dial: dial, Logger: log})
}
