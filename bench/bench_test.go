package bench_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/bench"
	"github.com/torgate/torgate/bench/socksd"
	"github.com/torgate/torgate/socks"
)

// The in-process benchmarks join a workstation (bench.Workstation, a
// gVisor stack, or bench.RawPeer, no stack at all) to a torgate.Router
// through an in-memory TUN (bench.Link), with a socksd server on loopback
// as the upstream. Both ends share this process and its two cores, so
// throughput figures include the workstation's own TCP work; the RawPeer
// benchmarks isolate the router's cost. None of them asserts timing.

var (
	wsAddr = netip.MustParseAddr("10.152.152.11")
	// dstAddr is any address: socksd serves sinks by port and dials
	// nothing.
	dstAddr   = netip.MustParseAddr("198.18.1.1")
	dstEcho   = netip.AddrPortFrom(dstAddr, socksd.PortEcho)
	dstCount  = netip.AddrPortFrom(dstAddr, socksd.PortCount)
	dstSource = netip.AddrPortFrom(dstAddr, socksd.PortSource)
	dstPark   = netip.AddrPortFrom(dstAddr, 80)
)

const mtu = 1500

// newRouter starts socksd on loopback and a router on dev; both are closed
// in b.Cleanup (the router closes dev).
func newRouter(b testing.TB, cfg torgate.Config) *torgate.Router {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := socksd.New(socksd.Config{Listener: ln})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	d, err := socks.NewDialer("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	cfg.Upstream = d.Dial
	if cfg.MTU == 0 {
		cfg.MTU = mtu
	}
	r, err := torgate.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	r.Start()
	b.Cleanup(func() { r.Close() })
	return r
}

// newWorkstation returns a workstation joined to a fresh router.
func newWorkstation(b *testing.B) (*bench.Workstation, *torgate.Router) {
	b.Helper()
	ws, err := bench.NewWorkstation(wsAddr, mtu)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ws.Close)
	r := newRouter(b, torgate.Config{Device: ws.Link()})
	return ws, r
}

func dial(b *testing.B, ws *bench.Workstation, dst netip.AddrPort) net.Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ws.Dial(ctx, dst)
	if err != nil {
		b.Fatalf("dial %v: %v", dst, err)
	}
	return c
}

// chunk is what one op of a bulk benchmark moves.
const chunk = 64 << 10

var zeros [chunk]byte

// packetMeter turns router counters and allocation counts into
// per-second and per-packet figures.
type packetMeter struct {
	r       *torgate.Router
	start   time.Time
	pkts    uint64
	mallocs uint64
}

func startMeter(r *torgate.Router) *packetMeter {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := r.Stats()
	return &packetMeter{r: r, start: time.Now(), pkts: st.PacketsIn + st.PacketsOut, mallocs: ms.Mallocs}
}

