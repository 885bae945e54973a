// Package socksd is a small, fast SOCKS5 server for benchmarks: the
// stand-in for Tor when what is measured is the router, not Tor.
//
// It speaks the subset of RFC 1928/1929 a TUN-to-SOCKS router needs: no
// authentication or username/password (any credentials are accepted, as
// Tor does for stream isolation), and CONNECT to IPv4, IPv6 and domain
// addresses. Other commands get "command not supported". The handshake is
// parsed by socks.ServerReader, the one server-side reader.
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
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/torgate/torgate/socks"
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

// errRefused is a handshake the server answered with a refusal: no
// acceptable method, or a request it does not serve.
var errRefused = errors.New("socksd: request refused")

// serve runs one connection. A parked connection stays tracked (and open)
// after serve returns.
func (s *Server) serve(c net.Conn) {
	parked := false
	defer func() {
		if !parked {
			s.untrack(c)
		}
	}()
	dst, early, err := accept(c)
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
	if err := reply(c, socks.ReplySucceeded); err != nil {
		return
	}
	switch s.cfg.Sink(dst.Port) {
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

// readerPool recycles handshake readers (1 KiB each): the buffer escapes
// into c.Read, so a fresh one per connection would be an allocation.
var readerPool = sync.Pool{New: func() any { return new(socks.ServerReader) }}

// accept runs the handshake on c up to the CONNECT request and returns its
// destination. Bytes the client sent behind the request, without waiting
// for the reply, are returned in early (a copy), to be sent on first.
func accept(c net.Conn) (dst socks.Addr, early []byte, err error) {
	sr := readerPool.Get().(*socks.ServerReader)
	sr.Reset(c)
	defer func() {
		sr.Reset(nil)
		readerPool.Put(sr)
	}()
	if dst, err = handshake(c, sr); err != nil {
		return socks.Addr{}, nil, err
	}
	if rest := sr.Buffered(); len(rest) > 0 {
		early = bytes.Clone(rest)
	}
	return dst, early, nil
}

// handshake answers the greeting and the username/password, accepting any
// credentials, reads the request and returns the destination of a
// CONNECT. It answers what it refuses; a client that breaks the protocol
// is just closed. Each message is normally one read: the client waits for
// each answer.
func handshake(c net.Conn, sr *socks.ServerReader) (socks.Addr, error) {
	m, err := sr.ReadGreeting()
	if err != nil {
		return socks.Addr{}, err
	}
	method := m.Select(false)
	if _, err := c.Write(methodReply[method]); err != nil {
		return socks.Addr{}, err
	}
	switch method {
	case socks.MethodNoAcceptable:
		return socks.Addr{}, errRefused
	case socks.MethodUserPass:
		if _, _, err := sr.ReadUserPass(); err != nil {
			return socks.Addr{}, err
		}
		if _, err := c.Write(authOK); err != nil {
			return socks.Addr{}, err
		}
	}
	req, err := sr.ReadRequest()
	if err != nil {
		var re *socks.RequestError
		if errors.As(err, &re) {
			reply(c, re.Reply)
		}
		return socks.Addr{}, err
	}
	if req.Command != socks.CmdConnect {
		reply(c, socks.ReplyCommandNotSupported)
		return socks.Addr{}, errRefused
	}
	return req.Dst, nil
}

// The fixed answers, as package variables so that writing them allocates
// nothing (a literal passed to Write escapes).
var (
	methodReply = map[byte][]byte{
		socks.MethodNoAuth:       {5, socks.MethodNoAuth},
		socks.MethodUserPass:     {5, socks.MethodUserPass},
		socks.MethodNoAcceptable: {5, socks.MethodNoAcceptable},
	}
	authOK = []byte{1, 0} // RFC 1929 success
	// okReply is the CONNECT success with Tor's bound address 0.0.0.0:0.
	okReply = []byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}
)

// reply sends a reply with bound address 0.0.0.0:0, as Tor does. Only
// failures, which are rare, allocate.
func reply(c net.Conn, code socks.Reply) error {
	b := okReply
	if code != socks.ReplySucceeded {
		b = []byte{5, byte(code), 0, 1, 0, 0, 0, 0, 0, 0}
	}
	_, err := c.Write(b)
	return err
}

// dial connects to the real destination and relays until both directions
// end.
func (s *Server) dial(c net.Conn, dst socks.Addr, early []byte) {
	// No keepalive, as in ListenAndServe.
	d := net.Dialer{Timeout: s.cfg.DialTimeout, KeepAlive: -1}
	up, err := d.Dial("tcp", dst.String())
	if err != nil {
		code := socks.ReplyConnectionRefused
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			code = socks.ReplyHostUnreachable
		}
		reply(c, code)
		return
	}
	if !s.track(up) {
		up.Close()
		return
	}
	defer s.untrack(up)
	if err := reply(c, socks.ReplySucceeded); err != nil {
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
	// No keepalive: Go turns it on for every accepted (and dialled) TCP
	// connection with four setsockopt calls, which a benchmark's short
	// connections pay for nothing (perf trace -s, 2026-12-05: 10 of ~47
	// system calls per relayed connection were setsockopt).
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("socksd: listen %s: %w", addr, err)
	}
	return New(Config{Listener: ln, Dial: dial, Logger: log})
}
