// Package socksport is the workstations' SOCKS server: the SocksPorts a
// Whonix-Gateway offers on its LAN address (9050; 9100-9189, one per
// application; 9150 for Tor Browser), served inside torgate's own network
// stack, with no kernel socket.
//
// The router's mux hands every TCP connection attempt to the gateway's
// own address on a configured port to Server.ServeTCP, as a flow.Request.
// The Server completes the TCP handshake, reads the client's SOCKS
// handshake (SOCKS5 with no authentication or RFC 1929
// username/password; SOCKS4 and SOCKS4a) within HandshakeTimeout and the
// workstation's share of handshakes in progress, and passes the request
// to the tunnel, which applies everything a transparent flow meets (Tor
// ready, the destination policy, the workstation's names and shares),
// dials Tor and relays:
//
//	CONNECT        Tunnel.ConnectPort      the reply, then the relay
//	RESOLVE        Tunnel.ResolvePort      the address (Tor's extension)
//	RESOLVE_PTR    Tunnel.ResolvePTRPort   the name (SOCKS5 only)
//	anything else  -                       command not supported (0x07)
//
// Isolation: each stream's credentials towards Tor are derived from the
// workstation, the port, the client's own username and password and the
// workstation's new-identity epoch (tunnel.Isolator.PortAuth), never the
// client's raw credentials. Tor Browser's per-site credentials and the
// per-application ports keep their meaning, and no workstation can pick
// another's circuits.
//
// Failures are SOCKS failure replies followed by a close, never a
// connection around Tor: the tunnel is the only way out.
package socksport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/torgate/torgate/internal/defaults"
	"github.com/torgate/torgate/internal/dest"
	"github.com/torgate/torgate/internal/fair"
	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/tunnel"
)

// Tunnel is the way to Tor: *tunnel.Tunnel.
type Tunnel interface {
	// ConnectPort serves a CONNECT: it replies through s.Reply and, on
	// success, owns s.Conn from then on.
	ConnectPort(ctx context.Context, s tunnel.PortStream) socks.Reply
	// ResolvePort answers a RESOLVE.
	ResolvePort(ctx context.Context, c tunnel.PortClient, name string) (netip.Addr, socks.Reply)
	// ResolvePTRPort answers a RESOLVE_PTR.
	ResolvePTRPort(ctx context.Context, c tunnel.PortClient, ip netip.Addr) (string, socks.Reply)
}

var _ Tunnel = (*tunnel.Tunnel)(nil)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Tunnel carries the requests to Tor. Required.
	Tunnel Tunnel
	// HandshakeTimeout bounds the client's SOCKS handshake, from the
	// accepted connection to its request. Default 10 s: a client sends
	// its handshake at once, over a LAN; only Tor's reply takes long,
	// and that is the tunnel's DialTimeout.
	HandshakeTimeout time.Duration
	// MaxHandshakes caps SOCKS handshakes in progress, all workstations
	// together. Default 256. Once the handshake is read, the request
	// counts against the tunnel's shares instead (MaxDialsPerSource,
	// MaxFlowsPerSource).
	MaxHandshakes int
	// MaxHandshakesPerSource is one workstation's share of MaxHandshakes.
	// Default 32, or MaxHandshakes if smaller. The last quarter of
	// MaxHandshakes goes only to workstations holding fewer than
	// MaxHandshakes/128 (internal/fair), so that one slow or hostile
	// client per workstation cannot starve the rest. A connection over
	// its share is reset.
	MaxHandshakesPerSource int
	// Logger; nil discards.
	Logger *slog.Logger
	// LogDestinations logs destinations in debug logs. Off by default:
	// where a workstation goes is private.
	LogDestinations bool
}

// Defaults.
const (
	DefaultHandshakeTimeout       = 10 * time.Second
	DefaultMaxHandshakes          = 256
	DefaultMaxHandshakesPerSource = 32
)

// ConfigError is an invalid Config: the field and what is wrong with it.
type ConfigError struct {
	Field, Problem string
}

func (e *ConfigError) Error() string { return "socksport: " + e.Field + ": " + e.Problem }

