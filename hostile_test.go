package torgate_test

// Hostile-workstation tests (issue 11): one workstation, or a crowd of
// spoofed ones, tries to take every shared limit; the others must still be
// served. Every assertion is a count ("B's 20 connections all succeed"),
// never a duration; waits are bounded generously for a loaded 2-core box.
// Latencies are logged for the record, not asserted.

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/bench"
	"github.com/torgate/torgate/bench/socksd"
	"github.com/torgate/torgate/internal/nstest"
	"github.com/torgate/torgate/internal/wstest"
	"github.com/torgate/torgate/netstack"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

var (
	// hostile is a source no simulated workstation owns: the router's
	// SYN-ACKs to it go nowhere (the hub counts them as stray), as for a
	// spoofed source or an attacker that never answers.
	hostile = netip.MustParseAddr("10.152.152.99")
	gw4     = netip.MustParseAddr("10.152.152.10")
	hangDst = netip.MustParseAddr("192.0.2.66")
)

// echoUnlessHang serves CONNECT with an echo, except to hangDst, which
// never answers.
func echoUnlessHang(req sockstest.Request) (socks.Reply, net.Conn) {
	if req.Dst.IP == hangDst {
		return sockstest.Hang(req)
	}
	return sockstest.Echo(req)
}

// connectMany opens n echo connections from src one after the other,
// each with a 20 s bound, checks each with a 1 KiB echo, and returns the
// failures and the connect latencies.
func connectMany(t *testing.T, f *fixture, src netip.Addr, n int) (failures []error, lat []time.Duration) {
	t.Helper()
	for i := range n {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		start := time.Now()
		c, err := f.ws[src].Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(dst4.Addr(), 7))
		cancel()
		if err != nil {
			failures = append(failures, err)
			continue
		}
		lat = append(lat, time.Since(start))
		if err := transfer(c, 1024, uint64(i)); err != nil {
			failures = append(failures, err)
		}
		c.Close()
	}
	return failures, lat
}

func latencySummary(lat []time.Duration) (p50, max time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// flood injects SYNs from srcs (round robin) to dst on ever-changing
// ports, as fast as the router reads them, until stop is closed. It
// returns how many it sent.
func flood(f *fixture, srcs []netip.Addr, dst netip.Addr, stop <-chan struct{}) *atomic.Int64 {
	var sent atomic.Int64
	go func() {
		port := uint16(1024)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			port++
			if port == 0 {
				port = 1024
			}
			f.hub.Inject(synPacket(srcs[i%len(srcs)], dst, port, 7))
			sent.Add(1)
		}
	}()
	return &sent
}

// TestSYNFloodUnansweredHandshakes: one source sends SYNs at line rate and
// never answers the SYN-ACKs (measured on 2026-12-02 before the fix: its
// requests held all 1,024 pending handshakes for ~120 s). Its share caps
// it at MaxInFlightPerSource, and another source's 20 connections all
// succeed during the flood.
func TestSYNFloodUnansweredHandshakes(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo, PipelineWindow: -1}, nil, ws2)
	stop := make(chan struct{})
	sent := flood(f, []netip.Addr{hostile}, dst4.Addr(), stop)
	defer close(stop)
	// Let the flood fill whatever it can.
	waitFor(t, func() bool { return sent.Load() > 5000 })
	failures, lat := connectMany(t, f, ws2, 20)
	p50, mx := latencySummary(lat)
	held, total := f.r.Stack().Pending(hostile)
	t.Logf("flood: %d SYNs sent; hostile holds %d of %d pending; other source: %d/20 connected, connect p50 %v max %v",
		sent.Load(), held, total, len(lat), p50, mx)
	if len(failures) > 0 {
		t.Fatalf("other source under a SYN flood: %d of 20 connections failed, first: %v", len(failures), failures[0])
	}
	if held > 128 {
		t.Fatalf("flooding source holds %d pending handshakes, over its share of 128", held)
	}
	if n := f.r.Stack().Stats().Drops[netstack.ReasonShare].Load(); n == 0 {
		t.Fatal("no SYN counted as over its source's share")
	}
}

