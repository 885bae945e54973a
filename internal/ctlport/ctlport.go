package ctlport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/torgate/torgate/internal/fair"
	"github.com/torgate/torgate/internal/flow"
)

// Tor is what ctlport asks of torgate's control connection to Tor
// (*torctl.Tor implements it).
type Tor interface {
	// GetInfo runs GETINFO for keys and returns each key's value. ctlport
	// passes only keys from its allowlist (torKeys).
	GetInfo(ctx context.Context, keys ...string) (map[string]string, error)
}

// Config configures a Server. Field comments are the reference; the zero
// value of every optional field takes the documented default.
type Config struct {
	// Tor returns the Tor that answers workstation who's GETINFO keys
	// that come from Tor: with several Tor instances, the one that
	// carries who's circuits, so that status/circuit-established speaks
	// of the Tor the workstation uses. nil when torgate has no control
	// connection to Tor (plain SOCKS mode): then
	// status/circuit-established and status/bootstrap-phase are answered
	// from Ready, and the other Tor keys are refused with 551.
	Tor func(who netip.Addr) Tor
	// NewIdentity gives one workstation new circuits: the router's
	// per-workstation new identity (tunnel.Isolator.NewIdentity). It must
	// change only who's circuits, never send Tor's global NEWNYM. It may
	// block briefly; it is called from the workstation's connection, or
	// from a timer for a NEWNYM that came early. Required.
	NewIdentity func(who netip.Addr) error
	// SOCKSListeners returns the gateway's SOCKS address(es) on local,
	// the gateway address the workstation connected to (the flow's
	// destination address): GETINFO net/listeners/socks answers them.
	// Required.
	SOCKSListeners func(local netip.Addr) []netip.AddrPort
	// Ready reports whether Tor can carry traffic (nil: it can). Used
	// only without Tor, for status/circuit-established and
	// status/bootstrap-phase. Optional.
	Ready func() error
	// Proven tells a workstation that recently completed a TCP handshake
	// with torgate (a fair.Proof's Has): only those may take the reserve
	// of the connection pool. nil: no one is, and the reserve stays
	// unused. Optional.
	Proven func(who netip.Addr) bool

	// MaxConns caps the open control connections of all workstations,
	// MaxConnsPerSource those of one. Defaults DefaultMaxConns and
	// DefaultMaxConnsPerSource; the reserve is fair.Default's.
	MaxConns, MaxConnsPerSource int
	// MaxLine is the longest command line accepted, line ending
	// included; a longer one closes the connection. Default
	// DefaultMaxLine; at least minMaxLine, at most maxMaxLine.
	MaxLine int
	// Logger; nil discards. Destinations are never logged (ctlport sees
	// none); a workstation's identity only at Debug.
	Logger *slog.Logger
	// Now is the clock for NEWNYM's rate limit and the command rate.
	// Default time.Now. Timers use the runtime's clock, so a test that
	// fakes time runs in a synctest bubble and leaves Now nil.
	Now func() time.Time
}

// Defaults and limits.
const (
	// DefaultMaxConns: Tor Browser keeps one control connection, and
	// Whonix's scripts open short ones; 64 serves dozens of workstations.
	DefaultMaxConns = 64
	// DefaultMaxConnsPerSource: one workstation's browser, its scripts and
	// a reconnect or two.
	DefaultMaxConnsPerSource = 8
	// DefaultMaxLine (bytes): the longest legitimate line is an
	// AUTHENTICATE with a long password or a GETINFO of a few keys. Tor
	// itself allows far more (a megabyte); a workstation needs none of it.
	DefaultMaxLine = 4096
	minMaxLine     = 256
	maxMaxLine     = 1 << 20

	// PreAuthTimeout bounds the time from connecting to AUTHENTICATE:
	// a client authenticates at once; a connection that does not is a
	// scan or a stuck peer and gives its slot back.
	PreAuthTimeout = 10 * time.Second
	// maxPreAuthCommands: PROTOCOLINFO, AUTHCHALLENGE and AUTHENTICATE
	// take at most three; the rest are a client probing.
	maxPreAuthCommands = 8
	// CommandRate (per second) and CommandBurst: one connection's
	// commands beyond the burst wait for the rate. Tor Browser sends a
	// few commands a minute; a flood is slowed, not served.
	CommandRate  = 10
	CommandBurst = 32
	// writeTimeout bounds one reply's write: a workstation that stops
	// reading loses its connection, not a goroutine forever.
	writeTimeout = 30 * time.Second
	// torTimeout bounds one GETINFO to Tor for a workstation.
	torTimeout = 10 * time.Second
	// infoTTL is how long an answer from Tor is reused for every
	// workstation: no flood asks Tor more than about once per key per
	// infoTTL.
	infoTTL = time.Second
	// maxInfoKeys is the most keys one GETINFO or GETCONF may ask.
	maxInfoKeys = 16
	// maxDataBytes bounds the data block of a multi-line ("+") command,
	// read only to be refused; more closes the connection.
	maxDataBytes = 64 << 10
	// NewNymInterval is Tor's minimum time between two NEWNYMs
	// (MAX_SIGNEWNYM_RATE in tor's mainloop.c; torctl.NewNymInterval),
	// applied here per workstation.
	NewNymInterval = 10 * time.Second
	// maxNymStates bounds the NEWNYM rate-limit table; entries older than
	// NewNymInterval are dropped when it is full.
	maxNymStates = 4096
	// FallbackVersion is the Tor version PROTOCOLINFO names when Tor
	// cannot be asked (plain SOCKS mode, or Tor down): the series torgate
	// is tested with. A client needs some version there to parse the reply.
	FallbackVersion = "0.4.9.0"
)

