//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Short-connection load: each connection sends reqSize bytes, reads the
// server's respSize-byte answer and closes. Who closes first decides
// which side holds TIME_WAIT: by default the server (it closes after its
// answer and the client reads to EOF, so the side facing the client, a
// router's stack, holds TIME_WAIT, as in front of a web server that
// closes); with -closer client the client closes once it has the answer
// and the server closes on its EOF (the client's own kernel holds
// TIME_WAIT, as when a browser drops a connection).
const (
	reqSize  = 128
	respSize = 128
)

// LoadResult is what one load run measured; tgbench load prints it as
// JSON.
type LoadResult struct {
	Mode     string  `json:"mode"`
	Seconds  float64 `json:"seconds"`
	Workers  int     `json:"workers,omitempty"`
	Rate     float64 `json:"target_rate,omitempty"`
	OK       int     `json:"ok"`
	Failures int     `json:"failures"`
	// FailureKinds counts failures by cause: connect, refused, reset,
	// timeout, short (fewer response bytes than expected), no_free_port
	// (reconnect: all source ports held by connections still in flight),
	// other.
	FailureKinds map[string]int `json:"failure_kinds,omitempty"`
	// PortBusy counts reconnect attempts skipped because the client's own
	// kernel still held the chosen source port (not a router failure).
	PortBusy int `json:"port_busy,omitempty"`
	// Late counts open-loop connections started more than 10 ms after
	// their scheduled time (the generator could not keep the rate).
	Late int `json:"late,omitempty"`
	// ConnPerSec is completed connections per second.
	ConnPerSec float64 `json:"conn_per_s"`
	// Latency percentiles of successful connections, from scheduled start
	// (open loop) or connect (closed loop) to EOF, in milliseconds.
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// noKeepAlive turns off the TCP keepalive Go sets on every dialled and
// accepted connection (four setsockopt calls each), which short
// connections in a benchmark pay for nothing: the rig's own CPU per
// connection is CPU the routers under test do not get.
const noKeepAlive = -1

type loadFlags struct {
	target   string
	closer   string
	dests    int
	mode     string
	workers  int
	rate     float64
	duration time.Duration
	timeout  time.Duration
	ports    int
	basePort int
}

// cmdLoad runs a short-connection load from the current namespace.
func cmdLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tgbench load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f loadFlags
	fs.StringVar(&f.target, "target", "", "server IP:port")
	fs.StringVar(&f.closer, "closer", closerServer, "who closes first: server (read the answer to EOF) or client (close once the answer is in; the server must run with the same -closer)")
	fs.IntVar(&f.dests, "dests", 1, "spread connections round robin over this many destinations: the target's IP and the next ones, same port")
	fs.StringVar(&f.mode, "mode", "closed", "closed (fixed workers), open (fixed rate) or reconnect (fixed rate from a small set of source ports, so 4-tuples are reused while the far side holds them in TIME_WAIT)")
	fs.IntVar(&f.workers, "workers", 16, "closed loop: concurrent workers")
	fs.Float64Var(&f.rate, "rate", 1000, "open and reconnect: connections per second")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to generate load")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "per-connection timeout (connect to EOF)")
	fs.IntVar(&f.ports, "ports", 256, "reconnect: how many source ports to cycle through (at 1,000/s each is reused every 256 ms, well inside any TIME_WAIT, and up to 256 connections may be in flight)")
	fs.IntVar(&f.basePort, "base-port", 40000, "reconnect: first source port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := netip.ParseAddrPort(f.target)
	if err != nil {
		return fmt.Errorf("--target: %w", err)
	}
	if f.closer != closerServer && f.closer != closerClient {
		return fmt.Errorf("-closer %q: want %s or %s", f.closer, closerServer, closerClient)
	}
	if f.workers < 1 || f.rate <= 0 || f.duration <= 0 || f.ports < 1 || f.dests < 1 {
		return errors.New("workers, rate, duration, ports and dests must be positive")
	}
	targets := destinations(target, f.dests)
	var res LoadResult
	switch f.mode {
	case "closed":
		res = closedLoop(ctx, targets, f)
	case "open":
		res = openLoop(ctx, targets, f, false)
	case "reconnect":
		res = openLoop(ctx, targets, f, true)
	default:
		return fmt.Errorf("--mode %q: want closed, open or reconnect", f.mode)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// recorder collects latencies and failures from many goroutines.
type recorder struct {
	mu       sync.Mutex
	lat      []time.Duration
	kinds    map[string]int
	portBusy atomic.Int64
	late     atomic.Int64
}

func newRecorder() *recorder { return &recorder{kinds: make(map[string]int)} }

func (r *recorder) add(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.kinds[failureKind(err)]++
		return
	}
	r.lat = append(r.lat, d)
}

func (r *recorder) result(mode string, elapsed time.Duration) LoadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := LoadResult{Mode: mode, Seconds: elapsed.Seconds(), OK: len(r.lat), FailureKinds: r.kinds}
	for _, n := range r.kinds {
		res.Failures += n
	}
	res.PortBusy = int(r.portBusy.Load())
	res.Late = int(r.late.Load())
	res.ConnPerSec = float64(len(r.lat)) / elapsed.Seconds()
	slices.Sort(r.lat)
	pct := func(p float64) float64 {
		if len(r.lat) == 0 {
			return 0
		}
		i := min(int(p*float64(len(r.lat))), len(r.lat)-1)
		return float64(r.lat[i]) / float64(time.Millisecond)
	}
	res.P50, res.P90, res.P99 = pct(0.50), pct(0.90), pct(0.99)
	if len(r.lat) > 0 {
		res.Max = float64(r.lat[len(r.lat)-1]) / float64(time.Millisecond)
	}
	return res
}

func failureKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, errShort):
		return "short"
	case errors.Is(err, errNoPort):
		return "no_free_port"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, errConnect):
		return "connect"
	default:
		return "other"
	}
}