// TestSpoofedSYNFlood: SYNs from a thousand spoofed addresses of the LAN
// prefix take at most the bulk of the pending pool; a workstation that has
// completed a handshake before (proven) still gets its 20 connections.
func TestSpoofedSYNFlood(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo, PipelineWindow: -1}, nil, ws2)
	if fails, _ := connectMany(t, f, ws2, 1); len(fails) > 0 {
		t.Fatalf("before the flood: %v", fails[0])
	}
	var spoofed []netip.Addr
	for i := range 1000 {
		spoofed = append(spoofed, netip.AddrFrom4([4]byte{10, 152, byte(153 + i/250), byte(1 + i%250)}))
	}
	stop := make(chan struct{})
	sent := flood(f, spoofed, dst4.Addr(), stop)
	defer close(stop)
	waitFor(t, func() bool { return sent.Load() > 5000 })
	failures, lat := connectMany(t, f, ws2, 20)
	p50, mx := latencySummary(lat)
	_, total := f.r.Stack().Pending(ws2)
	t.Logf("spoofed flood from %d addresses: %d SYNs; pending %d; other source: %d/20, p50 %v max %v",
		len(spoofed), sent.Load(), total, len(lat), p50, mx)
	if len(failures) > 0 {
		t.Fatalf("proven source under a spoofed SYN flood: %d of 20 failed, first: %v", len(failures), failures[0])
	}
}

