package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/torgate/torgate/socks"
)

var (
	srcA = netip.MustParseAddr("10.152.152.11")
	srcB = netip.MustParseAddr("10.152.152.12")
	dst  = netip.MustParseAddrPort("192.0.2.1:443")
)

func TestIsolatorAuth(t *testing.T) {
	iso, err := NewIsolator(IsolateSource, nil)
	if err != nil {
		t.Fatal(err)
	}
	a1, a2, b := iso.Auth(srcA, "x"), iso.Auth(srcA, "y"), iso.Auth(srcB, "x")
	if a1 != a2 {
		t.Error("one source got two credentials")
	}
	if a1 == b {
		t.Error("two sources share credentials")
	}
	for _, a := range []socks.Auth{a1, b} {
		if !strings.HasPrefix(a.Username, "tg-") || strings.HasPrefix(a.Username, "<torS0X>") {
			t.Errorf("username %q", a.Username)
		}
		if strings.Contains(a.Username+a.Password, "10.152") {
			t.Errorf("credentials %v may reveal the source", a)
		}
	}
	// Mapped and plain IPv4 are the same source.
	if iso.Auth(netip.AddrFrom16(srcA.As16()), "x") != a1 {
		t.Error("IPv4-mapped source got other credentials")
	}
	// A different secret (another run) gives other credentials.
	other, _ := NewIsolator(IsolateSource, nil)
	if other.Auth(srcA, "x") == a1 {
		t.Error("two runs share credentials")
	}
	iso.NewIdentity(srcA)
	if iso.Auth(srcA, "x") == a1 || iso.Auth(srcB, "x") != b {
		t.Error("per-source new identity must rotate only that source")
	}
	a3 := iso.Auth(srcA, "x")
	iso.NewIdentityAll()
	if iso.Auth(srcA, "x") == a3 || iso.Auth(srcB, "x") == b {
		t.Error("global new identity must rotate every source")
	}
	// A source's credentials are cached: the same as derived, and free.
	a4 := iso.Auth(srcA, "x")
	if d := iso.derive(srcA, "x", iso.epochs[srcA], iso.global); d != a4 {
		t.Errorf("cached %v, derived %v", a4, d)
	}
	if n := testing.AllocsPerRun(100, func() { iso.Auth(srcA, "x") }); n != 0 {
		t.Errorf("Auth of a known source allocates %v times", n)
	}
}

func TestIsolatorModes(t *testing.T) {
	dest, _ := NewIsolator(IsolateDestination, nil)
	if dest.Auth(srcA, "a.example") == dest.Auth(srcA, "b.example") {
		t.Error("destination mode: two hosts share credentials")
	}
	if dest.Auth(srcA, "A.example") != dest.Auth(srcA, "a.example") {
		t.Error("destination mode: host case matters")
	}
	none, _ := NewIsolator(IsolateNone, nil)
	if none.Auth(srcA, "a") != none.Auth(srcB, "b") {
		t.Error("no isolation: sources differ")
	}
	if _, err := NewIsolator(IsolationMode(9), nil); err == nil {
		t.Error("invalid mode accepted")
	}
	if _, err := NewIsolator(IsolateSource, []byte("short")); err == nil {
		t.Error("short secret accepted")
	}
	for _, s := range []string{"source", "destination", "none"} {
		m, err := ParseIsolationMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseIsolationMode(%q) = %v, %v", s, m, err)
		}
	}
}

func TestIsolatorEpochTableBounded(t *testing.T) {
	iso, _ := NewIsolator(IsolateSource, nil)
	before := iso.Auth(srcB, "")
	for i := range maxEpochs + 10 {
		iso.NewIdentity(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	iso.mu.Lock()
	n := len(iso.epochs)
	iso.mu.Unlock()
	if n > maxEpochs {
		t.Fatalf("epoch table grew to %d", n)
	}
	if iso.Auth(srcB, "") == before {
		t.Fatal("overflow must rotate everyone (never less isolation)")
	}
}

// fakeUpstream connects every stream to one end of a net.Pipe.
type fakeUpstream struct {
	connect func(ctx context.Context, dst socks.Addr, auth socks.Auth) (net.Conn, error)
}

func (u fakeUpstream) Connect(ctx context.Context, dst socks.Addr, auth socks.Auth) (net.Conn, error) {
	return u.connect(ctx, dst, auth)
}
func (fakeUpstream) Resolve(context.Context, string, socks.Auth) (netip.Addr, error) {
	return netip.Addr{}, errors.New("no")
}
func (fakeUpstream) ResolvePTR(context.Context, netip.Addr, socks.Auth) (string, error) {
	return "", errors.New("no")
}

// fakeFlow hands out one end of a pipe as the client connection.
type fakeFlow struct {
	client   net.Conn
	accepted atomic.Bool
	rejected atomic.Bool
}

func (f *fakeFlow) Accept() (net.Conn, error) { f.accepted.Store(true); return f.client, nil }
func (f *fakeFlow) Reject()                   { f.rejected.Store(true) }

// halfPipe is a net.Pipe end with CloseWrite, like a TCP conn.
type halfPipe struct {
	net.Conn
}

func (h *halfPipe) CloseWrite() error { return nil }

func newTunnel(t *testing.T, up Upstream, mod func(*Config)) *Tunnel {
	iso, _ := NewIsolator(IsolateSource, nil)
	cfg := Config{Upstream: up, Isolator: iso}
	if mod != nil {
		mod(&cfg)
	}
	tn, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	return tn
}

func TestIdleTimeoutEndsFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		upLocal, upRemote := net.Pipe()
		up := fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return upLocal, nil }}
		tn := newTunnel(t, up, func(c *Config) { c.IdleTimeout = time.Minute })
		cl, clRemote := net.Pipe()
		f := &fakeFlow{client: cl}
		tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, f)
		// Traffic keeps it alive past the limit...
		for range 3 {
			time.Sleep(40 * time.Second)
			go clRemote.Write([]byte("x"))
			io.ReadFull(upRemote, make([]byte, 1))
		}
		if tn.openFlows() != 1 {
			t.Fatal("active flow ended")
		}
		// ...silence ends it (at the next idle sweep).
		time.Sleep(time.Minute + tn.sweepEvery + time.Second)
		synctest.Wait()
		if tn.openFlows() != 0 {
			t.Fatal("idle flow still open after the idle timeout")
		}
	})
}

func TestHalfCloseTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		upLocal, upRemote := net.Pipe()
		up := fakeUpstream{connect: func(context.Context, socks.Addr, socks.Auth) (net.Conn, error) { return upLocal, nil }}
		tn := newTunnel(t, up, func(c *Config) { c.HalfCloseTimeout = 10 * time.Second })
		cl, clRemote := net.Pipe()
		f := &fakeFlow{client: &halfPipe{Conn: cl}}
		tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, f)
		// The upstream finishes its direction...
		upRemote.Close()
		_ = clRemote
		synctest.Wait()
		if tn.openFlows() != 1 {
			t.Fatal("flow ended at the first half-close")
		}
		// ...the client stays silent: the half-close limit ends the flow
		// long before the 1 h idle limit.
		time.Sleep(10*time.Second + tn.sweepEvery + time.Second)
		synctest.Wait()
		if tn.openFlows() != 0 {
			t.Fatal("half-closed flow outlived HalfCloseTimeout")
		}
	})
}

func TestDialTimeoutRejects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := fakeUpstream{connect: func(ctx context.Context, _ socks.Addr, _ socks.Auth) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}}
		tn := newTunnel(t, up, func(c *Config) { c.DialTimeout = 30 * time.Second })
		f := &fakeFlow{}
		start := time.Now()
		tn.HandleTCP(netip.AddrPortFrom(srcA, 1000), dst, f)
		if !f.rejected.Load() || f.accepted.Load() {
			t.Fatal("timed-out dial must end in a RST, never an accept")
		}
		if d := time.Since(start); d != 30*time.Second {
			t.Fatalf("rejected after %v, want the dial timeout", d)
		}
	})
}

func TestCapsAndNames(t *testing.T) {
	block := make(chan struct{})
	up := fakeUpstream{connect: func(ctx context.Context, _ socks.Addr, _ socks.Auth) (net.Conn, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil, errors.New("refused")
	}}
	tn := newTunnel(t, up, func(c *Config) { c.MaxFlows = 3; c.MaxFlowsPerSource = 2; c.MaxDialsPerSource = 2 })
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { tn.HandleTCP(netip.AddrPortFrom(srcA, 1), dst, &fakeFlow{}) })
	}
	waitUntil(t, func() bool { tn.mu.Lock(); defer tn.mu.Unlock(); return tn.total == 2 })
	f := &fakeFlow{}
	tn.HandleTCP(netip.AddrPortFrom(srcA, 2), dst, f)
	if !f.rejected.Load() {
		t.Fatal("per-source cap not enforced")
	}
	wg.Go(func() { tn.HandleTCP(netip.AddrPortFrom(srcB, 1), dst, &fakeFlow{}) })
	waitUntil(t, func() bool { tn.mu.Lock(); defer tn.mu.Unlock(); return tn.total == 3 })
	g := &fakeFlow{}
	tn.HandleTCP(netip.AddrPortFrom(netip.MustParseAddr("10.152.152.13"), 1), dst, g)
	if !g.rejected.Load() {
		t.Fatal("total cap not enforced")
	}
	close(block)
	wg.Wait()
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.total != 0 || len(tn.sources) != 0 {
		t.Fatalf("leaked accounting: total %d sources %d", tn.total, len(tn.sources))
	}
}

type fakeNames map[netip.Addr]string

func (n fakeNames) Acquire(_, ip netip.Addr) (string, func(), bool, bool) {
	if !netip.MustParsePrefix("10.192.0.0/10").Contains(ip) {
		return "", nil, false, false
	}
	name, ok := n[ip]
	return name, func() {}, true, ok
}

func TestVirtualAddresses(t *testing.T) {
	var got []socks.Addr
	var mu sync.Mutex
	up := fakeUpstream{connect: func(_ context.Context, d socks.Addr, _ socks.Auth) (net.Conn, error) {
		mu.Lock()
		got = append(got, d)
		mu.Unlock()
		return nil, errors.New("refused")
	}}
	names := fakeNames{netip.MustParseAddr("10.192.0.5"): "example.onion"}
	tn := newTunnel(t, up, func(c *Config) { c.Names = names })
	tn.HandleTCP(netip.AddrPortFrom(srcA, 1), netip.MustParseAddrPort("10.192.0.5:80"), &fakeFlow{})
	stale := &fakeFlow{}
	tn.HandleTCP(netip.AddrPortFrom(srcA, 1), netip.MustParseAddrPort("10.192.0.6:80"), stale)
	if !stale.rejected.Load() {
		t.Fatal("unmapped virtual address must get a RST")
	}
	if len(got) != 1 || got[0].Name != "example.onion" || got[0].Port != 80 {
		t.Fatalf("upstream saw %v, want CONNECT example.onion:80 only", got)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timeout")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
