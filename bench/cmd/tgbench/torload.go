//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The client side of "tgbench tor": "tgbench torload", run by the harness
// inside a workstation namespace, fetches from the testnet's web server by
// name through whatever the namespace's route leads to (a TransPort
// REDIRECT or torgate's TUN), and prints one TorLoadResult as JSON.
//
// With -src A,B,... it plays several workstations at once: each address
// runs the whole load of the mode (its own lookups, workers or streams),
// every socket bound to it, and the result is the aggregate (fetches and
// bytes summed, latencies over all of them).

// Modes of tgbench torload.
const (
	torModeTTFB  = "ttfb"  // sequential fetches of "/": lookup, connect, request, first byte
	torModeConns = "conns" // closed loop of short fetches of "/", a few workers
	torModeDown  = "down"  // bulk download from /bytes, -streams at once
	torModeUp    = "up"    // bulk upload to POST /sink, -streams at once
)

// TorLoadResult is what one torload run measured.
type TorLoadResult struct {
	Mode string `json:"mode"`
	// OK and Failures count fetches (ttfb, conns) or streams (down, up);
	// Kinds names the failures' causes.
	OK       int            `json:"ok"`
	Failures int            `json:"failures"`
	Kinds    map[string]int `json:"failure_kinds,omitempty"`
	// TTFB: time from the start of the name lookup to the first byte of
	// the answer, median and p99, in ms.
	P50ms float64 `json:"p50_ms,omitempty"`
	P99ms float64 `json:"p99_ms,omitempty"`
	// FetchP50ms is the ttfb mode's median time from the lookup to the
	// end of the answer (the server's close seen), in ms.
	FetchP50ms float64 `json:"fetch_p50_ms,omitempty"`
	// ConnsPerSec is the conns mode's rate of completed fetches.
	ConnsPerSec float64 `json:"conns_per_s,omitempty"`
	// MBps is the bulk modes' rate over the measured window (from the
	// moment every stream moved its first byte), in MB/s (10^6).
	MBps float64 `json:"mb_per_s,omitempty"`
	// Bytes is every byte moved, window or not (the CPU per MB divides
	// by it).
	Bytes int64 `json:"bytes"`
	// Seconds is the whole run's wall time.
	Seconds float64 `json:"seconds"`
	// Sources is how many workstations (source addresses) ran the load.
	Sources int `json:"sources"`
	// clientCPU is torload's own CPU seconds, which the harness reads
	// from its rusage.
	clientCPU float64
}

type torLoadFlags struct {
	mode    string
	name    string
	port    int
	dns     string
	n       int
	workers int
	streams int
	dur     time.Duration
	upBytes int64
	timeout time.Duration
	// srcs are the workstations' source addresses; one invalid Addr
	// (no -src) leaves the choice to the kernel.
	srcs []netip.Addr
}

func cmdTorLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tgbench torload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f torLoadFlags
	fs.StringVar(&f.mode, "mode", torModeTTFB, "ttfb, conns, down or up")
	fs.StringVar(&f.name, "name", "", "the web server's name (looked up for every fetch in ttfb, once per worker otherwise)")
	fs.IntVar(&f.port, "port", 18080, "the web server's port")
	fs.StringVar(&f.dns, "dns", "", "DNS server, IP:port (through the path under test)")
	fs.IntVar(&f.n, "n", 20, "ttfb: fetches")
	fs.IntVar(&f.workers, "workers", 4, "conns: workers")
	fs.IntVar(&f.streams, "streams", 1, "down, up: concurrent streams")
	fs.DurationVar(&f.dur, "time", 5*time.Second, "conns, down: duration")
	fs.Int64Var(&f.upBytes, "up-bytes", 16<<20, "up: bytes per stream")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "limit on one fetch")
	srcs := fs.String("src", "", "source addresses, comma-separated: one workstation each, every one running the whole load at once (default: one, the kernel's choice)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := netip.ParseAddrPort(f.dns); err != nil || f.name == "" {
		return errors.New("torload: -name and -dns IP:port are required")
	}
	f.srcs = []netip.Addr{{}}
	if *srcs != "" {
		f.srcs = nil
		for a := range strings.SplitSeq(*srcs, ",") {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return fmt.Errorf("torload: -src: %w", err)
			}
			f.srcs = append(f.srcs, ip)
		}
	}
	var res TorLoadResult
	start := time.Now()
	switch f.mode {
	case torModeTTFB:
		res = torTTFB(ctx, f)
	case torModeConns:
		res = torConns(ctx, f)
	case torModeDown, torModeUp:
		res = torBulk(ctx, f)
	default:
		return fmt.Errorf("torload: unknown -mode %q", f.mode)
	}
	res.Mode = f.mode
	res.Seconds = time.Since(start).Seconds()
	res.Sources = len(f.srcs)
	return json.NewEncoder(stdout).Encode(res)
}