// TestHandshakeTimeoutFreesSlots: a SYN whose SYN-ACK is never answered
// holds its pending slot for handshakeTimeout (8 s), not gVisor's ~127 s.
func TestHandshakeTimeoutFreesSlots(t *testing.T) {
	t.Parallel() // waits out handshakeTimeout (8 s) on the clock: overlap it with the other waiting tests
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo, PipelineWindow: -1}, nil, ws2)
	for i := range 50 {
		f.hub.Inject(synPacket(hostile, dst4.Addr(), uint16(3000+i), 7))
	}
	waitFor(t, func() bool { h, _ := f.r.Stack().Pending(hostile); return h == 50 })
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for {
		h, _ := f.r.Stack().Pending(hostile)
		if h == 0 {
			t.Logf("50 unanswered handshakes released after %v", time.Since(start).Round(time.Second))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d unanswered handshakes still pending after 60 s (gVisor alone holds them ~127 s)", h)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHangingDialsFromManySources: nine workstations each hold their full
// 128 dials against a hanging upstream (before the fix: 9 x 128 took
// every pending handshake and blocked everyone for 88 s). The pool's
// reserve keeps a tenth workstation's 20 connections going.
func TestHangingDialsFromManySources(t *testing.T) {
	var hostiles []netip.Addr
	for i := range 9 {
		hostiles = append(hostiles, netip.AddrFrom4([4]byte{10, 152, 152, byte(50 + i)}))
	}
	f := newFixture(t, sockstest.Config{Connect: echoUnlessHang, PipelineWindow: -1}, nil, append(slices.Clone(hostiles), ws2)...)
	// Each hostile workstation proves itself first, as a real one would.
	for _, h := range append(slices.Clone(hostiles), ws2) {
		if fails, _ := connectMany(t, f, h, 1); len(fails) > 0 {
			t.Fatalf("%v before the attack: %v", h, fails[0])
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, h := range hostiles {
		for i := range 128 {
			wg.Go(func() {
				c, err := f.ws[h].Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(hangDst, uint16(1000+i)))
				if err == nil {
					c.Close()
				}
			})
		}
	}
	// Wait until the hanging dials reached the upstream: before that, the
	// other source would meet no contention and the test prove nothing.
	waitCond(t, 30*time.Second, func() bool { return f.socks.Active() >= 700 })
	failures, lat := connectMany(t, f, ws2, 20)
	p50, mx := latencySummary(lat)
	_, total := f.r.Stack().Pending(ws2)
	t.Logf("9 x 128 hanging dials: pending %d; other source %d/20, p50 %v max %v", total, len(lat), p50, mx)
	if len(failures) > 0 {
		t.Fatalf("other source behind 9 x 128 hanging dials: %d of 20 failed, first: %v", len(failures), failures[0])
	}
}

// dnsQuery packs an A query for name with id.
func dnsQuery(t *testing.T, id uint16, name string) []byte {
	t.Helper()
	b, err := (&dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dnsOK asks one query over UDP or TCP from src and reports whether an
// answer came.
func dnsOK(f *fixture, t *testing.T, src netip.Addr, tcp bool, id uint16) error {
	ap := netip.AddrPortFrom(gw4, 53)
	q := dnsQuery(t, id, "ok.example.")
	var c net.Conn
	var err error
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if tcp {
		c, err = f.ws[src].Net.DialContextTCPAddrPort(ctx, ap)
		q = append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)
	} else {
		c, err = f.ws[src].Net.DialUDPAddrPort(netip.AddrPort{}, ap)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	for try := range 3 { // UDP: a client retries
		if try > 0 && tcp {
			break
		}
		if _, err = c.Write(q); err != nil {
			return err
		}
		if !tcp {
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
		}
		var n int
		if n, err = c.Read(buf); err == nil && n >= 12 {
			return nil
		}
	}
	return err
}

// TestTCP53HoldDoesNotStarveDNS: one workstation opens 256 TCP/53
// connections and keeps them busy (before the fix they took all 256 DNS
// workers and every other workstation's DNS, UDP and TCP, failed for
// 48 s). It gets its share of the TCP/53 pool; another workstation's 20
// UDP and 20 TCP queries are all answered.
func TestTCP53HoldDoesNotStarveDNS(t *testing.T) {
	bad := netip.MustParseAddr("10.152.152.50")
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo, PipelineWindow: -1}, nil, bad, ws2)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	refused := 0
	for range 256 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		c, err := f.ws[bad].Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(gw4, 53))
		cancel()
		if err != nil {
			refused++
			continue
		}
		held = append(held, c)
	}
	// Keep each held connection busy with a query every 5 s, as the
	// attack did every 8 s, so no idle timeout frees it.
	stop := make(chan struct{})
	defer close(stop)
	q := dnsQuery(t, 1, "held.example.")
	q = append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)
	for _, c := range held {
		go func() {
			buf := make([]byte, 512)
			for {
				c.Write(q)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				c.Read(buf)
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Second):
				}
			}
		}()
	}
	var fails []error
	for i := range 20 {
		for _, tcp := range []bool{false, true} {
			if err := dnsOK(f, t, ws2, tcp, uint16(i)); err != nil {
				fails = append(fails, err)
			}
		}
	}
	t.Logf("hostile holds %d TCP/53 connections (%d refused); other source: %d of 40 queries failed", len(held), refused, len(fails))
	if len(fails) > 0 {
		t.Fatalf("other workstation's DNS failed while one held TCP/53 connections: %d of 40, first: %v", len(fails), fails[0])
	}
	if len(held) > 16 {
		t.Fatalf("one source holds %d TCP/53 connections, over its share of 16", len(held))
	}
}

// TestPipelinedDNSBeyondLimit: 300 queries pipelined on one TCP/53
// connection. The first 256 are answered, then the connection ends with a
// FIN (EOF), not a RST that would discard answers already sent (before the
// fix: a RST).
func TestPipelinedDNSBeyondLimit(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo, PipelineWindow: -1}, nil, ws2)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := f.ws[ws2].Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(gw4, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var all []byte
	for i := range 300 {
		q := dnsQuery(t, uint16(i), "pipelined.example.")
		all = binary.BigEndian.AppendUint16(all, uint16(len(q)))
		all = append(all, q...)
	}
	go c.Write(all)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	answers := 0
	var hdr [2]byte
	buf := make([]byte, 65535)
	for {
		if _, err = io.ReadFull(c, hdr[:]); err != nil {
			break
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if _, err = io.ReadFull(c, buf[:n]); err != nil {
			break
		}
		if binary.BigEndian.Uint16(buf[:2]) != uint16(answers) {
			t.Fatalf("answer %d has id %d", answers, binary.BigEndian.Uint16(buf[:2]))
		}
		answers++
	}
	t.Logf("%d answers, then %v", answers, err)
	if answers != 256 {
		t.Fatalf("%d answers to 300 pipelined queries, want the first 256", answers)
	}
	if !errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection ended with %v after the limit, want EOF (FIN)", err)
	}
}