// validate applies the defaults and checks cfg.
func (cfg Config) validate() (Config, error) {
	if cfg.Tunnel == nil {
		return cfg, &ConfigError{"Tunnel", "required"}
	}
	switch {
	case cfg.HandshakeTimeout < 0:
		return cfg, &ConfigError{"HandshakeTimeout", "negative"}
	case cfg.MaxHandshakes < 0:
		return cfg, &ConfigError{"MaxHandshakes", "negative"}
	case cfg.MaxHandshakesPerSource < 0:
		return cfg, &ConfigError{"MaxHandshakesPerSource", "negative"}
	}
	defaults.Set(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	defaults.Set(&cfg.MaxHandshakes, DefaultMaxHandshakes)
	defaults.Set(&cfg.MaxHandshakesPerSource, min(DefaultMaxHandshakesPerSource, cfg.MaxHandshakes))
	if cfg.MaxHandshakesPerSource > cfg.MaxHandshakes {
		return cfg, &ConfigError{"MaxHandshakesPerSource", fmt.Sprintf("%d exceeds MaxHandshakes %d", cfg.MaxHandshakesPerSource, cfg.MaxHandshakes)}
	}
	return cfg, nil
}

// Why a handshake ended without a request, as metric labels.
const (
	refusedShare    = "share"       // the workstation held its share of handshakes
	refusedOverload = "overload"    // all handshakes taken (or all but the reserve)
	refusedShutdown = "shutdown"    // the Server is closing
	refusedTimeout  = "timeout"     // HandshakeTimeout passed
	refusedClosed   = "client_gone" // the client closed or reset the connection first
	refusedNoMethod = "no_method"   // SOCKS5 without no-auth or username/password
	refusedVersion  = "not_socks"   // neither SOCKS5 nor SOCKS4
	refusedBad      = "malformed"   // a malformed message (a failure reply sent if one fits)
	refusedAccept   = "tcp_accept"  // the TCP handshake did not complete
)

var refusedReasons = []string{refusedShare, refusedOverload, refusedShutdown, refusedTimeout, refusedClosed, refusedNoMethod, refusedVersion, refusedBad, refusedAccept}

// Commands, as metric labels.
const (
	cmdConnect    = "connect"
	cmdResolve    = "resolve"
	cmdResolvePTR = "resolve_ptr"
	cmdOther      = "other" // BIND, UDP ASSOCIATE, anything else: refused
)

// Server serves SOCKS requests from workstations. Make one with New.
type Server struct {
	cfg  Config
	log  *slog.Logger
	pool *fair.Pool // handshakes in progress

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool                  // guarded by mu
	conns  map[net.Conn]struct{} // handshakes in progress; guarded by mu
	wg     sync.WaitGroup        // ServeTCP calls past their accept

	readers sync.Pool // of *socks.ServerReader

	requests    *prometheus.CounterVec
	connections *prometheus.CounterVec
	refused     *prometheus.CounterVec
	active      prometheus.Gauge
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	// Every source is proven: the pool is taken only after the TCP
	// handshake completed, which a spoofed address cannot do.
	pool, err := fair.NewPool(fair.Default(cfg.MaxHandshakes, cfg.MaxHandshakesPerSource), func(netip.Addr) bool { return true })
	if err != nil {
		return nil, fmt.Errorf("socksport: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:   cfg,
		log:   log,
		pool:  pool,
		conns: make(map[net.Conn]struct{}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socksport_requests_total",
			Help: "Requests on the workstations' SOCKS ports, by command (connect, resolve, resolve_ptr, other) and result (the reply code).",
		}, []string{"command", "result"}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socksport_connections_total",
			Help: "Connections accepted on the SOCKS ports, by protocol version (socks5, socks4, or none: neither).",
		}, []string{"version"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "socksport_handshakes_refused_total",
			Help: "SOCKS-port connections that ended before a request, by reason.",
		}, []string{"reason"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "socksport_handshakes_active",
			Help: "SOCKS handshakes in progress.",
		}),
	}
	for _, r := range refusedReasons {
		s.refused.WithLabelValues(r)
	}
	for _, v := range []string{"socks5", "socks4", "none"} {
		s.connections.WithLabelValues(v)
	}
	s.readers.New = func() any { return socks.NewServerReader(nil) }
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Metrics returns the server's collectors for the caller's registry.
func (s *Server) Metrics() []prometheus.Collector {
	return []prometheus.Collector{s.requests, s.connections, s.refused, s.active}
}

// Close ends the handshakes in progress and cancels the dials and lookups
// of requests not yet answered (their clients get a failure reply), and
// waits for them. Streams already relayed belong to the tunnel. Later
// connections are reset.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	s.cancel()
	for c := range conns {
		c.Close()
	}
	s.wg.Wait()
	return nil
}

// begin registers a ServeTCP call with conn c in its handshake, unless
// the Server is closed.
func (s *Server) begin(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	s.conns[c] = struct{}{}
	return true
}

