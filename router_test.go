package torgate_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/wstest"
	"github.com/torgate/torgate/netstack"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

var (
	ws1  = netip.MustParseAddr("10.152.152.11")
	ws2  = netip.MustParseAddr("10.152.152.12")
	ws6  = netip.MustParseAddr("fd19:7a2b::11")
	dst4 = netip.MustParseAddrPort("192.0.2.10:7")
	dst6 = netip.MustParseAddrPort("[2001:db8::10]:7")
)

type fixture struct {
	hub   *wstest.Hub
	ws    map[netip.Addr]*wstest.Workstation
	socks *sockstest.Server
	r     *torgate.Router
}

// newFixture joins workstations at addrs to a router whose upstream is a
// sockstest server scripted by scfg.
func newFixture(t *testing.T, scfg sockstest.Config, mod func(*torgate.Config), addrs ...netip.Addr) *fixture {
	t.Helper()
	if len(addrs) == 0 {
		addrs = []netip.Addr{ws1}
	}
	hub, list := wstest.New(t, 1500, addrs...)
	f := &fixture{hub: hub, ws: make(map[netip.Addr]*wstest.Workstation)}
	for _, w := range list {
		f.ws[w.Addr] = w
	}
	f.socks = sockstest.NewServer(t, scfg)
	cfg := torgate.Config{Device: hub, Upstream: f.socks.Dialer().Dial}
	if mod != nil {
		mod(&cfg)
	}
	r, err := torgate.New(cfg)
	if err != nil {
		t.Fatalf("torgate.New: %v", err)
	}
	f.r = r
	r.Start()
	t.Cleanup(func() { r.Close() })
	return f
}

func (f *fixture) dial(t *testing.T, from netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return f.ws[from].Net.DialContextTCPAddrPort(ctx, dst)
}

// transfer writes n pseudo-random bytes and reads n back from an echo,
// comparing SHA-256 of both directions.
func transfer(conn net.Conn, n int64, seed uint64) error {
	src := rand.NewChaCha8([32]byte{byte(seed)})
	sent := sha256.New()
	recv := sha256.New()
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(recv, io.LimitReader(conn, n))
		errc <- err
	}()
	if _, err := io.Copy(io.MultiWriter(conn, sent), io.LimitReader(src, n)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if string(sent.Sum(nil)) != string(recv.Sum(nil)) {
		return errors.New("echoed data differs from sent data")
	}
	return nil
}

func TestBulkOneFlow(t *testing.T) {
	t.Parallel() // 64 MiB each way: CPU work that overlaps the tests waiting on timers
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, nil)
	conn, err := f.dial(t, ws1, dst4)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := transfer(conn, 64<<20, 1); err != nil {
		t.Fatal(err)
	}
}

