package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/torgate/torgate/socks"
)

// portStream is a PortStream on one end of a pipe, recording its reply.
func portStream(dst socks.Addr, replies *[]socks.Reply) (PortStream, net.Conn) {
	cl, remote := net.Pipe()
	return PortStream{
		PortClient: PortClient{Who: srcA, Port: 9150, User: []byte("site"), Pass: []byte("n")},
		Conn:       &halfPipe{Conn: cl},
		Dst:        dst,
		Reply: func(r socks.Reply) error {
			*replies = append(*replies, r)
			return nil
		},
	}, remote
}

func TestFailureReply(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want socks.Reply
	}{
		{&socks.ReplyError{Command: socks.CmdConnect, Reply: socks.ReplyOnionDescNotFound}, socks.ReplyOnionDescNotFound},
		{fmt.Errorf("socks connect: %w", &socks.ReplyError{Reply: socks.ReplyConnectionRefused}), socks.ReplyConnectionRefused},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), socks.ReplyTTLExpired},
		{context.Canceled, socks.ReplyGeneralFailure},
		{errors.New("connection refused"), socks.ReplyGeneralFailure},
	} {
		if got := failureReply(tt.err); got != tt.want {
			t.Errorf("failureReply(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestConnectPort: the credentials are PortAuth's, the early bytes go
// upstream before the client's next ones, and the reply follows the
// upstream's acceptance.
func TestConnectPort(t *testing.T) {
	upLocal, upRemote := net.Pipe()
	var gotAuth socks.Auth
	var gotDst socks.Addr
	up := fakeUpstream{connect: func(_ context.Context, d socks.Addr, a socks.Auth) (net.Conn, error) {
		gotDst, gotAuth = d, a
		return upLocal, nil
	}}
	tn := newTunnel(t, up, nil)
	var replies []socks.Reply
	s, remote := portStream(socks.HostPort("example.com", 443), &replies)
	s.Early = []byte("early")
	go func() {
		// The early bytes arrive first; then what the client sends.
		buf := make([]byte, 10)
		n, _ := upRemote.Read(buf)
		if string(buf[:n]) != "early" {
			t.Errorf("upstream first read %q", buf[:n])
		}
		remote.Write([]byte("later"))
	}()
	if got := tn.ConnectPort(t.Context(), s); got != socks.ReplySucceeded || len(replies) != 1 || replies[0] != socks.ReplySucceeded {
		t.Fatalf("ConnectPort = %v, replies %v", got, replies)
	}
	buf := make([]byte, 5)
	if _, err := upRemote.Read(buf); err != nil || string(buf) != "later" {
		t.Fatalf("relay: %q %v", buf, err)
	}
	if gotDst != s.Dst || gotAuth != tn.Isolator().PortAuth(srcA, 9150, []byte("site"), []byte("n"), "") {
		t.Fatalf("upstream saw %v %v", gotDst, gotAuth)
	}
	remote.Close()
	upRemote.Close()
	waitUntil(t, func() bool { return tn.openFlows() == 0 })
}

// TestConnectPortRefusals: every refusal is a reply, counted by reason,
// with no dial for the ones the tunnel decides itself.
func TestConnectPortRefusals(t *testing.T) {
	var dials atomic.Int32
	up := fakeUpstream{connect: func(_ context.Context, d socks.Addr, _ socks.Auth) (net.Conn, error) {
		dials.Add(1)
		return nil, &socks.ReplyError{Command: socks.CmdConnect, Reply: socks.ReplyOnionIntroTimedOut}
	}}
	var ready atomic.Bool
	ready.Store(true)
	tn := newTunnel(t, up, func(c *Config) {
		c.Names = fakeNames{netip.MustParseAddr("10.192.0.5"): "127.0.0.1"}
		c.Ready = ready.Load
	})
	for _, tt := range []struct {
		name   string
		dst    socks.Addr
		want   socks.Reply
		reason string
	}{
		{name: "private", dst: socks.Addr{IP: netip.MustParseAddr("192.168.1.1"), Port: 80}, want: socks.ReplyNotAllowed, reason: refuseForbid},
		{name: "literal name", dst: socks.HostPort("0x7f.1", 80), want: socks.ReplyNotAllowed, reason: refuseForbid},
		{name: "virtual to a literal", dst: socks.Addr{IP: netip.MustParseAddr("10.192.0.5"), Port: 80}, want: socks.ReplyNotAllowed, reason: refuseForbid},
		{name: "unmapped virtual", dst: socks.Addr{IP: netip.MustParseAddr("10.192.0.9"), Port: 80}, want: socks.ReplyHostUnreachable, reason: refuseUnmapped},
	} {
		var replies []socks.Reply
		s, _ := portStream(tt.dst, &replies)
		before := testutil.ToFloat64(tn.refused.WithLabelValues(tt.reason))
		if got := tn.ConnectPort(t.Context(), s); got != tt.want || len(replies) != 1 || replies[0] != tt.want {
			t.Errorf("%s: ConnectPort = %v, replies %v; want %v", tt.name, got, replies, tt.want)
		}
		if testutil.ToFloat64(tn.refused.WithLabelValues(tt.reason)) != before+1 {
			t.Errorf("%s: not counted as %s", tt.name, tt.reason)
		}
	}
	if dials.Load() != 0 {
		t.Fatalf("%d dials for refused streams", dials.Load())
	}
	var replies []socks.Reply
	s, _ := portStream(socks.HostPort("x.onion", 80), &replies)
	if got := tn.ConnectPort(t.Context(), s); got != socks.ReplyOnionIntroTimedOut {
		t.Fatalf("Tor's code: %v", got)
	}
	ready.Store(false)
	if got := tn.ConnectPort(t.Context(), s); got != socks.ReplyGeneralFailure || dials.Load() != 1 {
		t.Fatalf("not ready: %v after %d dials", got, dials.Load())
	}
	if _, got := tn.ResolvePort(t.Context(), s.PortClient, "example.com"); got != socks.ReplyGeneralFailure {
		t.Fatalf("not ready, resolve: %v", got)
	}
	if tn.openFlows() != 0 {
		t.Fatal("a refused stream left a flow open")
	}
}

// TestConnectPortTimeout: a dial that Tor never answers ends at
// DialTimeout with "TTL expired", as Tor reports its own timeouts; the
// caller's context ends it at once.
func TestConnectPortTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := fakeUpstream{connect: func(ctx context.Context, _ socks.Addr, _ socks.Auth) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}}
		tn := newTunnel(t, up, func(c *Config) { c.DialTimeout = 30 * time.Second })
		var replies []socks.Reply
		s, _ := portStream(socks.HostPort("example.com", 80), &replies)
		start := time.Now()
		if got := tn.ConnectPort(t.Context(), s); got != socks.ReplyTTLExpired || time.Since(start) != 30*time.Second {
			t.Fatalf("ConnectPort = %v after %v", got, time.Since(start))
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start = time.Now()
		if got := tn.ConnectPort(ctx, s); got != socks.ReplyGeneralFailure || time.Since(start) != time.Second {
			t.Fatalf("cancelled: ConnectPort = %v after %v", got, time.Since(start))
		}
	})
}