// Server is the filtered control port. Its methods are safe for
// concurrent use.
type Server struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	pool *fair.Pool
	m    *metrics

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool                  // guarded by mu
	conns  map[net.Conn]struct{} // open connections; guarded by mu

	infoMu sync.Mutex
	info   map[infoKey]cachedInfo // Tor's answers; guarded by infoMu

	nymMu     sync.Mutex
	nym       map[netip.Addr]*nymState // per workstation; guarded by nymMu
	nymWarned atomic.Int64             // when a failed NEWNYM was last logged (Unix ns)
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.NewIdentity == nil {
		return nil, errors.New("ctlport: NewIdentity is required")
	}
	if cfg.SOCKSListeners == nil {
		return nil, errors.New("ctlport: SOCKSListeners is required")
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerSource == 0 {
		cfg.MaxConnsPerSource = min(DefaultMaxConnsPerSource, cfg.MaxConns)
	}
	if cfg.MaxConns < 0 || cfg.MaxConnsPerSource < 0 || cfg.MaxConnsPerSource > cfg.MaxConns {
		return nil, fmt.Errorf("ctlport: MaxConns %d and MaxConnsPerSource %d: want 0 < per source <= total", cfg.MaxConns, cfg.MaxConnsPerSource)
	}
	if cfg.MaxLine == 0 {
		cfg.MaxLine = DefaultMaxLine
	}
	if cfg.MaxLine < minMaxLine || cfg.MaxLine > maxMaxLine {
		return nil, fmt.Errorf("ctlport: MaxLine %d outside %d..%d", cfg.MaxLine, minMaxLine, maxMaxLine)
	}
	pool, err := fair.NewPool(fair.Default(cfg.MaxConns, cfg.MaxConnsPerSource), cfg.Proven)
	if err != nil {
		return nil, fmt.Errorf("ctlport: %w", err)
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		now:   cfg.Now,
		pool:  pool,
		m:     newMetrics(),
		conns: make(map[net.Conn]struct{}),
		info:  make(map[infoKey]cachedInfo),
		nym:   make(map[netip.Addr]*nymState),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "ctlport")
	if s.now == nil {
		s.now = time.Now
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// ServeTCP serves one workstation's connection to the control port, on
// the goroutine the stack gives each flow, until the connection ends. It
// refuses at once (a RST) when the Server is closed or the workstation's
// or everyone's share of connections is taken.
func (s *Server) ServeTCP(f flow.Request) {
	who := f.Who()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.m.refuse(reasonClosed)
		f.Reject()
		return
	}
	ok, atShare := s.pool.Take(who)
	if !ok {
		s.mu.Unlock()
		if atShare {
			s.m.refuse(reasonSourceShare)
		} else {
			s.m.refuse(reasonLimit)
		}
		f.Reject()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	// The stack calls ServeTCP on a goroutine of the flow's own and
	// rejects a flow left undecided when it returns: serve it here.
	defer s.wg.Done()
	defer s.pool.Release(who)
	conn, err := f.Accept()
	if err != nil {
		s.m.refuse(reasonHandshake)
		return
	}
	if !s.track(conn) {
		conn.Close()
		return
	}
	defer s.untrack(conn)
	s.m.open.Inc()
	defer s.m.open.Dec()
	s.log.Debug("control connection", "who", who)
	c := newSession(s, conn, who, f.Dst().Addr())
	c.run()
}

// track records an open connection for Close; false once closed.
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
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close closes every connection, cancels NEWNYMs still waiting for their
// interval, and waits for the connections' goroutines. Later flows get a
// RST.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.stopNym()
	s.wg.Wait()
	return nil
}

// Metrics returns the Server's collectors.
func (s *Server) Metrics() []prometheus.Collector { return s.m.collectors() }
