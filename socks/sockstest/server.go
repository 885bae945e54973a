// Package sockstest provides a strict, scriptable SOCKS5 server for tests:
// a stand-in for Tor's SocksPort that records every request and can be told
// how to answer.
//
// The server plays Tor closely enough to catch client bugs:
//
//   - It accepts method 0x02 (username/password) whenever the client offers
//     it, as Tor does for IsolateSOCKSAuth, else 0x00 unless
//     Config.RequireAuth is set.
//   - It refuses pipelining: if the client sends anything after its greeting
//     before the server has answered it (in the same read or within the
//     pipeline window), the server counts the connection in
//     Stats.Pipelined and never answers. (Tor 0.4.9, given the greeting and
//     the username/password in one read, skips the method reply and sends
//     only the auth reply, so such a client hangs or misparses. The server
//     stalls on any early byte, which is stricter than Tor and makes the bug
//     a clean timeout.)
//   - It supports CONNECT and Tor's RESOLVE (0xF0) and RESOLVE_PTR (0xF1),
//     answers other commands with 0x07, unknown address types with 0x08, and
//     CONNECT to port 0 with 0x01, and sends Tor's reply layout (IPv4
//     0.0.0.0:0 as bound address for CONNECT and for errors).
//   - It parses what the client sends with socks.ServerReader, the one
//     server-side reader (bench/socksd uses it too), and relays the stream
//     bytes that came with a request ahead of the rest, so none are lost.
//     The reader's own tests feed it hand-written bytes, and the Dialer's
//     request bytes are checked against hand-written ones too, so a bug
//     shared by the client's encoder and the reader shows in package socks.
//
// It never touches the network beyond loopback: the default CONNECT handler
// only dials loopback destinations, and DialTo and DialMap only dial loopback
// targets that the test chose.
//
// Typical use:
//
//	srv := sockstest.NewServer(t, sockstest.Config{Connect: sockstest.Echo})
//	conn, err := srv.Dialer().Connect(ctx, socks.HostPort("example.com", 80), socks.Auth{})
//	...
//	reqs := srv.Requests() // what the client sent, exactly
package sockstest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/torgate/torgate/socks"
)

// DefaultPipelineWindow is how long the server waits, after reading a
// greeting, for bytes the client should not have sent yet. A correct client
// sends nothing until it gets the method reply, so it pays this delay once
// per connection; 50 ms makes the detection reliable on a loaded machine.
const DefaultPipelineWindow = 50 * time.Millisecond

// Request is one request the server read, recorded before it was answered.
type Request struct {
	// Command is the CMD byte: socks.CmdConnect, socks.CmdResolve,
	// socks.CmdResolvePTR, or whatever else the client sent.
	Command byte
	// Dst is the destination exactly as sent: Name for ATYP 0x03, a 4-byte
	// IP for ATYP 0x01 and a 16-byte IP for ATYP 0x04 (never unmapped).
	Dst socks.Addr
	// Auth holds the RFC 1929 credentials, empty if the client chose no
	// authentication.
	Auth socks.Auth
	// Time is when the request was read.
	Time time.Time
}

// ConnectFunc decides a CONNECT request. It returns the reply code and, for
// socks.ReplySucceeded, the upstream connection the server relays the
// stream to; the server closes that connection when the stream ends. The
// helpers Echo, Discard and Hang return markers the server handles itself.
// It runs on the connection's goroutine and must return promptly.
type ConnectFunc func(req Request) (socks.Reply, net.Conn)

// Config scripts a Server. The zero Config is a server that needs no auth,
// relays CONNECT to loopback destinations only and fails every resolve with
// host unreachable.
type Config struct {
	// Unix makes the server listen on a unix socket in a fresh temporary
	// directory instead of 127.0.0.1:0.
	Unix bool
	// RequireAuth makes the server accept only username/password (0x02);
	// a client offering only 0x00 gets 0xFF (no acceptable method).
	RequireAuth bool
	// Authenticate decides RFC 1929 credentials; nil accepts all, as Tor
	// does. A rejected client gets status 0x01 and the connection closes.
	Authenticate func(socks.Auth) bool
	// PipelineWindow is how long to wait for early bytes after the greeting
	// (see the package comment). Zero means DefaultPipelineWindow; a
	// negative value turns the check off (for benchmarks).
	PipelineWindow time.Duration
	// Connect decides CONNECT requests; nil means DialLoopback.
	Connect ConnectFunc
	// Resolve answers RESOLVE (0xF0): the address to return, or a non-zero
	// reply code. The name is the requested hostname (or the IP literal
	// when the client sent an address). nil answers host unreachable.
	Resolve func(name string) (netip.Addr, socks.Reply)
	// ResolvePTR answers RESOLVE_PTR (0xF1): the hostname to return, or a
	// non-zero reply code. nil answers host unreachable.
	ResolvePTR func(ip netip.Addr) (string, socks.Reply)
	// Raw, if set, takes over every accepted connection instead of the
	// SOCKS logic, to script hostile or malformed servers. The server
	// closes the connection when Raw returns, and on Close, which unblocks
	// Raw's reads and writes. It excludes every other field but Unix.
	Raw func(conn net.Conn)
}

