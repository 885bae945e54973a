// Package upstream keeps evidence that the SOCKS upstream (Tor's SOCKS
// port, or a plain SOCKS5 proxy) answers, and reports it to the router's
// readiness gate.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Upstream liveness bounds. Tor answers a SOCKS greeting from its main
// loop at once, before any circuit work (a CONNECT's reply may take a
// minute; the method selection never does), so a greeting unanswered for
// seconds means a Tor that is stopped or wedged, not a slow network.
const (
	// upstreamStallAfter: a connection to the SOCKS port that has sent its
	// greeting and got no byte back for this long marks the upstream not
	// ready.
	upstreamStallAfter = 5 * time.Second
	// upstreamProbeEvery is the plain-SOCKS probe period while the
	// upstream answers.
	upstreamProbeEvery = 5 * time.Second
	// upstreamRetryEvery is the probe period while it does not: the first
	// answer makes torgate ready again within about this long.
	upstreamRetryEvery = time.Second
	// upstreamProbeTimeout bounds one probe (connect and greeting).
	upstreamProbeTimeout = 3 * time.Second
	// upstreamFirstProbe bounds the synchronous probe in Start.
	upstreamFirstProbe = time.Second
)

// Why the upstream was found not answering: the metric's label set.
const (
	whyConnect = "connect" // a real dial could not connect
	whyStall   = "stall"   // a greeting went unanswered
	whyProbe   = "probe"   // the periodic probe failed
)

// Watch keeps evidence that the SOCKS upstream answers. It wraps
// the dialer's Dial: a dial that cannot connect, or a connection that
// gets no byte back within upstreamStallAfter of its first write (the
// greeting), marks the upstream down. It probes with a connect and a
// bare SOCKS greeting (method negotiation, then close): always in plain
// SOCKS mode, where there is no other evidence, and while down in any
// mode, so that readiness returns as soon as the upstream answers.
type Watch struct {
	dial  func(ctx context.Context) (net.Conn, error)
	plain bool // no control port: the probes are the only evidence
	log   *slog.Logger

	onChange func(error)

	up atomic.Bool

	mu      sync.Mutex
	reason  error                    // guarded by mu; why down
	pending map[*watchConn]time.Time // guarded by mu; first write, no answer yet
	kick    chan struct{}            // cap 1: probe now

	reportMu sync.Mutex // orders onChange calls

	downTotal *prometheus.CounterVec
	upGauge   prometheus.GaugeFunc
}

// New returns the watch of the upstream dial connects to. plain says
// there is no control port, so that the probes are the only evidence.
// onChange (nil: none) is called with nil when the upstream answers again
// and with the reason when it is found not answering; it must not block.
func New(dial func(context.Context) (net.Conn, error), plain bool, log *slog.Logger, onChange func(error)) *Watch {
	w := &Watch{dial: dial, plain: plain, log: log,
		pending: make(map[*watchConn]time.Time), kick: make(chan struct{}, 1)}
	w.up.Store(true)
	w.onChange = onChange
	w.downTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "upstream_down_total",
		Help: "Times the SOCKS upstream was found not answering, by evidence: connect (a dial failed), stall (a greeting unanswered), probe.",
	}, []string{"why"})
	for _, l := range []string{whyConnect, whyStall, whyProbe} {
		w.downTotal.WithLabelValues(l)
	}
	w.upGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "upstream_up", Help: "1 while the SOCKS upstream answers (connect and greeting), else 0.",
	}, func() float64 {
		if w.up.Load() {
			return 1
		}
		return 0
	})
	return w
}

// Metrics returns the watch's collectors.
func (w *Watch) Metrics() []prometheus.Collector {
	return []prometheus.Collector{w.downTotal, w.upGauge}
}

// OK reports whether the upstream answers, as far as torgate knows.
func (w *Watch) OK() bool { return w.up.Load() }

// Err is nil while OK, else why not.
func (w *Watch) Err() error {
	if w.up.Load() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.reason == nil {
		return errors.New("socks upstream not answering")
	}
	return w.reason
}