// handshakeDone takes c off the handshakes Close ends.
func (s *Server) handshakeDone(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// ServeTCP serves one connection to a SOCKS port, from the workstation
// f.Who(); f.Dst().Port() is the port, one of the isolation inputs. It
// runs on the caller's goroutine until the request is answered: through
// the handshake (at most HandshakeTimeout) and the tunnel's dial or
// lookup (at most its DialTimeout); a CONNECT's relay then runs on its
// own.
func (s *Server) ServeTCP(f flow.Request) {
	if s.isClosed() {
		s.refused.WithLabelValues(refusedShutdown).Inc()
		f.Reject()
		return
	}
	who, port := f.Who().Unmap(), f.Dst().Port()
	c, err := f.Accept()
	if err != nil {
		s.refused.WithLabelValues(refusedAccept).Inc()
		return
	}
	if ok, atShare := s.pool.Take(who); !ok {
		reason := refusedOverload
		if atShare {
			reason = refusedShare
		}
		s.refused.WithLabelValues(reason).Inc()
		reset(c)
		return
	}
	held := true
	releaseSlot := func() {
		if held {
			held = false
			s.pool.Release(who)
			s.active.Dec()
		}
	}
	s.active.Inc()
	defer releaseSlot()
	if !s.begin(c) {
		s.refused.WithLabelValues(refusedShutdown).Inc()
		reset(c)
		return
	}
	defer s.wg.Done()

	h := handshake{s: s, c: c, client: tunnel.PortClient{Who: who, Port: port}}
	h.sr = s.readers.Get().(*socks.ServerReader)
	h.sr.Reset(c)
	defer func() {
		h.sr.Reset(nil)
		s.readers.Put(h.sr)
	}()
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	req, reason := h.read()
	s.handshakeDone(c)
	if reason != "" {
		s.refused.WithLabelValues(reason).Inc()
		s.log.Debug("socks handshake failed", "src", who, "port", port, "reason", reason, "err", h.err)
		closeAfterReply(c)
		return
	}
	// From here on the tunnel's shares hold the request, not a handshake
	// slot; Close reaches it through s.ctx.
	releaseSlot()
	c.SetDeadline(time.Time{})
	if !h.serve(req) {
		closeAfterReply(c)
	}
}

// closeAfterReply closes c after a failure reply, first discarding what
// the client sent that nobody will read (up to drainMax, without
// waiting): a close with unread data sends a RST, and a RST can make the
// client's system drop the reply before the application reads it.
func closeAfterReply(c net.Conn) {
	if tr, ok := c.(interface {
		TryRead([]byte) (int, bool, error)
	}); ok {
		var buf [4096]byte
		for range drainMax / len(buf) {
			if n, wouldBlock, err := tr.TryRead(buf[:]); n == 0 || wouldBlock || err != nil {
				break
			}
		}
	}
	c.Close()
}

// drainMax bounds what closeAfterReply discards: a client's pipelined
// request body is seldom more, and the drain must stay cheap.
const drainMax = 256 << 10

// request is a client's request, SOCKS5 or SOCKS4.
type request struct {
	command byte
	dst     socks.Addr
}

// handshake is one client's handshake and request.
type handshake struct {
	s      *Server
	c      net.Conn
	sr     *socks.ServerReader
	client tunnel.PortClient
	v4     bool  // SOCKS4: the replies are SOCKS4's
	err    error // why read failed, for the log
	// answered is set once the client has had a method reply: a failure
	// then is a request reply (SOCKS5).
	answered bool
}

// read reads the handshake up to the request, answering the greeting and
// the authentication. A non-empty reason says why it failed; the client
// has had a failure reply where one fits.
func (h *handshake) read() (request, string) {
	v, err := h.sr.Version()
	if err != nil {
		h.s.connections.WithLabelValues("none").Inc()
		return request{}, h.fail(err)
	}
	switch v {
	case 0x05:
		h.s.connections.WithLabelValues("socks5").Inc()
		return h.read5()
	case 0x04:
		h.s.connections.WithLabelValues("socks4").Inc()
		h.v4 = true
		req, err := h.sr.ReadRequest4()
		if err != nil {
			return request{}, h.fail(err)
		}
		// Tor takes the SOCKS4 user ID as the username (IsolateSOCKSAuth).
		// It points into the reader, which is not read again until the
		// request is served.
		if len(req.UserID) > 0 {
			h.client.User = req.UserID
		}
		return request{command: req.Command, dst: req.Dst}, ""
	}
	h.s.connections.WithLabelValues("none").Inc()
	h.err = fmt.Errorf("first byte 0x%02x", v)
	return request{}, refusedVersion
}

// read5 reads a SOCKS5 greeting, its authentication and the request.
func (h *handshake) read5() (request, string) {
	m, err := h.sr.ReadGreeting()
	if err != nil {
		return request{}, h.fail(err)
	}
	// Username/password whenever offered, as Tor chooses: the credentials
	// choose circuits. A client that offers neither method gets 0xFF.
	method := m.Select(false)
	if err := h.write([]byte{0x05, method}); err != nil {
		return request{}, h.fail(err)
	}
	if method == socks.MethodNoAcceptable {
		return request{}, refusedNoMethod
	}
	if method == socks.MethodUserPass {
		user, pass, err := h.sr.ReadUserPass()
		if err != nil {
			return request{}, h.fail(err)
		}
		// They point into the reader, which the request overwrites.
		if len(user)+len(pass) > 0 {
			b := append(append(make([]byte, 0, len(user)+len(pass)), user...), pass...)
			h.client.User, h.client.Pass = b[:len(user):len(user)], b[len(user):]
		}
		// Tor accepts any credentials: they are an isolation key.
		if err := h.write([]byte{0x01, 0x00}); err != nil {
			return request{}, h.fail(err)
		}
	}
	h.answered = true
	req, err := h.sr.ReadRequest()
	if err != nil {
		return request{}, h.fail(err)
	}
	return request{command: req.Command, dst: req.Dst}, ""
}

// fail classifies a handshake error and sends the failure reply that
// fits, if any: a request the reader refused gets its code; a malformed
// or late message a general failure once the client expects a request
// reply (SOCKS4 always does).
func (h *handshake) fail(err error) string {
	h.err = err
	var ne net.Error
	var re *socks.RequestError
	var pe *socks.ProtocolError
	reason := refusedBad
	code := socks.ReplyGeneralFailure
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		reason = refusedTimeout
	case errors.As(err, &re):
		code = re.Reply
	case errors.As(err, &pe) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
	case errors.As(err, &pe):
		// The client closed its side: nobody to answer.
		return refusedClosed
	case h.s.isClosed():
		return refusedShutdown // Close closed the connection
	default:
		return refusedClosed // reset
	}
	if h.v4 || h.answered {
		h.reply(code, socks.Addr{})
	}
	return reason
}