type lookupUpstream struct {
	fakeUpstream
	auths []socks.Auth
}

func (u *lookupUpstream) ResolvePTR(_ context.Context, ip netip.Addr, a socks.Auth) (string, error) {
	u.auths = append(u.auths, a)
	return "host.example", nil
}

func (u *lookupUpstream) Resolve(_ context.Context, name string, a socks.Auth) (netip.Addr, error) {
	u.auths = append(u.auths, a)
	return netip.MustParseAddr("192.0.2.3"), nil
}

// TestResolvePTRPort: virtual addresses are answered from the
// workstation's names, forbidden ones refused, others asked of Tor with
// PortAuth's credentials; so are names.
func TestResolvePTRPort(t *testing.T) {
	up := &lookupUpstream{}
	tn := newTunnel(t, up, func(c *Config) { c.Names = fakeNames{netip.MustParseAddr("10.192.0.5"): "example.onion"} })
	c := PortClient{Who: srcA, Port: 9050}
	for _, tt := range []struct {
		ip   string
		name string
		want socks.Reply
	}{
		{ip: "10.192.0.5", name: "example.onion"},
		{ip: "10.192.0.6", want: socks.ReplyHostUnreachable},
		{ip: "10.1.1.1", want: socks.ReplyNotAllowed},
		{ip: "::1", want: socks.ReplyNotAllowed},
		{ip: "192.0.2.3", name: "host.example"},
	} {
		name, got := tn.ResolvePTRPort(t.Context(), c, netip.MustParseAddr(tt.ip))
		if got != tt.want || name != tt.name {
			t.Errorf("ResolvePTRPort(%s) = %q, %v; want %q, %v", tt.ip, name, got, tt.name, tt.want)
		}
	}
	if ip, got := tn.ResolvePort(t.Context(), c, "example.com"); got != 0 || ip != netip.MustParseAddr("192.0.2.3") {
		t.Fatalf("ResolvePort = %v, %v", ip, got)
	}
	want := tn.Isolator().PortAuth(srcA, 9050, nil, nil, "")
	if len(up.auths) != 2 || up.auths[0] != want || up.auths[1] != want {
		t.Fatalf("Tor saw %v, want PortAuth's %v twice", up.auths, want)
	}
	if tn.openFlows() != 0 {
		t.Fatal("a lookup left a flow open")
	}
}