// Stats counts what the server saw.
type Stats struct {
	Accepted   int // connections accepted
	Pipelined  int // connections stalled because the client pipelined
	Connect    int // CONNECT requests
	Resolve    int // RESOLVE requests
	ResolvePTR int // RESOLVE_PTR requests
	Other      int // requests with any other command
}

// Server is a SOCKS5 server on loopback, created by NewServer and closed at
// the end of the test.
type Server struct {
	cfg     Config
	ln      net.Listener
	network string
	addr    string
	dir     string // temporary directory of the unix socket, if any

	wg sync.WaitGroup // every goroutine the server started

	mu       sync.Mutex
	closed   bool                  // guarded by mu
	conns    map[net.Conn]struct{} // open client and upstream conns; guarded by mu
	active   int                   // open client conns; guarded by mu
	requests []Request             // guarded by mu
	errs     []error               // guarded by mu
	stats    Stats                 // guarded by mu
}

// NewServer starts a server configured by cfg and closes it in tb.Cleanup.
// It fails the test if cfg is inconsistent or the listener cannot be set up.
func NewServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	if cfg.Raw != nil && (cfg.RequireAuth || cfg.Authenticate != nil || cfg.Connect != nil ||
		cfg.Resolve != nil || cfg.ResolvePTR != nil || cfg.PipelineWindow != 0) {
		tb.Fatalf("sockstest: Config.Raw excludes every other field but Unix")
	}
	if cfg.PipelineWindow == 0 {
		cfg.PipelineWindow = DefaultPipelineWindow
	}
	if cfg.Connect == nil {
		cfg.Connect = DialLoopback
	}
	s := &Server{cfg: cfg, conns: make(map[net.Conn]struct{})}
	var err error
	if cfg.Unix {
		// A short path: t.TempDir() under a long test name can exceed the
		// 108 bytes of sun_path.
		if s.dir, err = os.MkdirTemp("", "sockstest"); err != nil {
			tb.Fatalf("sockstest: %v", err)
		}
		s.network, s.addr = "unix", filepath.Join(s.dir, "socks.sock")
	} else {
		s.network, s.addr = "tcp", "127.0.0.1:0"
	}
	if s.ln, err = net.Listen(s.network, s.addr); err != nil {
		if s.dir != "" {
			os.RemoveAll(s.dir)
		}
		tb.Fatalf("sockstest: listen: %v", err)
	}
	s.addr = s.ln.Addr().String()
	tb.Cleanup(s.Close)
	s.wg.Go(s.acceptLoop)
	return s
}

// Addr returns the listening address: "127.0.0.1:port" or the socket path.
func (s *Server) Addr() string { return s.addr }

// Network returns "tcp" or "unix".
func (s *Server) Network() string { return s.network }

// Dialer returns a socks.Dialer for this server.
func (s *Server) Dialer() *socks.Dialer {
	d, err := socks.NewDialer(s.network, s.addr)
	if err != nil {
		panic("sockstest: " + err.Error()) // the server's own address is valid
	}
	return d
}

// Requests returns a copy of the requests read so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Pipelined returns how many connections were stalled because the client
// sent bytes before the method reply.
func (s *Server) Pipelined() int { return s.Stats().Pipelined }

// Active returns how many client connections are open on the server side,
// which lets a test check that a client closed its streams.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// Errors returns the protocol violations clients committed (bad version,
// zero methods, non-zero reserved byte, CONNECT to port 0, ...) and misuses
// of the handlers, in order. A correct client leaves it empty.
func (s *Server) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// Close stops the listener, closes every connection (which ends stalled and
// relayed streams) and waits for all of the server's goroutines. It is
// called by tb.Cleanup and may be called earlier, for example to play a Tor
// that went away. It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.ln.Close()
		for c := range s.conns {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// acceptLoop accepts connections until the listener closes.
func (s *Server) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed; the only error that ends a loopback listener
		}
		if !s.track(c, true) {
			c.Close()
			return
		}
		s.wg.Go(func() { s.serve(c) })
	}
}

// track registers c to be closed by Close. It reports false if the server
// is already closed.
func (s *Server) track(c net.Conn, client bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	if client {
		s.active++
		s.stats.Accepted++
	}
	return true
}

// release closes c and forgets it.
func (s *Server) release(c net.Conn, client bool) {
	c.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if client {
		s.active--
	}
}