// report adds pkts/s (router packets, both directions) and allocs/pkt
// (every allocation in the process, workstation stack included, per
// router packet).
func (m *packetMeter) report(b *testing.B) {
	elapsed := time.Since(m.start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := m.r.Stats()
	pkts := st.PacketsIn + st.PacketsOut - m.pkts
	b.ReportMetric(float64(pkts)/elapsed.Seconds(), "pkts/s")
	if pkts > 0 {
		b.ReportMetric(float64(ms.Mallocs-m.mallocs)/float64(pkts), "allocs/pkt")
	}
}

// BenchmarkBulk moves b.N chunks of 64 KiB from the workstation to the
// upstream (up) or back (down), over 1 or 8 flows. The loop counts b.N
// itself rather than using b.Loop because the final drain, until the sink
// has confirmed every byte, must be timed.
func BenchmarkBulk(b *testing.B) {
	for _, dir := range []string{"up", "down"} {
		for _, flows := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/flows=%d", dir, flows), func(b *testing.B) {
				ws, r := newWorkstation(b)
				dst := dstCount
				if dir == "down" {
					dst = dstSource
				}
				conns := make([]net.Conn, flows)
				for i := range conns {
					conns[i] = dial(b, ws, dst)
					defer conns[i].Close()
				}
				b.SetBytes(chunk)
				b.ReportAllocs()
				b.ResetTimer()
				m := startMeter(r)
				var wg sync.WaitGroup
				errs := make(chan error, flows)
				for i, c := range conns {
					n := b.N / flows
					if i < b.N%flows {
						n++
					}
					wg.Go(func() {
						var err error
						if dir == "up" {
							err = upload(c, n)
						} else {
							err = download(c, n)
						}
						if err != nil {
							errs <- err
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				m.report(b)
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			})
		}
	}
}

// upload writes n chunks, half-closes and waits for the count sink to
// confirm every byte.
func upload(c net.Conn, n int) error {
	for range n {
		if _, err := c.Write(zeros[:]); err != nil {
			return fmt.Errorf("upload write: %w", err)
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return err
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("upload confirm: %w", err)
	}
	if want := uint64(n) * chunk; binary.BigEndian.Uint64(got[:]) != want {
		return fmt.Errorf("upload: sink counted %d bytes, sent %d", binary.BigEndian.Uint64(got[:]), want)
	}
	return nil
}

// download asks the source sink for n chunks and reads them to EOF.
func download(c net.Conn, n int) error {
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], uint64(n)*chunk)
	if _, err := c.Write(req[:]); err != nil {
		return err
	}
	buf := make([]byte, chunk)
	var total int64
	for {
		k, err := c.Read(buf)
		total += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("download read: %w", err)
		}
	}
	if total != int64(n)*chunk {
		return fmt.Errorf("download: got %d bytes, want %d", total, int64(n)*chunk)
	}
	return nil
}

// BenchmarkFlows is the short-connection rate, closed loop: 16 workers
// each connect, send 128 bytes, read the 128-byte echo and close. One op
// is one flow.
func BenchmarkFlows(b *testing.B) {
	ws, r := newWorkstation(b)
	const workers = 16
	var next atomic.Int64
	var failed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var msg [128]byte
			for next.Add(1) <= int64(b.N) {
				if err := shortFlow(ws, msg[:]); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "flows/s")
	b.ReportMetric(float64(failed.Load()), "failures")
	_ = r
	if failed.Load() > 0 {
		b.Errorf("%d of %d flows failed", failed.Load(), b.N)
	}
}

func shortFlow(ws *bench.Workstation, msg []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ws.Dial(ctx, dstEcho)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err = io.ReadFull(c, msg)
	return err
}