var (
	errShort   = errors.New("short response")
	errConnect = errors.New("connect failed")
	// errNoPort: every source port of the set was still held by an
	// earlier connection of the client's own (they were all in flight).
	errNoPort = errors.New("no free source port")
)

// Who closes a short connection first (-closer).
const (
	closerServer = "server"
	closerClient = "client"
)

// exchange runs one short connection on an open conn.
func exchange(c net.Conn, deadline time.Time, clientCloses bool) error {
	c.SetDeadline(deadline)
	var req [reqSize]byte
	if _, err := c.Write(req[:]); err != nil {
		return err
	}
	if clientCloses {
		var resp [respSize]byte
		n, err := io.ReadFull(c, resp[:])
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: %d bytes", errShort, n)
		}
		return err
	}
	var resp [respSize + 1]byte
	n, err := io.ReadFull(c, resp[:])
	if errors.Is(err, io.ErrUnexpectedEOF) && n == respSize {
		return nil // the server closed after its answer: the normal end
	}
	if err == nil {
		return fmt.Errorf("%w: more than %d bytes", errShort, respSize)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %d bytes", errShort, n)
	}
	return err
}

// destinations returns first and the n-1 addresses after it, same port.
func destinations(first netip.AddrPort, n int) []netip.AddrPort {
	ts := make([]netip.AddrPort, n)
	a := first.Addr()
	for i := range ts {
		ts[i] = netip.AddrPortFrom(a, first.Port())
		a = a.Next()
	}
	return ts
}

func closedLoop(ctx context.Context, targets []netip.AddrPort, f loadFlags) LoadResult {
	rec := newRecorder()
	ctx, cancel := context.WithTimeout(ctx, f.duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range f.workers {
		wg.Go(func() {
			d := net.Dialer{KeepAlive: noKeepAlive}
			for ctx.Err() == nil {
				t0 := time.Now()
				target := targets[int(next.Add(1)-1)%len(targets)]
				err := oneConn(ctx, &d, target, t0.Add(f.timeout), f.closer == closerClient)
				if ctx.Err() != nil && err != nil {
					return // cut off by the end of the run, not a failure
				}
				rec.add(time.Since(t0), err)
			}
		})
	}
	wg.Wait()
	return rec.result("closed", time.Since(start))
}

func oneConn(ctx context.Context, d *net.Dialer, target netip.AddrPort, deadline time.Time, clientCloses bool) error {
	dctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", target.String())
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%w: %w", errConnect, err)
	}
	defer c.Close()
	return exchange(c, deadline, clientCloses)
}