func (w *Watch) setDown(why string, err error) {
	w.mu.Lock()
	w.reason = fmt.Errorf("socks upstream not answering (%s): %w", why, err)
	w.mu.Unlock()
	if w.up.CompareAndSwap(true, false) {
		w.downTotal.WithLabelValues(why).Inc()
		w.log.Warn("socks upstream not answering: new flows get a RST, DNS SERVFAIL", "why", why, "err", err)
	}
	w.report()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *Watch) setUp() {
	if w.up.CompareAndSwap(false, true) {
		w.log.Info("socks upstream answers again")
		w.report()
	}
}

// report hands the current state to onChange. Reports of one state may
// repeat (the gate keeps the last); the order of two racing reports is
// the order they read the state in, which reportMu makes the order they
// are delivered in.
func (w *Watch) report() {
	if w.onChange == nil {
		return
	}
	w.reportMu.Lock()
	defer w.reportMu.Unlock()
	w.onChange(w.Err())
}

// Dial is the wrapped dialer's Dial.
func (w *Watch) Dial(ctx context.Context) (net.Conn, error) {
	c, err := w.dial(ctx)
	if err != nil {
		// A dial the flow gave up on says nothing about the upstream.
		if ctx.Err() == nil {
			w.setDown(whyConnect, err)
		}
		return nil, err
	}
	return &watchConn{Conn: c, w: w}, nil
}

// probe connects and negotiates methods. Any reply from a SOCKS5 server
// (even "no acceptable method") shows it is alive.
func (w *Watch) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, upstreamProbeTimeout)
	defer cancel()
	c, err := w.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// Version 5, one method: no authentication.
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	var b [2]byte
	if _, err := c.Read(b[:]); err != nil {
		return fmt.Errorf("greeting unanswered: %w", err)
	}
	if b[0] != 5 {
		return fmt.Errorf("greeting answered with version %d, not SOCKS5", b[0])
	}
	return nil
}

// Start reports the initial state and runs the first probe (plain mode),
// bounded by upstreamFirstProbe, so that a router that starts against a
// dead upstream is not ready from its first flow on.
func (w *Watch) Start(ctx context.Context) {
	defer w.report()
	if !w.plain {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, upstreamFirstProbe)
	defer cancel()
	if err := w.probe(pctx); err != nil {
		w.setDown(whyProbe, err)
	}
}

// Run checks for stalled greetings every second and probes: every
// upstreamProbeEvery in plain mode, every upstreamRetryEvery while down.
// It returns when ctx is done. The ticks gather evidence about a peer
// that cannot report its own death; nothing waits on them.
func (w *Watch) Run(ctx context.Context) {
	tick := time.NewTicker(upstreamRetryEvery)
	defer tick.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-w.kick:
		}
		now := time.Now()
		w.checkStalls(now)
		if w.up.Load() && (!w.plain || now.Sub(last) < upstreamProbeEvery) {
			continue
		}
		last = now
		if err := w.probe(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			w.setDown(whyProbe, err)
			continue
		}
		w.setUp()
	}
}

func (w *Watch) checkStalls(now time.Time) {
	w.mu.Lock()
	var oldest time.Duration
	for _, t := range w.pending {
		oldest = max(oldest, now.Sub(t))
	}
	w.mu.Unlock()
	if oldest >= upstreamStallAfter {
		w.setDown(whyStall, fmt.Errorf("a greeting got no reply for %v", oldest.Round(time.Second)))
	}
}

// watchConn is a connection to the upstream that reports whether its
// first write (the greeting) gets an answer. It passes on the socket's
// descriptor (syscall.Conn) and half-closes, so the relay still drives
// it through epoll.
type watchConn struct {
	net.Conn
	w        *Watch
	wrote    atomic.Bool
	answered atomic.Bool
}

func (c *watchConn) Write(b []byte) (int, error) {
	if !c.wrote.Load() && c.wrote.CompareAndSwap(false, true) {
		c.w.mu.Lock()
		c.w.pending[c] = time.Now()
		c.w.mu.Unlock()
	}
	return c.Conn.Write(b)
}

func (c *watchConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.answered.Load() && c.answered.CompareAndSwap(false, true) {
		c.forget()
		c.w.setUp()
	}
	return n, err
}

func (c *watchConn) forget() {
	c.w.mu.Lock()
	delete(c.w.pending, c)
	c.w.mu.Unlock()
}

func (c *watchConn) Close() error {
	c.forget()
	return c.Conn.Close()
}

func (c *watchConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (c *watchConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (c *watchConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}