// dialer binds to src unless it is the invalid Addr; network is "tcp" or
// "udp" (the resolver's).
func dialer(network string, src netip.Addr) *net.Dialer {
	d := &net.Dialer{}
	switch {
	case !src.IsValid():
	case strings.HasPrefix(network, "udp"):
		d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	default:
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	return d
}

// resolver sends every query to f.dns from src, whatever resolv.conf says.
func (f torLoadFlags) resolver(src netip.Addr) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dialer(network, src).DialContext(ctx, network, f.dns)
	}}
}

// lookup resolves f.name to one IPv4 address, asking from src.
func (f torLoadFlags) lookup(ctx context.Context, src netip.Addr) (netip.AddrPort, error) {
	ips, err := f.resolver(src).LookupNetIP(ctx, "ip4", f.name)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("lookup: %w", err)
	}
	return netip.AddrPortFrom(ips[0], uint16(f.port)), nil
}

// fetchRoot sends GET / to target from src and reads the answer to EOF;
// ttfb is the time from start to its first byte.
func (f torLoadFlags) fetchRoot(ctx context.Context, src netip.Addr, target netip.AddrPort, start time.Time) (ttfb time.Duration, n int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c, err := dialer("tcp", src).DialContext(ctx, "tcp", target.String())
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", f.name); err != nil {
		return 0, 0, err
	}
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		return 0, 0, err
	}
	ttfb = time.Since(start)
	n, err = io.Copy(io.Discard, c)
	if err == nil && n < int64(len("HTTP/1.1 200 OK")) {
		err = errors.New("short answer")
	}
	return ttfb, n + 1, err
}

// torTTFB runs f.n sequential fetches from each source, the sources at
// once.
func torTTFB(ctx context.Context, f torLoadFlags) TorLoadResult {
	rec, whole := newRecorder(), newRecorder()
	var bytes atomic.Int64
	var wg sync.WaitGroup
	for _, src := range f.srcs {
		wg.Go(func() {
			for range f.n {
				if ctx.Err() != nil {
					break
				}
				start := time.Now()
				target, err := f.lookup(ctx, src)
				var ttfb time.Duration
				var n int64
				if err == nil {
					ttfb, n, err = f.fetchRoot(ctx, src, target, start)
				}
				bytes.Add(n)
				rec.add(ttfb, err)
				whole.add(time.Since(start), err)
			}
		})
	}
	wg.Wait()
	var res TorLoadResult
	res.Bytes = bytes.Load()
	fillCounts(&res, rec)
	r := rec.result(torModeTTFB, time.Second)
	res.P50ms, res.P99ms = r.P50, r.P99
	res.FetchP50ms = whole.result(torModeTTFB, time.Second).P50
	return res
}

func fillCounts(res *TorLoadResult, rec *recorder) {
	res.OK = len(rec.lat)
	for k, v := range rec.kinds {
		if res.Kinds == nil {
			res.Kinds = make(map[string]int)
		}
		res.Kinds[k] += v
		res.Failures += v
	}
}

// torConns runs f.workers closed-loop workers per source.
func torConns(ctx context.Context, f torLoadFlags) TorLoadResult {
	rec := newRecorder()
	var bytes atomic.Int64
	deadline := time.Now().Add(f.dur)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range f.workers * len(f.srcs) {
		src := f.srcs[i%len(f.srcs)]
		wg.Go(func() {
			target, err := f.lookup(ctx, src)
			if err != nil {
				rec.add(0, err)
				return
			}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				_, n, err := f.fetchRoot(ctx, src, target, t0)
				bytes.Add(n)
				rec.add(time.Since(t0), err)
			}
		})
	}
	wg.Wait()
	var res TorLoadResult
	fillCounts(&res, rec)
	res.Bytes = bytes.Load()
	res.ConnsPerSec = float64(res.OK) / time.Since(start).Seconds()
	return res
}

// bulkBytes is the size each bulk stream asks for: more than any stream
// moves in a run, so that the window ends by the clock, not by EOF.
const bulkBytes = 1 << 30