// BenchmarkDNS is UDP DNS answers per second: 16 workers, each with its own
// socket, ask A questions of any address on port 53; torgate answers from
// its automap table without Tor. One op is one answer.
// Allocations count both ends (the workstations' gVisor too): 25 per
// answer, ~1.3 KB, on 2026-12-04 once dns served port 53 itself from a
// pooled buffer (28, ~2 KB, when netstack copied each query).
func BenchmarkDNS(b *testing.B) {
	ws, _ := newWorkstation(b)
	const workers = 16
	var next, lost atomic.Int64
	conns := make([]net.Conn, workers)
	for i := range conns {
		c, err := ws.DialUDP(netip.AddrPortFrom(dstAddr, 53))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w, c := range conns {
		wg.Go(func() {
			q := query(fmt.Sprintf("host%d.example.com.", w), uint16(w))
			resp := make([]byte, 512)
			for next.Add(1) <= int64(b.N) {
				if _, err := c.Write(q); err != nil {
					lost.Add(1)
					continue
				}
				c.SetReadDeadline(time.Now().Add(time.Second))
				if n, err := c.Read(resp); err != nil || n < 12 || resp[0] != q[0] || resp[1] != q[1] {
					lost.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	elapsed := time.Since(start)
	b.ReportMetric(float64(int64(b.N)-lost.Load())/elapsed.Seconds(), "answers/s")
	b.ReportMetric(float64(lost.Load()), "lost")
}

func query(name string, id uint16) []byte {
	bld := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	bld.StartQuestions()
	bld.Question(dnsmessage.Question{
		Name:  dnsmessage.MustNewName(name),
		Type:  dnsmessage.TypeA,
		Class: dnsmessage.ClassINET,
	})
	msg, err := bld.Finish()
	if err != nil {
		panic(err)
	}
	return msg
}

// newRawPeer returns a RawPeer joined to a fresh router.
func newRawPeer(b testing.TB) (*bench.RawPeer, *torgate.Router) {
	b.Helper()
	p, link := bench.NewRawPeer(wsAddr, mtu, mtu-40)
	r := newRouter(b, torgate.Config{Device: link})
	return p, r
}

// warmup is how many packets a RawPeer benchmark forwards before it
// measures: enough for gVisor's and the relay's pools to hold their working
// set, so that what is left is the steady state.
const warmup = 20000

// BenchmarkForwardPacket counts the router's cost per forwarded data
// packet, with no workstation stack in the process: one op is one
// 1460-byte segment, from a RawPeer through the router to the count sink
// (up), or from the source sink through the router to the RawPeer (down).
// allocs/op is then the router's (and the sink's, which allocates nothing
// per read) allocations per packet, ACKs included.
func BenchmarkForwardPacket(b *testing.B) {
	b.Run("up", func(b *testing.B) {
		p, r := newRawPeer(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		f, err := p.Open(ctx, dstCount)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Reset()
		payload := make([]byte, mtu-40)
		// Warm up: let pools, windows and the relay reach steady state.
		for range warmup {
			if err := f.Write(ctx, payload); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		m := startMeter(r)
		for b.Loop() {
			if err := f.Write(ctx, payload); err != nil {
				b.Fatal(err)
			}
		}
		m.report(b)
	})
	b.Run("down", func(b *testing.B) {
		p, r := newRawPeer(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		f, err := p.Open(ctx, dstSource)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Reset()
		f.Count()
		var req [8]byte
		binary.BigEndian.PutUint64(req[:], 1<<62) // endless
		if err := f.Write(ctx, req[:]); err != nil {
			b.Fatal(err)
		}
		segs := f.Segments()
		timer := time.NewTimer(time.Hour)
		wait := func() {
			timer.Reset(10 * time.Second)
			select {
			case <-segs:
			case <-timer.C:
				b.Fatal("no data from the router for 10s")
			}
		}
		for range warmup {
			wait()
		}
		b.SetBytes(mtu - 40)
		b.ReportAllocs()
		m := startMeter(r)
		for b.Loop() {
			wait()
		}
		m.report(b)
	})
}

// BenchmarkIdleFlows opens 1,000 flows from a RawPeer to a parking sink
// (which holds its end with no goroutine and no buffer) and reports how
// much Go heap and goroutine stack they hold, after a GC: the router's
// memory per 1,000 idle open flows (plus the sink's few hundred bytes of
// socket bookkeeping per connection; the peer's own flow records are made
// before the measurement, by Reserve).
func BenchmarkIdleFlows(b *testing.B) {
	const n = 1000
	for b.Loop() {
		b.StopTimer()
		p, r := newRawPeer(b)
		p.Reserve(n)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		before := memInUse()
		goBefore := runtime.NumGoroutine()
		b.StartTimer()
		flows := make([]*bench.RawFlow, 0, n)
		for range n {
			f, err := p.Open(ctx, dstPark)
			if err != nil {
				b.Fatal(err)
			}
			flows = append(flows, f)
		}
		b.StopTimer()
		// Let the relays block in their reads.
		time.Sleep(100 * time.Millisecond)
		after := memInUse()
		b.ReportMetric(float64(after-before)/(1<<20), "MiB/1000flows")
		b.ReportMetric(float64(runtime.NumGoroutine()-goBefore)/n, "goroutines/flow")
		for _, f := range flows {
			f.Reset()
		}
		cancel()
		r.Close()
		b.StartTimer()
	}
}

// memInUse is live heap objects plus goroutine stacks in use, after a GC.
// HeapAlloc rather than HeapInuse: HeapInuse counts whole spans, so it
// depends on how full earlier iterations left them (2-10 MiB for the same
// 1,000 flows), while live bytes do not.
func memInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}