// violation records a client's protocol error or a handler misuse.
func (s *Server) violation(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, fmt.Errorf(format, args...))
}

// serve runs one client connection to its end.
func (s *Server) serve(c net.Conn) {
	defer s.release(c, true)
	if s.cfg.Raw != nil {
		s.cfg.Raw(c)
		return
	}
	sr := socks.NewServerReader(c)
	auth, ok := s.negotiate(c, sr)
	if !ok {
		return
	}
	req, ok := s.readRequest(c, sr, auth)
	if !ok {
		return
	}
	switch req.Command {
	case socks.CmdConnect:
		s.connect(c, req, sr.Buffered())
	case socks.CmdResolve:
		s.resolve(c, req)
	case socks.CmdResolvePTR:
		s.resolvePTR(c, req)
	default:
		writeReply(c, socks.ReplyCommandNotSupported, socks.Addr{})
	}
}

// negotiate reads the greeting, checks for pipelining, selects a method and
// runs the RFC 1929 sub-negotiation. It reports false if the connection is
// done.
func (s *Server) negotiate(c net.Conn, sr *socks.ServerReader) (socks.Auth, bool) {
	m, err := sr.ReadGreeting()
	if err != nil {
		s.clientError(err)
		return socks.Auth{}, false
	}
	if s.pipelined(c, sr) {
		return socks.Auth{}, false
	}
	method := m.Select(s.cfg.RequireAuth)
	if _, err := c.Write([]byte{0x05, method}); err != nil || method == socks.MethodNoAcceptable {
		return socks.Auth{}, false
	}
	if method == socks.MethodNoAuth {
		return socks.Auth{}, true
	}
	user, pass, err := sr.ReadUserPass()
	if err != nil {
		s.clientError(err)
		return socks.Auth{}, false
	}
	auth := socks.Auth{Username: string(user), Password: string(pass)}
	if s.cfg.Authenticate != nil && !s.cfg.Authenticate(auth) {
		c.Write([]byte{0x01, 0x01})
		return socks.Auth{}, false
	}
	_, err = c.Write([]byte{0x01, 0x00})
	return auth, err == nil
}

// clientError records err, from the reader, as a violation if the client
// broke the protocol. A client that hung up, before a message or within
// one, or a failed read, is none.
func (s *Server) clientError(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return
	}
	var pe *socks.ProtocolError
	var re *socks.RequestError
	if errors.As(err, &pe) || errors.As(err, &re) {
		s.violation("%w", err)
	}
}

// pipelined reports whether the client sent bytes after its greeting
// before the method reply: already read with the greeting, or arriving
// within the pipeline window. If so, it counts the connection and stalls
// it until the client gives up.
func (s *Server) pipelined(c net.Conn, sr *socks.ServerReader) bool {
	if s.cfg.PipelineWindow < 0 {
		return false
	}
	if len(sr.Buffered()) == 0 {
		c.SetReadDeadline(time.Now().Add(s.cfg.PipelineWindow))
		var one [1]byte
		n, err := c.Read(one[:])
		c.SetReadDeadline(time.Time{})
		if n == 0 {
			// The expected case is a timeout; anything else means the
			// client went away and the next read will say so.
			_ = err
			return false
		}
	}
	s.mu.Lock()
	s.stats.Pipelined++
	s.mu.Unlock()
	stall(c)
	return true
}

// readRequest reads the request and records it. On a malformed request it
// answers as Tor would and reports false.
func (s *Server) readRequest(c net.Conn, sr *socks.ServerReader, auth socks.Auth) (Request, bool) {
	r, err := sr.ReadRequest()
	if err != nil {
		s.clientError(err)
		var re *socks.RequestError
		if errors.As(err, &re) {
			writeReply(c, re.Reply, socks.Addr{})
		}
		return Request{}, false
	}
	req := Request{Command: r.Command, Dst: r.Dst, Auth: auth, Time: time.Now()}

	s.mu.Lock()
	s.requests = append(s.requests, req)
	switch req.Command {
	case socks.CmdConnect:
		s.stats.Connect++
	case socks.CmdResolve:
		s.stats.Resolve++
	case socks.CmdResolvePTR:
		s.stats.ResolvePTR++
	default:
		s.stats.Other++
	}
	s.mu.Unlock()
	return req, true
}