func TestBulk32Flows(t *testing.T) {
	t.Parallel() // 64 MiB each way: CPU work that overlaps the tests waiting on timers
	// 32 concurrent flows share 64 MiB each way (2 MiB per flow each way).
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			conn, err := f.dial(t, ws1, netip.AddrPortFrom(dst4.Addr(), uint16(1000+i)))
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			if err := transfer(conn, 2<<20, uint64(i)); err != nil {
				errs <- fmt.Errorf("flow %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestOriginalDestinationAndCredentials(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo, RequireAuth: true}, nil, ws1, ws2, ws6)
	cases := []struct {
		from netip.Addr
		dst  netip.AddrPort
	}{
		{ws1, dst4}, {ws1, netip.AddrPortFrom(dst4.Addr(), 443)}, {ws2, dst4}, {ws6, dst6},
	}
	for _, c := range cases {
		conn, err := f.dial(t, c.from, c.dst)
		if err != nil {
			t.Fatalf("dial %v from %v: %v", c.dst, c.from, err)
		}
		if err := transfer(conn, 1024, 0); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	reqs := f.socks.Requests()
	if len(reqs) != len(cases) {
		t.Fatalf("SOCKS server saw %d requests, want %d", len(reqs), len(cases))
	}
	auth := map[netip.Addr]socks.Auth{}
	for i, c := range cases {
		got := reqs[i]
		if got.Dst.IP != c.dst.Addr() || got.Dst.Port != c.dst.Port() || got.Dst.Name != "" {
			t.Errorf("request %d: dst %v, want %v", i, got.Dst, c.dst)
		}
		if got.Auth.Username == "" || got.Auth.Password == "" {
			t.Errorf("request %d: no credentials", i)
		}
		if prev, ok := auth[c.from]; ok && prev != got.Auth {
			t.Errorf("source %v used two credentials: %v and %v", c.from, prev, got.Auth)
		}
		auth[c.from] = got.Auth
	}
	if auth[ws1] == auth[ws2] || auth[ws1] == auth[ws6] {
		t.Errorf("two sources share credentials: %v", auth)
	}
	for src, a := range auth {
		if len(a.Username) >= 8 && a.Username[:8] == "<torS0X>" {
			t.Errorf("source %v: username %q uses proposal 351's prefix", src, a.Username)
		}
	}
	if n := f.socks.Pipelined(); n != 0 {
		t.Errorf("client pipelined greeting and auth %d times", n)
	}
}

func TestNewIdentityRotatesOneSource(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, nil, ws1, ws2)
	roundTrip := func(from netip.Addr) socks.Auth {
		conn, err := f.dial(t, from, dst4)
		if err != nil {
			t.Fatal(err)
		}
		transfer(conn, 16, 0)
		conn.Close()
		reqs := f.socks.Requests()
		return reqs[len(reqs)-1].Auth
	}
	a1, b1 := roundTrip(ws1), roundTrip(ws2)
	f.r.Tunnel().Isolator().NewIdentity(ws1)
	a2, b2 := roundTrip(ws1), roundTrip(ws2)
	if a1 == a2 {
		t.Error("new identity did not change the source's credentials")
	}
	if b1 != b2 {
		t.Error("new identity for one source changed another's credentials")
	}
}

// TestNewIdentityUnknownSource: on a TUN, a new identity for an address
// that never connected through torgate is ErrUnknownWorkstation (issue
// 22: "torgate newnym 1.2.3.4" reported success); one that completed a
// handshake is known.
func TestNewIdentityUnknownSource(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, nil, ws1, ws2)
	if err := f.r.NewIdentity(netip.MustParseAddr("1.2.3.4")); !errors.Is(err, torgate.ErrUnknownWorkstation) {
		t.Errorf("NewIdentity(1.2.3.4) = %v, want ErrUnknownWorkstation", err)
	}
	if err := f.r.NewIdentity(ws1); !errors.Is(err, torgate.ErrUnknownWorkstation) {
		t.Errorf("NewIdentity(%s) before any connection = %v, want ErrUnknownWorkstation", ws1, err)
	}
	conn, err := f.dial(t, ws1, dst4)
	if err != nil {
		t.Fatal(err)
	}
	transfer(conn, 16, 0)
	conn.Close()
	if err := f.r.NewIdentity(ws1); err != nil {
		t.Errorf("NewIdentity(%s) after a connection = %v", ws1, err)
	}
	if err := f.r.NewIdentity(ws2); !errors.Is(err, torgate.ErrUnknownWorkstation) {
		t.Errorf("NewIdentity(%s), which never connected = %v, want ErrUnknownWorkstation", ws2, err)
	}
}

func TestIsolationModes(t *testing.T) {
	for _, mode := range []torgate.Isolation{torgate.IsolateDestination, torgate.IsolateNone} {
		t.Run(mode.String(), func(t *testing.T) {
			f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, func(c *torgate.Config) { c.Isolation = mode }, ws1, ws2)
			for _, c := range []struct {
				from netip.Addr
				dst  netip.AddrPort
			}{{ws1, dst4}, {ws1, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.20"), 7)}, {ws2, dst4}} {
				conn, err := f.dial(t, c.from, c.dst)
				if err != nil {
					t.Fatal(err)
				}
				transfer(conn, 16, 0)
				conn.Close()
			}
			r := f.socks.Requests()
			sameDstDiffHost := r[0].Auth == r[1].Auth
			crossSource := r[0].Auth == r[2].Auth
			switch mode {
			case torgate.IsolateDestination:
				if sameDstDiffHost || crossSource {
					t.Errorf("destination isolation shared credentials: %+v", r)
				}
			case torgate.IsolateNone:
				if !sameDstDiffHost || !crossSource {
					t.Errorf("no isolation yet credentials differ: %+v", r)
				}
			}
		})
	}
}

func TestRefusedConnectIsRST(t *testing.T) {
	for _, code := range []socks.Reply{socks.ReplyConnectionRefused, socks.ReplyHostUnreachable, socks.ReplyGeneralFailure, socks.ReplyOnionDescNotFound} {
		t.Run(code.String(), func(t *testing.T) {
			f := newFixture(t, sockstest.Config{Connect: sockstest.Refuse(code)}, nil)
			start := time.Now()
			conn, err := f.dial(t, ws1, dst4)
			if err == nil {
				conn.Close()
				t.Fatal("connect succeeded although the SOCKS server refused")
			}
			if !errors.Is(err, syscall.ECONNREFUSED) && !isRefused(err) {
				t.Fatalf("got %v, want connection refused", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("refusal took %v, want under 1s", d)
			}
		})
	}
}

// isRefused recognises gVisor's connection-refused error, which gonet
// does not map to ECONNREFUSED.
func isRefused(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || containsFold(err.Error(), "connection was refused") || containsFold(err.Error(), "connection refused"))
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if equalFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

func TestHangingUpstreamDoesNotBlockOthers(t *testing.T) {
	hang := netip.MustParseAddr("192.0.2.66")
	stuck := make(chan struct{}, 8)
	connect := func(req sockstest.Request) (socks.Reply, net.Conn) {
		if req.Dst.IP == hang {
			stuck <- struct{}{}
			return sockstest.Hang(req)
		}
		return sockstest.Echo(req)
	}
	f := newFixture(t, sockstest.Config{Connect: connect}, nil, ws1, ws2)
	// Several flows stuck in the SOCKS handshake...
	for i := range 8 {
		go func() {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if c, err := f.ws[ws1].Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(hang, uint16(80+i))); err == nil {
				c.Close()
			}
		}()
	}
	for range 8 {
		select {
		case <-stuck:
		case <-time.After(10 * time.Second):
			t.Fatal("the hanging flows never reached the upstream: the test would prove nothing")
		}
	}
	// ...while both sources still get through.
	for _, src := range []netip.Addr{ws1, ws2} {
		conn, err := f.dial(t, src, dst4)
		if err != nil {
			t.Fatalf("from %v: %v", src, err)
		}
		if err := transfer(conn, 4096, 0); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
}

func TestPerSourceCap(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, func(c *torgate.Config) {
		c.MaxFlowsPerSource = 4
	}, ws1, ws2)
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := range 4 {
		c, err := f.dial(t, ws1, netip.AddrPortFrom(dst4.Addr(), uint16(100+i)))
		if err != nil {
			t.Fatalf("flow %d under the cap: %v", i, err)
		}
		open = append(open, c)
	}
	if c, err := f.dial(t, ws1, dst4); err == nil {
		c.Close()
		t.Fatal("fifth flow from one source accepted over a cap of 4")
	} else if !isRefused(err) {
		t.Fatalf("over the cap: %v, want connection refused", err)
	}
	c, err := f.dial(t, ws2, dst4)
	if err != nil {
		t.Fatalf("other source blocked by first source's cap: %v", err)
	}
	c.Close()
	// Closing one flow frees a slot.
	open[0].Close()
	open = open[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := f.dial(t, ws1, dst4)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed after close: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNotReadyIsRST is the fail-closed invariant: while Tor is not ready,
// flows get a RST and the upstream is never asked.
func TestNotReadyIsRST(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, func(c *torgate.Config) {
		c.Ready = func() bool { return false }
	})
	if c, err := f.dial(t, ws1, dst4); err == nil {
		c.Close()
		t.Fatal("flow accepted while not ready")
	} else if !isRefused(err) {
		t.Fatalf("got %v, want connection refused", err)
	}
	if n := f.socks.Stats().Accepted; n != 0 {
		t.Fatalf("upstream contacted %d times while not ready", n)
	}
}

// TestNoDirectDial proves the router reaches destinations only through
// its upstream. A real listener on loopback is the one destination the
// router process could reach directly; a flow to it must be dropped as a
// martian, and flows to other destinations go to the upstream only (which
// refuses them here), so the listener never sees a connection.
func TestNoDirectDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted sync.WaitGroup
	var hits atomic.Int32
	accepted.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			c.Close()
		}
	})
	f := newFixture(t, sockstest.Config{Connect: sockstest.Refuse(socks.ReplyNotAllowed)}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if c, err := f.ws[ws1].Net.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort(ln.Addr().String())); err == nil {
		c.Close()
		t.Fatal("flow to loopback accepted")
	}
	for range 3 {
		if c, err := f.dial(t, ws1, dst4); err == nil {
			c.Close()
			t.Fatal("flow accepted although the upstream refused")
		}
	}
	ln.Close()
	accepted.Wait()
	if n := hits.Load(); n != 0 {
		t.Fatalf("destination saw %d direct connections", n)
	}
	if n := f.r.Stack().Stats().Drops[netstack.ReasonMartian].Load(); n == 0 {
		t.Fatal("SYN to loopback not counted as martian")
	}
	if got := f.socks.Stats().Connect; got != 3 {
		t.Fatalf("upstream saw %d CONNECTs, want 3", got)
	}
}