// torBulk runs f.streams downloads (or uploads) per source, all at once
// (so the window opens when every source's streams have their first
// byte). A download's
// rate is taken over f.dur from the moment every stream has its first
// byte, plus a quarter of f.dur (circuit set-up and slow start are not
// throughput). An upload moves f.upBytes per stream, and its rate is
// what the server counted over the time from the start of the writes to
// the last stream's answer, which Tor's queues cannot inflate.
func torBulk(ctx context.Context, f torLoadFlags) TorLoadResult {
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	streams := f.streams * len(f.srcs)
	var moved atomic.Int64
	var started sync.WaitGroup
	started.Add(streams)
	errs := make(chan error, streams)
	var conns sync.Map
	var wg sync.WaitGroup
	for i := range streams {
		src := f.srcs[i%len(f.srcs)]
		wg.Go(func() {
			errs <- f.bulkStream(stopCtx, src, &moved, started.Done, func(c net.Conn) { conns.Store(i, c) })
		})
	}
	ready := make(chan struct{})
	go func() { started.Wait(); close(ready) }()
	var res TorLoadResult
	windowed := false
	select {
	case <-ready:
		windowed = true
		t0 := time.Now()
		if f.mode == torModeUp {
			wg.Wait()
			res.MBps = float64(moved.Load()) / time.Since(t0).Seconds() / 1e6
			break
		}
		select {
		case <-time.After(f.dur / 4):
		case <-ctx.Done():
		}
		b0, t0 := moved.Load(), time.Now()
		select {
		case <-time.After(f.dur):
		case <-ctx.Done():
		}
		res.MBps = float64(moved.Load()-b0) / time.Since(t0).Seconds() / 1e6
	case <-time.After(f.timeout):
	}
	stop()
	if f.mode == torModeDown || !windowed {
		conns.Range(func(_, c any) bool { c.(net.Conn).Close(); return true })
	}
	wg.Wait()
	close(errs)
	rec := newRecorder()
	for err := range errs {
		if err != nil && f.mode == torModeDown && windowed {
			err = nil // closed by us at the end of the window
		}
		rec.add(0, err)
	}
	fillCounts(&res, rec)
	res.Bytes = moved.Load()
	if !windowed {
		res.OK, res.Failures, res.Kinds = 0, streams, map[string]int{"no_start": streams}
	}
	return res
}

// bulkStream moves bytes on one connection from src until ctx ends,
// adding them to moved; first is called once the first byte moved (or on
// failure).
func (f torLoadFlags) bulkStream(ctx context.Context, src netip.Addr, moved *atomic.Int64, first func(), keep func(net.Conn)) error {
	var once sync.Once
	done := func() { once.Do(first) }
	defer done()
	target, err := f.lookup(ctx, src)
	if err != nil {
		return err
	}
	dctx, dcancel := context.WithTimeout(ctx, f.timeout)
	c, err := dialer("tcp", src).DialContext(dctx, "tcp", target.String())
	dcancel()
	if err != nil {
		return err
	}
	keep(c)
	defer c.Close()
	buf := make([]byte, 64<<10)
	if f.mode == torModeDown {
		if _, err := fmt.Fprintf(c, "GET /bytes?n=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", bulkBytes, f.name); err != nil {
			return err
		}
		br := bufio.NewReaderSize(c, 64<<10)
		status, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.Contains(status, " 200 ") {
			return fmt.Errorf("status %q", strings.TrimSpace(status))
		}
		moved.Add(int64(len(status)))
		done()
		for {
			n, err := br.Read(buf)
			moved.Add(int64(n))
			if err != nil {
				return err
			}
		}
	}
	// Upload: f.upBytes, then the server's count of what it received.
	// Only that count is added to moved, and the rate is taken to the
	// answer: Tor reads from its edge connections as fast as they send
	// and queues the cells (on loopback, over 100 MB/s into its queues
	// against a few MB/s through the circuit), so bytes a socket accepted
	// measure buffers, and a window measured by the clock would leave
	// seconds of queued data behind it.
	if _, err := fmt.Fprintf(c, "POST /sink HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", f.name, f.upBytes); err != nil {
		return err
	}
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	done()
	c.SetDeadline(time.Now().Add(f.timeout + 2*time.Minute))
	for left := f.upBytes; left > 0; {
		n, err := c.Write(buf[:min(left, int64(len(buf)))])
		left -= int64(n)
		if err != nil {
			return err
		}
	}
	answer, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	_, body, _ := strings.Cut(string(answer), "\r\n\r\n")
	n, err := strconv.ParseInt(strings.TrimSpace(body), 10, 64)
	if err != nil {
		return fmt.Errorf("sink answer %q: %w", answer, err)
	}
	if n != f.upBytes {
		return fmt.Errorf("sink counted %d of %d bytes", n, f.upBytes)
	}
	moved.Add(n)
	return nil
}