// openLoop starts connections at a fixed rate, each on its own goroutine,
// and measures latency from the scheduled start so a stalled server cannot
// hide its delay (no coordinated omission). With reuse, each connection
// binds the next source port of a small set.
func openLoop(ctx context.Context, targets []netip.AddrPort, f loadFlags, reuse bool) LoadResult {
	rec := newRecorder()
	mode := "open"
	if reuse {
		mode = "reconnect"
	}
	interval := time.Duration(float64(time.Second) / f.rate)
	total := int(f.duration / interval)
	start := time.Now()
	var wg sync.WaitGroup
	var port atomic.Int64
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		} else if -d > 10*time.Millisecond {
			rec.late.Add(1)
		}
		if ctx.Err() != nil {
			break
		}
		target := targets[i%len(targets)]
		wg.Go(func() {
			deadline := due.Add(f.timeout)
			var err error
			if reuse {
				err = reuseConn(target, f, &port, rec, deadline)
			} else {
				d := net.Dialer{KeepAlive: noKeepAlive}
				err = oneConn(ctx, &d, target, deadline, f.closer == closerClient)
			}
			rec.add(time.Since(due), err)
		})
	}
	wg.Wait()
	res := rec.result(mode, time.Since(start))
	res.Rate = f.rate
	return res
}

// reuseConn connects from the next free port of the set. A port the
// client's own kernel still holds (EADDRINUSE/EADDRNOTAVAIL) is counted in
// PortBusy and the next one tried.
func reuseConn(target netip.AddrPort, f loadFlags, port *atomic.Int64, rec *recorder, deadline time.Time) error {
	for range f.ports {
		p := f.basePort + int(port.Add(1)%int64(f.ports))
		d := net.Dialer{
			LocalAddr: &net.TCPAddr{Port: p},
			Deadline:  deadline,
			KeepAlive: noKeepAlive,
			Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				})
				return errors.Join(err, serr)
			},
		}
		c, err := d.Dial("tcp", target.String())
		if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL) {
			rec.portBusy.Add(1)
			continue
		}
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return err
			}
			return fmt.Errorf("%w: %w", errConnect, err)
		}
		err = exchange(c, deadline, f.closer == closerClient)
		c.Close()
		return err
	}
	return errNoPort
}

// cmdServe is the short-connection target: read the request, answer, and
// close first.
func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("tgbench serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "IP:port to listen on")
	closer := fs.String("closer", closerServer, "who closes first: server (after its answer) or client (the server closes on the client's EOF)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr, err := netip.ParseAddrPort(*listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	// tcp4 for an IPv4 address: Go's "tcp" on 0.0.0.0 opens a dual-stack
	// [::] socket, which the harness's readiness check (ss) does not
	// match.
	network := "tcp6"
	if addr.Addr().Is4() {
		network = "tcp4"
	}
	lc := net.ListenConfig{KeepAlive: noKeepAlive}
	ln, err := lc.Listen(ctx, network, *listen)
	if err != nil {
		return err
	}
	if *closer != closerServer && *closer != closerClient {
		return fmt.Errorf("-closer %q: want %s or %s", *closer, closerServer, closerClient)
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	return serve(ctx, ln, *closer == closerClient)
}

// serve answers each connection of ln until ctx ends.
func serve(ctx context.Context, ln net.Listener, clientCloses bool) error {
	var resp [respSize]byte
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			time.Sleep(5 * time.Millisecond) // EMFILE and the like
			continue
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			var req [reqSize]byte
			if _, err := io.ReadFull(c, req[:]); err != nil {
				return
			}
			if _, err := c.Write(resp[:]); err != nil || !clientCloses {
				return
			}
			// The client closes first: wait for its EOF (a request
			// has no more bytes), then close.
			var eof [1]byte
			c.Read(eof[:])
		}()
	}
}