var _ = torgate.Config{}

// rawRouter joins a RawPeer at src to a router whose upstream is a socksd
// (park sink: idle flows cost the router only).
func rawRouter(t *testing.T, mod func(*torgate.Config)) (*bench.RawPeer, *torgate.Router) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := socksd.New(socksd.Config{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	d, err := socks.NewDialer("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, link := bench.NewRawPeer(ws1, 1500, 1460)
	cfg := torgate.Config{Device: link, Upstream: d.Dial, MaxFlows: 20000, MaxFlowsPerSource: 20000}
	if mod != nil {
		mod(&cfg)
	}
	r, err := torgate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { r.Close() })
	return p, r
}

func openParked(t *testing.T, p *bench.RawPeer, n int) []*bench.RawFlow {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	p.Reserve(n)
	flows := make([]*bench.RawFlow, 0, n)
	for i := range n {
		f, err := p.Open(ctx, netip.AddrPortFrom(dst4.Addr(), uint16(1000+i%50000)))
		if err != nil {
			t.Fatalf("open flow %d: %v", i, err)
		}
		flows = append(flows, f)
	}
	return flows
}

// TestMassCloseLosesNoFIN: the router ends 8,000 idle flows at once
// (EndAll, as when Tor restarts). Every flow's FIN reaches the
// workstation: none is dropped at the outbound queue (before the fix the
// 4,096-packet queue overflowed, and a dropped RST is never resent).
func TestMassCloseLosesNoFIN(t *testing.T) {
	// A stress test: 16,000 descriptors, 5-20 s, and on a loaded 2-core
	// machine the outbound queue can overflow (seen 2026-12-04 with a
	// load average of 10), so it is not part of the quick default run.
	nstest.Integration(t)
	if testing.Short() {
		t.Skip("10k flows")
	}
	// 8,000, not the 10,000 of the report: in one process each flow
	// costs two descriptors (the router's SOCKS socket and socksd's), and
	// CI machines allow 20,000.
	const n = 8000
	p, r := rawRouter(t, nil)
	t0 := time.Now()
	flows := openParked(t, p, n)
	t.Logf("opened %d in %v", n, time.Since(t0))
	st := r.Stack().Stats()
	before := st.OutboundDrops.Load()
	r.Tunnel().EndAll()
	ended := 0
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ended = 0
		for _, f := range flows {
			if f.Ended() {
				ended++
			}
		}
		if ended == n {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	drops := st.OutboundDrops.Load() - before
	t.Logf("EndAll of %d flows: %d saw FIN/RST, %d outbound drops", n, ended, drops)
	if drops > 0 {
		t.Fatalf("%d packets dropped at the outbound queue while ending %d flows", drops, n)
	}
	if ended != n {
		t.Fatalf("%d of %d flows never saw their end", n-ended, n)
	}
}

// metricSum is the sum over every label set of the counter or gauge
// called name (unprefixed) among cs.
func metricSum(t testing.TB, cs []prometheus.Collector, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cs...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return sum
	}
	// A vector with no label set yet gathers nothing: zero, if one of cs
	// describes the name at all.
	descs := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range cs {
			c.Describe(descs)
		}
		close(descs)
	}()
	found := false
	for d := range descs {
		found = found || strings.Contains(d.String(), `fqName: "`+name+`"`)
	}
	if !found {
		t.Fatalf("no metric %s among %d collectors", name, len(cs))
	}
	return 0
}