// serve answers the request. It reports whether the tunnel took the
// connection over; if not, the caller closes it.
func (h *handshake) serve(req request) bool {
	s := h.s
	cmd := commandLabel(req.command)
	code := h.dispatch(req)
	s.requests.WithLabelValues(cmd, code.String()).Inc()
	if code != socks.ReplySucceeded && s.log.Enabled(s.ctx, slog.LevelDebug) {
		s.log.Debug("socks request failed", "src", h.client.Who, "port", h.client.Port, "command", cmd, "dst", h.dest(req.dst), "reply", code)
	}
	return code == socks.ReplySucceeded && req.command == socks.CmdConnect
}

// dispatch runs the request and returns the reply code sent.
func (h *handshake) dispatch(req request) socks.Reply {
	s, ctx := h.s, h.s.ctx
	switch {
	case req.command == socks.CmdConnect:
		if req.dst.Port == 0 {
			return h.reply(socks.ReplyGeneralFailure, socks.Addr{})
		}
		// A client that leaves while Tor dials ends the dial, as Tor
		// ends a stream whose client hung up before it connected;
		// otherwise its dial would hold one of its workstation's dial
		// slots for up to the dial timeout.
		dctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w := watchHangup(h.c, cancel)
		defer w.stop()
		return s.cfg.Tunnel.ConnectPort(dctx, tunnel.PortStream{
			PortClient: h.client,
			Conn:       h.c,
			Dst:        req.dst,
			Early:      h.sr.Buffered(),
			More:       w.stop,
			Reply: func(code socks.Reply) error {
				return h.replyErr(code, socks.Addr{})
			},
		})
	case req.command == socks.CmdResolve:
		ip := req.dst.IP
		if req.dst.Name != "" {
			var code socks.Reply
			if ip, code = s.cfg.Tunnel.ResolvePort(ctx, h.client, req.dst.Name); code != socks.ReplySucceeded {
				return h.reply(code, socks.Addr{})
			}
		}
		// An address asked for is its own answer, as Tor answers it.
		if h.v4 && !ip.Unmap().Is4() {
			return h.reply(socks.ReplyAddressNotSupported, socks.Addr{})
		}
		return h.reply(socks.ReplySucceeded, socks.Addr{IP: ip})
	case req.command == socks.CmdResolvePTR && !h.v4:
		ip := req.dst.IP
		if req.dst.Name != "" {
			lit, ok := dest.ParseLiteral(req.dst.Name)
			if !ok {
				return h.reply(socks.ReplyAddressNotSupported, socks.Addr{})
			}
			ip = lit
		}
		name, code := s.cfg.Tunnel.ResolvePTRPort(ctx, h.client, ip)
		if code != socks.ReplySucceeded {
			return h.reply(code, socks.Addr{})
		}
		return h.reply(socks.ReplySucceeded, socks.Addr{Name: name})
	}
	return h.reply(socks.ReplyCommandNotSupported, socks.Addr{})
}