func TestDroppedTrafficIsCounted(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, nil, ws1, ws2)
	st := f.r.Stack().Stats()
	w := f.ws[ws1]

	// UDP to a port other than 53.
	uc, err := w.Net.DialUDPAddrPort(netip.AddrPort{}, netip.MustParseAddrPort("192.0.2.10:443"))
	if err != nil {
		t.Fatal(err)
	}
	uc.Write([]byte("quic?"))
	uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := uc.Read(make([]byte, 64)); err == nil {
		t.Fatalf("UDP got an answer of %d bytes", n)
	}
	uc.Close()

	// ICMP echo: no fake reply.
	pc, err := w.Net.DialPingAddr(ws1, netip.MustParseAddr("192.0.2.10"))
	if err != nil {
		t.Fatal(err)
	}
	pc.Write(echoRequest())
	pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := pc.Read(make([]byte, 64)); err == nil {
		t.Fatalf("ping got an answer of %d bytes", n)
	}
	pc.Close()

	// An IPv4 fragment, injected raw.
	before := f.hub.Delivered(ws1)
	f.hub.Inject(fragment(ws1, dst4.Addr()))

	waitFor(t, func() bool {
		return st.Drops[netstack.ReasonUDP].Load() >= 1 && st.Drops[netstack.ReasonICMP].Load() >= 1 && st.Drops[netstack.ReasonFragment].Load() >= 1
	})
	// A barrier instead of a pause: the packet loop handles packets in
	// order and writes through one outbound queue, so anything it sent
	// ws1 for the fragment is delivered before ws2's handshake completes.
	c, err := f.dial(t, ws2, dst4)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := f.hub.Delivered(ws1); got != before {
		t.Fatalf("router answered a fragment (%d packets)", got-before)
	}
}

func echoRequest() []byte {
	// ICMPv4 echo request, id 1 seq 1; the netstack ping socket fixes up
	// the checksum.
	return []byte{8, 0, 0, 0, 0, 1, 0, 1, 'p', 'i', 'n', 'g'}
}

func fragment(src, dst netip.Addr) []byte {
	b := make([]byte, 20+8)
	b[0] = 0x45
	b[3] = byte(len(b))
	b[6] = 0x20 // more fragments
	b[8] = 64
	b[9] = 17
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:], s4[:])
	copy(b[16:], d4[:])
	return b
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