// rssBytes is this process's resident set (VmRSS).
func rssBytes(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestMemoryReturnedAfterPeak: 8,000 flows open and end; 10 s later
// (FreeMemory runs 5 s after the drop) the resident set has given back at
// least a quarter of what the peak added. Without it, RSS stayed near the
// peak (docs/limits.md: measured figures).
func TestMemoryReturnedAfterPeak(t *testing.T) {
	nstest.Integration(t) // 8k flows and 10 s of waiting (~49 s); RSS is the process's
	if testing.Short() {
		t.Skip("8k flows")
	}
	if raceEnabled {
		// It runs in CI's plain `go test ./...`; under -race the detector's
		// own memory (a 962 MiB base, measured 2026-12-02) swamps the 50 MiB
		// it measures.
		t.Skip("RSS is the race detector's under -race")
	}
	runtime.GC()
	debug.FreeOSMemory()
	base := rssBytes(t)
	p, r := rawRouter(t, func(c *torgate.Config) { c.KeepMemory = os.Getenv("TORGATE_KEEP_MEMORY") != "" })
	flows := openParked(t, p, 8000)
	peak := rssBytes(t)
	for _, f := range flows {
		f.Reset()
		time.Sleep(10 * time.Microsecond) // the link queue holds 4,096
	}
	flows = nil
	time.Sleep(10 * time.Second)
	after := rssBytes(t)
	mib := func(v int64) float64 { return float64(v) / (1 << 20) }
	t.Logf("RSS: base %.0f MiB, 8k flows %.0f MiB, 10 s after they ended %.0f MiB (keep memory: %v)",
		mib(base), mib(peak), mib(after), os.Getenv("TORGATE_KEEP_MEMORY") != "")
	active := metricSum(t, r.Tunnel().Metrics(), "flows_active")
	t.Logf("flows still active: %v; outbound drops %d", active, r.Stack().Stats().OutboundDrops.Load())
	// Measured 2026-12-02: the peak added ~81 MiB; 10 s after it ended
	// ~40 MiB of it remained with FreeMemory, all of it without.
	if after-base > (peak-base)*3/4 {
		t.Fatalf("RSS %.0f MiB 10 s after the peak ended: gave back less than a quarter of the %.0f MiB the peak added",
			mib(after), mib(peak-base))
	}
}

var soak = flag.Duration("soak", 0, "run TestSoak for this long (e.g. 10m); skipped when 0")

// soakSample is one reading of the process's resources.
type soakSample struct {
	rss        int64
	goroutines int
	fds        int
}

func sampleNow(t testing.TB) soakSample {
	ents, _ := os.ReadDir("/proc/self/fd")
	return soakSample{rss: rssBytes(t), goroutines: runtime.NumGoroutine(), fds: len(ents)}
}

// TestSoak (go test -run TestSoak -soak 10m .; not in CI): three
// well-behaved workstations open, use and close connections and ask DNS
// over UDP and TCP in a loop, while a hostile source floods SYNs (from its
// own address and 1,000 spoofed ones) and UDP DNS queries. The
// well-behaved workstations must see no failure at all, and RSS,
// goroutines and descriptors must be flat: the last quarter's peak within
// 50% (plus a small floor) of the second quarter's.
func TestSoak(t *testing.T) {
	if *soak == 0 {
		t.Skip("soak: pass -soak DURATION")
	}
	good := []netip.Addr{ws1, ws2, netip.MustParseAddr("10.152.152.13")}
	hub, list := wstest.New(t, 1500, good...)
	ws := map[netip.Addr]*wstest.Workstation{}
	for _, w := range list {
		ws[w.Addr] = w
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := socksd.New(socksd.Config{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	d, err := socks.NewDialer("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r, err := torgate.New(torgate.Config{Device: hub, Upstream: d.Dial})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { r.Close() })
	f := &fixture{hub: hub, ws: ws, r: r}

	ctx, cancel := context.WithTimeout(t.Context(), *soak)
	defer cancel()
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	for _, src := range good {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				dctx, dcancel := context.WithTimeout(t.Context(), 20*time.Second)
				c, err := ws[src].Net.DialContextTCPAddrPort(dctx, netip.AddrPortFrom(dst4.Addr(), socksd.PortEcho))
				dcancel()
				if err != nil {
					fail(fmt.Errorf("%v connect: %w", src, err))
					continue
				}
				c.SetDeadline(time.Now().Add(20 * time.Second))
				if err := transfer(c, 4096, uint64(i)); err != nil {
					fail(fmt.Errorf("%v transfer: %w", src, err))
				}
				c.Close()
				if err := dnsOK(f, t, src, i%10 == 0, uint16(i)); err != nil {
					fail(fmt.Errorf("%v dns (tcp %v): %w", src, i%10 == 0, err))
				}
				ok.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// The hostile source: bursts of SYNs from itself and spoofed
	// neighbours, and UDP DNS queries, paced at roughly 40k packets/s so
	// that the 2-core box still has CPU for the well-behaved ones (the
	// shares are what is tested, not the scheduler).
	var flooded atomic.Int64
	wg.Go(func() {
		port := uint16(1024)
		for ctx.Err() == nil {
			for i := range 2000 {
				port++
				if port == 0 {
					port = 1024
				}
				src := hostile
				if i%2 == 1 {
					src = netip.AddrFrom4([4]byte{10, 152, byte(153 + i%4), byte(1 + int(port)%250)})
				}
				if i%4 == 3 {
					hub.Inject(dnsPacket(src, gw4, port, port))
				} else {
					// Port 7: socksd's echo sink notices the router
					// closing the stream (its park sink would hold the
					// descriptor until Close, a leak of the harness).
					hub.Inject(synPacket(src, dst4.Addr(), port, socksd.PortEcho))
				}
			}
			flooded.Add(2000)
			time.Sleep(50 * time.Millisecond)
		}
	})

	every := max(*soak/20, 5*time.Second)
	var samples []soakSample
	tick := time.NewTicker(every)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			runtime.GC()
			s := sampleNow(t)
			samples = append(samples, s)
			held, total := r.Stack().Pending(hostile)
			t.Logf("soak %v: rss %.1f MiB, goroutines %d, fds %d; good rounds %d, failures %d; flood %d packets, hostile pending %d of %d",
				time.Duration(len(samples))*every, float64(s.rss)/(1<<20), s.goroutines, s.fds, ok.Load(), failed.Load(), flooded.Load(), held, total)
		}
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("well-behaved workstations saw %d failures in %d rounds; first: %v", n, ok.Load(), firstErr.Load())
	}
	if len(samples) < 8 {
		t.Fatalf("only %d samples: run longer", len(samples))
	}
	q := len(samples) / 4
	peak := func(ss []soakSample) soakSample {
		var m soakSample
		for _, s := range ss {
			m.rss, m.goroutines, m.fds = max(m.rss, s.rss), max(m.goroutines, s.goroutines), max(m.fds, s.fds)
		}
		return m
	}
	early, late := peak(samples[q:2*q]), peak(samples[3*q:])
	if late.rss > early.rss*3/2+16<<20 {
		t.Errorf("RSS grew: %.1f -> %.1f MiB", float64(early.rss)/(1<<20), float64(late.rss)/(1<<20))
	}
	if late.goroutines > early.goroutines*3/2+200 {
		t.Errorf("goroutines grew: %d -> %d", early.goroutines, late.goroutines)
	}
	if late.fds > early.fds*3/2+100 {
		t.Errorf("descriptors grew: %d -> %d", early.fds, late.fds)
	}
	t.Logf("soak done: %d good rounds, %d failures, %d flood packets; peaks 2nd quarter %+v, last quarter %+v",
		ok.Load(), failed.Load(), flooded.Load(), early, late)
}