// reply sends a reply and returns the code sent: a failure if bnd cannot
// travel (a name no reply can carry, an IPv6 answer to SOCKS4).
func (h *handshake) reply(code socks.Reply, bnd socks.Addr) socks.Reply {
	if err := h.replyErr(code, bnd); errors.Is(err, errUnencodable) {
		code = socks.ReplyGeneralFailure
		h.replyErr(code, socks.Addr{})
	}
	return code
}

var errUnencodable = errors.New("socksport: answer does not fit a reply")

// replyErr writes a reply in the client's version, within
// HandshakeTimeout: a client that does not read cannot hold the call.
func (h *handshake) replyErr(code socks.Reply, bnd socks.Addr) error {
	var buf [4 + 1 + 255 + 2]byte
	var b []byte
	if h.v4 {
		ip := bnd.IP.Unmap()
		if bnd.Name != "" || (ip.IsValid() && !ip.Is4()) {
			return errUnencodable
		}
		b = socks.AppendReply4(buf[:0], code, ip, 0)
	} else {
		var ok bool
		if b, ok = socks.AppendReply(buf[:0], code, bnd); !ok {
			return errUnencodable
		}
	}
	return h.write(b)
}

// write writes b to the client within HandshakeTimeout.
func (h *handshake) write(b []byte) error {
	h.c.SetWriteDeadline(time.Now().Add(h.s.cfg.HandshakeTimeout))
	_, err := h.c.Write(b)
	h.c.SetWriteDeadline(time.Time{})
	return err
}

// dest renders a destination for logs: redacted unless configured.
func (h *handshake) dest(a socks.Addr) slog.Value {
	if !h.s.cfg.LogDestinations {
		return slog.StringValue("[redacted]")
	}
	return slog.StringValue(a.String())
}

func commandLabel(cmd byte) string {
	switch cmd {
	case socks.CmdConnect:
		return cmdConnect
	case socks.CmdResolve:
		return cmdResolve
	case socks.CmdResolvePTR:
		return cmdResolvePTR
	}
	return cmdOther
}

// reset closes c with a RST where it can (netstack's Abort, or a socket's
// zero linger), so that a refused client sees a reset, not an empty
// stream.
func reset(c net.Conn) {
	switch v := c.(type) {
	case interface{ Abort() error }:
		v.Abort()
		return
	case interface{ SetLinger(int) error }:
		v.SetLinger(0)
	}
	c.Close()
}

// maxDuringDial bounds what a client may send while Tor dials its stream
// (kept for the upstream): past it the watch stops reading, and a hang-up
// is no longer noticed before the dial ends.
const maxDuringDial = 64 << 10

// hangupWatch reads a client while Tor dials its stream: an end of stream
// or an error (the client hung up, or reset) cancels the dial; what it
// sends meanwhile is kept for the upstream.
type hangupWatch struct {
	c    net.Conn
	done chan struct{} // closed when the reader stops
	buf  []byte        // what the client sent; read after done
	once sync.Once
}

func watchHangup(c net.Conn, cancel context.CancelFunc) *hangupWatch {
	w := &hangupWatch{c: c, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var b [4096]byte
		for len(w.buf) < maxDuringDial {
			n, err := c.Read(b[:min(len(b), maxDuringDial-len(w.buf))])
			w.buf = append(w.buf, b[:n]...)
			if err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					cancel() // gone: not stop's deadline
				}
				return
			}
		}
	}()
	return w
}

// stop ends the watch and returns what the client sent during it. The
// connection has no read deadline afterwards.
func (w *hangupWatch) stop() []byte {
	w.once.Do(func() {
		w.c.SetReadDeadline(aLongTimeAgo)
		<-w.done
		w.c.SetReadDeadline(time.Time{})
	})
	return w.buf
}

// aLongTimeAgo is a deadline in the past: it wakes a blocked Read at once.
var aLongTimeAgo = time.Unix(1, 0)