// connect answers a CONNECT through cfg.Connect and runs the stream,
// starting with early, the stream bytes that were read with the request.
func (s *Server) connect(c net.Conn, req Request, early []byte) {
	if req.Dst.Port == 0 {
		// Tor: "Application asked to connect to port 0. Refusing."
		s.violation("connect: port 0")
		writeReply(c, socks.ReplyGeneralFailure, socks.Addr{})
		return
	}
	rep, up := s.cfg.Connect(req)
	m, isMarker := up.(*marker)
	switch {
	case isMarker && m.kind == markHang:
		stall(c)
		return
	case rep != socks.ReplySucceeded:
		if up != nil && !isMarker {
			up.Close()
		}
		writeReply(c, rep, socks.Addr{})
		return
	case up == nil:
		s.violation("connect: handler returned success without a connection")
		writeReply(c, socks.ReplyGeneralFailure, socks.Addr{})
		return
	}
	if !isMarker && !s.track(up, false) {
		up.Close()
		return
	}
	if err := writeReply(c, socks.ReplySucceeded, socks.Addr{}); err != nil {
		if !isMarker {
			s.release(up, false)
		}
		return
	}
	switch {
	case isMarker && m.kind == markEcho:
		if len(early) > 0 {
			if _, err := c.Write(early); err != nil {
				return
			}
		}
		// Hide ReadFrom/WriteTo so io.Copy uses a plain buffer instead of
		// splicing a socket into itself.
		io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
		closeWrite(c)
	case isMarker && m.kind == markDiscard:
		io.Copy(io.Discard, c)
	default:
		if len(early) > 0 {
			if _, err := up.Write(early); err != nil {
				s.release(up, false)
				return
			}
		}
		s.relay(c, up)
		s.release(up, false)
	}
}

// relay copies the stream both ways, passing each end-of-stream on with a
// half-close, until both directions are done. A copy error closes both
// connections so the other direction ends too.
func (s *Server) relay(client, up net.Conn) {
	done := make(chan struct{})
	s.wg.Go(func() {
		defer close(done)
		if _, err := io.Copy(up, client); err != nil {
			client.Close()
			up.Close()
			return
		}
		closeWrite(up)
	})
	if _, err := io.Copy(client, up); err != nil {
		client.Close()
		up.Close()
	} else {
		closeWrite(client)
	}
	<-done
}

// resolve answers a RESOLVE through cfg.Resolve.
func (s *Server) resolve(c net.Conn, req Request) {
	name := req.Dst.Name
	if name == "" {
		name = req.Dst.IP.String()
	}
	ip, rep := netip.Addr{}, socks.ReplyHostUnreachable
	if s.cfg.Resolve != nil {
		ip, rep = s.cfg.Resolve(name)
	}
	if rep == socks.ReplySucceeded && !ip.IsValid() {
		s.violation("resolve: handler returned success without an address")
		rep = socks.ReplyGeneralFailure
	}
	if rep != socks.ReplySucceeded {
		writeReply(c, rep, socks.Addr{})
		return
	}
	writeReply(c, rep, socks.Addr{IP: ip})
}

// resolvePTR answers a RESOLVE_PTR through cfg.ResolvePTR.
func (s *Server) resolvePTR(c net.Conn, req Request) {
	if req.Dst.Name != "" {
		writeReply(c, socks.ReplyAddressNotSupported, socks.Addr{})
		return
	}
	name, rep := "", socks.ReplyHostUnreachable
	if s.cfg.ResolvePTR != nil {
		name, rep = s.cfg.ResolvePTR(req.Dst.IP)
	}
	if rep == socks.ReplySucceeded && (name == "" || len(name) > 255) {
		s.violation("resolve_ptr: handler returned a hostname of %d bytes", len(name))
		rep = socks.ReplyGeneralFailure
	}
	if rep != socks.ReplySucceeded {
		writeReply(c, rep, socks.Addr{})
		return
	}
	writeReply(c, rep, socks.Addr{Name: name})
}

// writeReply writes VER REP RSV ATYP BND.ADDR BND.PORT in one write. The
// encoding is written out here rather than shared with package socks, so
// that a symmetric bug in both cannot hide itself. A zero bnd is sent as
// IPv4 0.0.0.0:0, as Tor does.
func writeReply(c net.Conn, rep socks.Reply, bnd socks.Addr) error {
	b := make([]byte, 0, 4+1+255+2)
	b = append(b, 0x05, byte(rep), 0x00)
	switch {
	case bnd.Name != "":
		b = append(b, 0x03, byte(len(bnd.Name)))
		b = append(b, bnd.Name...)
	case bnd.IP.Is6():
		ip := bnd.IP.As16()
		b = append(b, 0x04)
		b = append(b, ip[:]...)
	case bnd.IP.Is4():
		ip := bnd.IP.As4()
		b = append(b, 0x01)
		b = append(b, ip[:]...)
	default:
		b = append(b, 0x01, 0, 0, 0, 0)
	}
	b = append(b, byte(bnd.Port>>8), byte(bnd.Port))
	_, err := c.Write(b)
	return err
}

// stall never answers: it drains c until the client closes it or the
// server does.
func stall(c net.Conn) {
	io.Copy(io.Discard, c)
}

// closeWrite half-closes c if it supports it (TCP and unix sockets do).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.Close()
		}
		return
	}
	c.Close()
}
