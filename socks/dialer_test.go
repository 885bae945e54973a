package socks_test

// The Dialer's tests against sockstest's scripted server. They are in the
// external test package socks_test, which may import sockstest although
// sockstest imports socks, so that go test ./socks runs them: in
// sockstest they tested the client only when that package was named.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// testWindow is the pipelining window for servers in these tests: short to
// keep the tests quick, yet enough to catch a client that sends greeting and
// auth back to back. TestServerCatchesPipelining uses the default.
const testWindow = 10 * time.Millisecond

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newServer starts a strict test server and, at the end of the test, checks
// that the client neither pipelined nor broke the protocol.
func newServer(t *testing.T, cfg sockstest.Config) *sockstest.Server {
	t.Helper()
	if cfg.PipelineWindow == 0 && cfg.Raw == nil {
		cfg.PipelineWindow = testWindow
	}
	srv := sockstest.NewServer(t, cfg)
	t.Cleanup(func() {
		if n := srv.Pipelined(); n != 0 {
			t.Errorf("client pipelined on %d connections", n)
		}
		for _, err := range srv.Errors() {
			t.Errorf("server saw a client protocol violation: %v", err)
		}
	})
	return srv
}

// echoRoundTrip writes msg on c and expects it back.
func echoRoundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

func TestConnectDestinations(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.1")
	v6 := netip.MustParseAddr("2001:db8::1")
	mapped := netip.MustParseAddr("::ffff:192.0.2.9")
	tests := []struct {
		name string
		dst  socks.Addr
		want socks.Addr // as the server must record it
	}{
		{name: "ipv4", dst: socks.Addr{IP: v4, Port: 80}, want: socks.Addr{IP: v4, Port: 80}},
		{name: "ipv6", dst: socks.Addr{IP: v6, Port: 443}, want: socks.Addr{IP: v6, Port: 443}},
		{name: "hostname", dst: socks.HostPort("example.com", 8080), want: socks.HostPort("example.com", 8080)},
		{name: "onion", dst: socks.HostPort("duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion", 443),
			want: socks.HostPort("duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion", 443)},
		{name: "hostname 255 bytes", dst: socks.HostPort(strings.Repeat("a", 255), 1), want: socks.HostPort(strings.Repeat("a", 255), 1)},
		{name: "port 65535", dst: socks.Addr{IP: v4, Port: 65535}, want: socks.Addr{IP: v4, Port: 65535}},
		{name: "from addrport unmaps", dst: socks.AddrFromAddrPort(netip.AddrPortFrom(mapped, 22)),
			want: socks.Addr{IP: netip.MustParseAddr("192.0.2.9"), Port: 22}},
		{name: "mapped sent as ipv6", dst: socks.Addr{IP: mapped, Port: 22}, want: socks.Addr{IP: mapped, Port: 22}},
		{name: "zone dropped", dst: socks.Addr{IP: netip.MustParseAddr("fe80::1%eth0"), Port: 22},
			want: socks.Addr{IP: netip.MustParseAddr("fe80::1"), Port: 22}},
	}
	for _, unix := range []bool{false, true} {
		srv := newServer(t, sockstest.Config{Unix: unix, Connect: sockstest.Echo})
		d := srv.Dialer()
		for _, tt := range tests {
			t.Run(srv.Network()+"/"+tt.name, func(t *testing.T) {
				before := len(srv.Requests())
				c, err := d.Connect(testCtx(t), tt.dst, socks.Auth{})
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				defer c.Close()
				echoRoundTrip(t, c, "ping "+tt.name)
				reqs := srv.Requests()
				if len(reqs) != before+1 {
					t.Fatalf("server recorded %d requests, want 1", len(reqs)-before)
				}
				got := reqs[before]
				if got.Command != socks.CmdConnect || got.Dst != tt.want || got.Auth != (socks.Auth{}) {
					t.Errorf("server got %#x %v %+v, want connect %v without auth", got.Command, got.Dst, got.Auth, tt.want)
				}
			})
		}
	}
}

func TestConnectReturnsRawConn(t *testing.T) {
	for _, unix := range []bool{false, true} {
		srv := newServer(t, sockstest.Config{Unix: unix, Connect: sockstest.Echo})
		t.Run(srv.Network(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			c, err := srv.Dialer().Connect(ctx, socks.HostPort("example.com", 80), socks.Auth{})
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer c.Close()
			switch c.(type) {
			case *net.TCPConn, *net.UnixConn:
			default:
				t.Fatalf("Connect returned %T, want the raw *net.TCPConn or *net.UnixConn", c)
			}
			// Neither the end of ctx nor its deadline may reach the stream.
			cancel()
			echoRoundTrip(t, c, "after cancel")
		})
	}
}

func TestConnectDeadlineCleared(t *testing.T) {
	srv := newServer(t, sockstest.Config{Connect: sockstest.Echo})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	c, err := srv.Dialer().Connect(ctx, socks.HostPort("example.com", 80), socks.Auth{})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	<-ctx.Done() // past the handshake deadline
	var one [1]byte
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(one[:]); !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
		t.Fatalf("read: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	echoRoundTrip(t, c, "after deadline")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestAuth(t *testing.T) {
	t.Run("credentials arrive", func(t *testing.T) {
		srv := newServer(t, sockstest.Config{RequireAuth: true, Connect: sockstest.Echo})
		auths := []socks.Auth{
			{Username: "u", Password: "p"},
			{Username: "isolation-key-42", Password: "x"},
			{Username: strings.Repeat("U", 255), Password: strings.Repeat("P", 255)},
			{Username: "tor", Password: "\x00\xff binary ok"},
		}
		for _, auth := range auths {
			c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("example.com", 80), auth)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			echoRoundTrip(t, c, "hi")
			c.Close()
		}
		reqs := srv.Requests()
		for i, auth := range auths {
			if reqs[i].Auth != auth {
				t.Errorf("request %d: server got auth %q/%q, want %q/%q", i, reqs[i].Auth.Username, reqs[i].Auth.Password, auth.Username, auth.Password)
			}
		}
	})
	t.Run("no auth", func(t *testing.T) {
		srv := newServer(t, sockstest.Config{Connect: sockstest.Echo})
		c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("example.com", 80), socks.Auth{})
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		c.Close()
		if got := srv.Requests()[0].Auth; got != (socks.Auth{}) {
			t.Errorf("server got auth %+v, want none", got)
		}
	})
	t.Run("auth required", func(t *testing.T) {
		srv := newServer(t, sockstest.Config{RequireAuth: true, Connect: sockstest.Echo})
		_, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("example.com", 80), socks.Auth{})
		if !errors.Is(err, socks.ErrNoAcceptableMethod) {
			t.Fatalf("Connect without auth = %v, want ErrNoAcceptableMethod", err)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		srv := newServer(t, sockstest.Config{
			Authenticate: func(a socks.Auth) bool { return a.Password == "good" },
			Connect:      sockstest.Echo,
		})
		_, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("example.com", 80), socks.Auth{Username: "u", Password: "bad"})
		if !errors.Is(err, socks.ErrAuthRejected) {
			t.Fatalf("Connect with bad password = %v, want ErrAuthRejected", err)
		}
		if len(srv.Requests()) != 0 {
			t.Errorf("request sent after rejected auth")
		}
	})
}

// TestServerCatchesPipelining proves that the strict server stalls a client
// that sends its username/password with the greeting, so that the other
// tests, which run against the same server, would catch a pipelining client.
func TestServerCatchesPipelining(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
	}{
		{name: "greeting+auth", msg: []byte("\x05\x01\x02" + "\x01\x01u\x01p")},
		{name: "greeting+auth+request", msg: []byte("\x05\x01\x02" + "\x01\x01u\x01p" + "\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50")},
		{name: "greeting+request", msg: []byte("\x05\x01\x00" + "\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := sockstest.NewServer(t, sockstest.Config{Connect: sockstest.Echo}) // default window
			c, err := net.Dial(srv.Network(), srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tt.msg); err != nil { // one write: pipelined
				t.Fatal(err)
			}
			// The server must never answer. Wait well past its window.
			c.SetReadDeadline(time.Now().Add(10 * sockstest.DefaultPipelineWindow))
			var b [16]byte
			n, err := c.Read(b[:])
			if n != 0 || !isTimeout(err) {
				t.Fatalf("pipelining client got %d bytes %x, err %v; want a stalled server", n, b[:n], err)
			}
			if got := srv.Pipelined(); got != 1 {
				t.Errorf("Pipelined() = %d, want 1", got)
			}
			if len(srv.Requests()) != 0 {
				t.Errorf("server accepted a request from a pipelining client")
			}
		})
	}
	t.Run("client does not pipeline", func(t *testing.T) {
		srv := sockstest.NewServer(t, sockstest.Config{Connect: sockstest.Echo})
		c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("example.com", 80), socks.Auth{Username: "u", Password: "p"})
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		c.Close()
		if got := srv.Pipelined(); got != 0 {
			t.Errorf("Pipelined() = %d, want 0", got)
		}
	})
}

// allReplies lists every named reply code plus an unknown one.
var allReplies = []socks.Reply{
	socks.ReplyGeneralFailure, socks.ReplyNotAllowed, socks.ReplyNetworkUnreachable,
	socks.ReplyHostUnreachable, socks.ReplyConnectionRefused, socks.ReplyTTLExpired,
	socks.ReplyCommandNotSupported, socks.ReplyAddressNotSupported,
	socks.ReplyOnionDescNotFound, socks.ReplyOnionDescInvalid, socks.ReplyOnionIntroFailed,
	socks.ReplyOnionRendezvousFailed, socks.ReplyOnionMissingClientAuth, socks.ReplyOnionWrongClientAuth,
	socks.ReplyOnionInvalidAddress, socks.ReplyOnionIntroTimedOut,
	0x42,
}

func TestReplyCodes(t *testing.T) {
	for _, code := range allReplies {
		t.Run(code.String(), func(t *testing.T) {
			srv := newServer(t, sockstest.Config{Connect: sockstest.Refuse(code)})
			c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("example.onion", 80), socks.Auth{Username: "u", Password: "p"})
			if c != nil {
				t.Errorf("Connect returned a conn with error %v", err)
			}
			var re *socks.ReplyError
			if !errors.As(err, &re) || re.Reply != code || re.Command != socks.CmdConnect {
				t.Fatalf("Connect = %v, want *ReplyError with code %#x", err, byte(code))
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "socks connect: ") || strings.Contains(msg, "example") {
				t.Errorf("error %q: want a socks connect prefix and no destination", msg)
			}
		})
	}
}

func TestReplyString(t *testing.T) {
	seen := map[string]socks.Reply{}
	for _, code := range append([]socks.Reply{socks.ReplySucceeded}, allReplies[:len(allReplies)-1]...) {
		s := code.String()
		if s == "unknown" || s != strings.ToLower(s) || strings.ContainsAny(s, " -") {
			t.Errorf("Reply(%#x).String() = %q, want a lowercase snake_case label", byte(code), s)
		}
		if prev, dup := seen[s]; dup {
			t.Errorf("codes %#x and %#x share label %q", byte(prev), byte(code), s)
		}
		seen[s] = code
	}
	for _, tt := range []struct {
		code socks.Reply
		want string
	}{
		{code: socks.ReplyHostUnreachable, want: "host_unreachable"},
		{code: socks.ReplyOnionDescNotFound, want: "onion_desc_not_found"},
		{code: socks.ReplyOnionIntroTimedOut, want: "onion_intro_timed_out"},
		{code: 0x09, want: "unknown"},
		{code: 0xEF, want: "unknown"},
		{code: 0xF8, want: "unknown"},
	} {
		if got := tt.code.String(); got != tt.want {
			t.Errorf("Reply(%#x).String() = %q, want %q", byte(tt.code), got, tt.want)
		}
	}
}

func TestValidation(t *testing.T) {
	srv := newServer(t, sockstest.Config{Connect: sockstest.Echo})
	d := srv.Dialer()
	ok := socks.HostPort("example.com", 80)
	tests := []struct {
		name string
		dst  socks.Addr
		auth socks.Auth
		want string // in the error message
	}{
		{name: "empty addr", dst: socks.Addr{Port: 80}, want: "neither a hostname nor an IP"},
		{name: "port 0", dst: socks.HostPort("example.com", 0), want: "port 0"},
		{name: "long name", dst: socks.HostPort(strings.Repeat("a", 256), 80), want: "256 bytes"},
		{name: "nul in name", dst: socks.HostPort("evil\x00.example.com", 80), want: "NUL"},
		{name: "long user", dst: ok, auth: socks.Auth{Username: strings.Repeat("u", 256), Password: "p"}, want: "username is 256 bytes"},
		{name: "long password", dst: ok, auth: socks.Auth{Username: "u", Password: strings.Repeat("p", 256)}, want: "password is 256 bytes"},
		{name: "empty password", dst: ok, auth: socks.Auth{Username: "u"}, want: "empty password"},
		{name: "password only", dst: ok, auth: socks.Auth{Password: "p"}, want: "password without username"},
		{name: "prop 351 prefix", dst: ok, auth: socks.Auth{Username: "<torS0X>0", Password: "tok"}, want: "proposal 351"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Connect(testCtx(t), tt.dst, tt.auth)
			if !errors.Is(err, socks.ErrInvalidRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Connect = %v, want ErrInvalidRequest mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "evil") {
				t.Errorf("error %q leaks the hostname", err)
			}
		})
	}
	if _, err := d.Resolve(testCtx(t), "", socks.Auth{}); !errors.Is(err, socks.ErrInvalidRequest) {
		t.Errorf("Resolve(\"\") = %v, want ErrInvalidRequest", err)
	}
	if _, err := d.ResolvePTR(testCtx(t), netip.Addr{}, socks.Auth{}); !errors.Is(err, socks.ErrInvalidRequest) {
		t.Errorf("ResolvePTR(invalid) = %v, want ErrInvalidRequest", err)
	}
	if _, err := (&socks.Dialer{}).Connect(testCtx(t), ok, socks.Auth{}); err == nil {
		t.Errorf("Connect with nil Dial succeeded")
	}
	if n := srv.Stats().Accepted; n != 0 {
		t.Errorf("invalid requests opened %d connections, want 0", n)
	}
}

func TestNewDialer(t *testing.T) {
	for _, tt := range []struct {
		network, address string
		ok               bool
	}{
		{network: "tcp", address: "127.0.0.1:9050", ok: true},
		{network: "tcp", address: "[::1]:9050", ok: true},
		{network: "tcp4", address: "127.0.0.1:9050", ok: true},
		{network: "tcp6", address: "[::1]:9050", ok: true},
		{network: "unix", address: "/run/tor/socks", ok: true},
		{network: "tcp", address: "localhost:9050"},
		{network: "tcp", address: ":9050"},
		{network: "tcp", address: "127.0.0.1"},
		{network: "tcp", address: "127.0.0.1:0"},
		{network: "tcp4", address: "[::1]:9050"},
		{network: "tcp6", address: "127.0.0.1:9050"},
		{network: "udp", address: "127.0.0.1:9050"},
		{network: "unix", address: ""},
		{network: "unix", address: "/tmp/" + strings.Repeat("x", 200)},
	} {
		d, err := socks.NewDialer(tt.network, tt.address)
		if (err == nil) != tt.ok || (err == nil && d.Dial == nil) {
			t.Errorf("NewDialer(%q, %q) = %v, want ok=%v", tt.network, tt.address, err, tt.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "socks dialer: ") {
			t.Errorf("error %q lacks context", err)
		}
	}
}

func TestDialError(t *testing.T) {
	// A closed listener's port: connection refused, like Tor being down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d, err := socks.NewDialer("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Connect(testCtx(t), socks.HostPort("example.com", 80), socks.Auth{})
	if err == nil || !strings.HasPrefix(err.Error(), "socks connect: dial server: ") {
		t.Fatalf("Connect to a closed port = %v, want a dial error", err)
	}
}

func TestResolve(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.7")
	v6 := netip.MustParseAddr("2001:db8::7")
	srv := newServer(t, sockstest.Config{
		Resolve: func(name string) (netip.Addr, socks.Reply) {
			switch name {
			case "v4.example":
				return v4, socks.ReplySucceeded
			case "v6.example":
				return v6, socks.ReplySucceeded
			case "ttl.example":
				return netip.Addr{}, socks.ReplyTTLExpired
			}
			return netip.Addr{}, socks.ReplyHostUnreachable
		},
		ResolvePTR: func(ip netip.Addr) (string, socks.Reply) {
			switch ip {
			case v4:
				return "v4.example", socks.ReplySucceeded
			case v6:
				return "v6.example", socks.ReplySucceeded
			}
			return "", socks.ReplyHostUnreachable
		},
	})
	d := srv.Dialer()
	auth := socks.Auth{Username: "dns", Password: "1"}

	for _, tt := range []struct {
		name string
		want netip.Addr
		code socks.Reply
	}{
		{name: "v4.example", want: v4},
		{name: "v6.example", want: v6},
		{name: "nx.example", code: socks.ReplyHostUnreachable},
		{name: "ttl.example", code: socks.ReplyTTLExpired},
	} {
		ip, err := d.Resolve(testCtx(t), tt.name, auth)
		if tt.code != 0 {
			var re *socks.ReplyError
			if !errors.As(err, &re) || re.Reply != tt.code || re.Command != socks.CmdResolve {
				t.Errorf("Resolve(%s) = %v, %v; want *ReplyError %v", tt.name, ip, err, tt.code)
			}
			continue
		}
		if err != nil || ip != tt.want {
			t.Errorf("Resolve(%s) = %v, %v; want %v", tt.name, ip, err, tt.want)
		}
	}
	for _, tt := range []struct {
		ip   netip.Addr
		want string
		code socks.Reply
	}{
		{ip: v4, want: "v4.example"},
		{ip: v6, want: "v6.example"},
		{ip: netip.MustParseAddr("198.51.100.1"), code: socks.ReplyHostUnreachable},
	} {
		name, err := d.ResolvePTR(testCtx(t), tt.ip, auth)
		if tt.code != 0 {
			var re *socks.ReplyError
			if !errors.As(err, &re) || re.Reply != tt.code || re.Command != socks.CmdResolvePTR {
				t.Errorf("ResolvePTR(%v) = %q, %v; want *ReplyError %v", tt.ip, name, err, tt.code)
			}
			continue
		}
		if err != nil || name != tt.want {
			t.Errorf("ResolvePTR(%v) = %q, %v; want %q", tt.ip, name, err, tt.want)
		}
	}

	reqs := srv.Requests()
	if got := reqs[0]; got.Command != socks.CmdResolve || got.Dst != socks.HostPort("v4.example", 0) || got.Auth != auth {
		t.Errorf("first RESOLVE recorded as %+v", got)
	}
	if got := reqs[5]; got.Command != socks.CmdResolvePTR || got.Dst != (socks.Addr{IP: v6}) {
		t.Errorf("second RESOLVE_PTR recorded as %+v", got)
	}
	if st := srv.Stats(); st.Resolve != 4 || st.ResolvePTR != 3 || st.Connect != 0 {
		t.Errorf("Stats() = %+v, want 4 resolve and 3 resolve_ptr", st)
	}
	if n := srv.Active(); n != 0 {
		// The server may still be closing the last one; give it a moment.
		waitFor(t, func() bool { return srv.Active() == 0 }, "resolve connections to close")
	}
}

// waitFor polls cond for a while, for state that settles asynchronously.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestResolveDefaults(t *testing.T) {
	srv := newServer(t, sockstest.Config{})
	_, err := srv.Dialer().Resolve(testCtx(t), "example.com", socks.Auth{})
	var re *socks.ReplyError
	if !errors.As(err, &re) || re.Reply != socks.ReplyHostUnreachable {
		t.Errorf("default Resolve = %v, want host unreachable", err)
	}
	_, err = srv.Dialer().ResolvePTR(testCtx(t), netip.MustParseAddr("192.0.2.1"), socks.Auth{})
	if !errors.As(err, &re) || re.Reply != socks.ReplyHostUnreachable {
		t.Errorf("default ResolvePTR = %v, want host unreachable", err)
	}
	_, err = srv.Dialer().Connect(testCtx(t), socks.HostPort("example.com", 80), socks.Auth{})
	if !errors.As(err, &re) || re.Reply != socks.ReplyNotAllowed {
		t.Errorf("default Connect to a name = %v, want not allowed", err)
	}
}

// Scripting helpers for hostile servers.

// readGreeting reads the client's greeting and returns its method.
func readGreeting(c net.Conn) byte {
	var b [3]byte
	io.ReadFull(c, b[:])
	return b[2]
}

// readAuth reads an RFC 1929 message.
func readAuth(c net.Conn) {
	var b [2]byte
	io.ReadFull(c, b[:])
	io.ReadFull(c, make([]byte, b[1]))
	io.ReadFull(c, b[:1])
	io.ReadFull(c, make([]byte, b[0]))
}

// readRequest reads a request for a hostname, IPv4 or IPv6 destination.
func readRequest(c net.Conn) {
	var h [4]byte
	io.ReadFull(c, h[:])
	n := 4
	switch h[3] {
	case 0x04:
		n = 16
	case 0x03:
		var l [1]byte
		io.ReadFull(c, l[:])
		n = int(l[0])
	}
	io.ReadFull(c, make([]byte, n+2))
}

// closeWrite half-closes c: the client sees EOF.
func closeWrite(c net.Conn) { c.(interface{ CloseWrite() error }).CloseWrite() }

// waitClosed drains c and reports whether the client closed it. A client
// that closes with unread data in its buffer makes the kernel send a reset.
func waitClosed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	return err == nil || errors.Is(err, syscall.ECONNRESET)
}

// script returns a Raw handler that reads the greeting, answers with
// method, does the auth exchange if method is 0x02, and then runs rest. It
// then waits for the client to close, and reports on closed whether it did.
func script(method string, rest func(c net.Conn)) (raw func(net.Conn), closed <-chan bool) {
	ch := make(chan bool, 1)
	return func(c net.Conn) {
		readGreeting(c)
		io.WriteString(c, method)
		if method == "\x05\x02" {
			readAuth(c)
			io.WriteString(c, "\x01\x00")
		}
		if rest != nil {
			rest(c)
		}
		ch <- waitClosed(c)
	}, ch
}

func TestHostileServers(t *testing.T) {
	garbage := bytes.Repeat([]byte{0xAA}, 1<<16)
	tests := []struct {
		name  string
		auth  bool
		raw   func(c net.Conn)
		check func(error) bool
		want  string // in the error message
	}{
		{
			name: "closes before method reply",
			raw:  func(c net.Conn) { readGreeting(c); closeWrite(c) },
			want: "protocol error in method reply: EOF",
		},
		{
			name: "bad version in method reply",
			raw:  func(c net.Conn) { readGreeting(c); io.WriteString(c, "\x04\x00") },
			want: "method reply: unexpected version 0x04",
		},
		{
			name: "method not offered",
			raw:  func(c net.Conn) { readGreeting(c); io.WriteString(c, "\x05\x02") },
			want: "server chose method 0x02, offered only 0x00",
		},
		{
			name: "no-auth chosen when auth offered",
			auth: true,
			raw:  func(c net.Conn) { readGreeting(c); io.WriteString(c, "\x05\x00") },
			want: "server chose method 0x00, offered only 0x02",
		},
		{
			name:  "no acceptable method",
			raw:   func(c net.Conn) { readGreeting(c); io.WriteString(c, "\x05\xff") },
			check: func(err error) bool { return errors.Is(err, socks.ErrNoAcceptableMethod) },
		},
		{
			name: "auth failure",
			auth: true,
			raw: func(c net.Conn) {
				readGreeting(c)
				io.WriteString(c, "\x05\x02")
				readAuth(c)
				io.WriteString(c, "\x01\x01")
			},
			check: func(err error) bool { return errors.Is(err, socks.ErrAuthRejected) },
			want:  "status 0x01",
		},
		{
			name: "auth reply bad version",
			auth: true,
			raw: func(c net.Conn) {
				readGreeting(c)
				io.WriteString(c, "\x05\x02")
				readAuth(c)
				io.WriteString(c, "\x05\x00")
			},
			want: "auth reply: unexpected version 0x05",
		},
		{
			name: "truncated reply",
			raw: func(c net.Conn) {
				readGreeting(c)
				io.WriteString(c, "\x05\x00")
				readRequest(c)
				io.WriteString(c, "\x05\x00\x00\x01\x7f")
				closeWrite(c)
			},
			check: func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) },
		},
		{
			name: "bad atyp",
			raw: func(c net.Conn) {
				readGreeting(c)
				io.WriteString(c, "\x05\x00")
				readRequest(c)
				io.WriteString(c, "\x05\x00\x00\x09\x00\x00\x00\x00\x00\x00")
			},
			want: "unknown address type 0x09",
		},
		{
			name: "domain length 0",
			raw: func(c net.Conn) {
				readGreeting(c)
				io.WriteString(c, "\x05\x00")
				readRequest(c)
				io.WriteString(c, "\x05\x00\x00\x03\x00\x00\x00")
			},
			want: "empty hostname",
		},
		{
			name: "reserved byte set",
			raw: func(c net.Conn) {
				readGreeting(c)
				io.WriteString(c, "\x05\x00")
				readRequest(c)
				io.WriteString(c, "\x05\x00\x01\x01\x00\x00\x00\x00\x00\x00")
			},
			want: "non-zero reserved byte",
		},
		{
			name: "reply bad version",
			raw: func(c net.Conn) {
				readGreeting(c)
				io.WriteString(c, "\x05\x00")
				readRequest(c)
				io.WriteString(c, "\x04\x5a\x00\x00\x00\x00\x00\x00")
			},
			want: "protocol error in reply: unexpected version 0x04",
		},
		{
			name: "huge garbage instead of method reply",
			raw:  func(c net.Conn) { readGreeting(c); c.Write(garbage) },
			want: "unexpected version 0xaa",
		},
		{
			name: "huge garbage instead of reply",
			raw: func(c net.Conn) {
				readGreeting(c)
				io.WriteString(c, "\x05\x00")
				readRequest(c)
				c.Write(garbage)
			},
			want: "protocol error in reply: unexpected version 0xaa",
		},
		{
			name: "http server",
			raw: func(c net.Conn) {
				readGreeting(c)
				io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
			},
			want: "unexpected version 0x48",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clientClosed := make(chan bool, 1)
			srv := newServer(t, sockstest.Config{Raw: func(c net.Conn) {
				tt.raw(c)
				clientClosed <- waitClosed(c)
			}})
			auth := socks.Auth{}
			if tt.auth {
				auth = socks.Auth{Username: "u", Password: "p"}
			}
			c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("example.com", 80), auth)
			if c != nil {
				c.Close()
				t.Fatalf("Connect succeeded against a hostile server")
			}
			if tt.check != nil && !tt.check(err) {
				t.Errorf("Connect error %v fails the check", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "socks connect: ") {
				t.Errorf("Connect error %q, want it to contain %q", err, tt.want)
			}
			if tt.check == nil {
				var pe *socks.ProtocolError
				if !errors.As(err, &pe) {
					t.Errorf("Connect error %v is not a *ProtocolError", err)
				}
			}
			if !<-clientClosed {
				t.Errorf("client did not close the connection after the failure")
			}
		})
	}
}

func TestSlowServers(t *testing.T) {
	hang := func(c net.Conn) { io.Copy(io.Discard, c) }
	stages := []struct {
		name string
		raw  func(c net.Conn)
	}{
		{name: "silent after greeting", raw: func(c net.Conn) { readGreeting(c); hang(c) }},
		{name: "silent after request", raw: func(c net.Conn) {
			readGreeting(c)
			io.WriteString(c, "\x05\x00")
			readRequest(c)
			hang(c)
		}},
		{name: "half a reply", raw: func(c net.Conn) {
			readGreeting(c)
			io.WriteString(c, "\x05\x00")
			readRequest(c)
			io.WriteString(c, "\x05\x00\x00")
			hang(c)
		}},
	}
	for _, st := range stages {
		t.Run(st.name+"/deadline", func(t *testing.T) {
			srv := newServer(t, sockstest.Config{Raw: st.raw})
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := srv.Dialer().Connect(ctx, socks.HostPort("example.com", 80), socks.Auth{})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Connect = %v, want context.DeadlineExceeded", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Connect returned %v after a 100ms deadline", d)
			}
		})
		t.Run(st.name+"/cancel", func(t *testing.T) {
			srv := newServer(t, sockstest.Config{Raw: st.raw})
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(50*time.Millisecond, cancel)
			_, err := srv.Dialer().Connect(ctx, socks.HostPort("example.com", 80), socks.Auth{})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Connect = %v, want context.Canceled", err)
			}
		})
	}
	t.Run("already cancelled", func(t *testing.T) {
		srv := newServer(t, sockstest.Config{Connect: sockstest.Echo})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := srv.Dialer().Connect(ctx, socks.HostPort("example.com", 80), socks.Auth{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Connect = %v, want context.Canceled", err)
		}
	})
	t.Run("hanging connect handler", func(t *testing.T) {
		srv := newServer(t, sockstest.Config{Connect: sockstest.Hang})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := srv.Dialer().Resolve(ctx, "example.com", socks.Auth{})
		var re *socks.ReplyError
		if !errors.As(err, &re) { // Hang is for CONNECT only; resolve fails at once
			t.Fatalf("Resolve = %v, want a reply error", err)
		}
		_, err = srv.Dialer().Connect(ctx, socks.HostPort("example.com", 80), socks.Auth{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Connect = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("trickling server", func(t *testing.T) {
		// Every byte in its own write: the client must assemble partial
		// reads and still succeed.
		trickle := func(c net.Conn, s string) {
			for i := range len(s) {
				c.Write([]byte{s[i]})
				time.Sleep(time.Millisecond)
			}
		}
		srv := newServer(t, sockstest.Config{Raw: func(c net.Conn) {
			readGreeting(c)
			trickle(c, "\x05\x00")
			readRequest(c)
			trickle(c, "\x05\x00\x00\x03\x09localhost\x00\x50"+"data")
			io.Copy(io.Discard, c)
		}})
		c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("example.com", 80), socks.Auth{})
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		defer c.Close()
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "data" {
			t.Fatalf("stream = %q, %v; want data", got, err)
		}
	})
}

// TestDataAfterReply checks that bytes the server sends in the same write as
// its reply reach the caller, whatever the reply's address type.
func TestDataAfterReply(t *testing.T) {
	for _, tt := range []struct {
		name, reply string
	}{
		{name: "ipv4", reply: okReply},
		{name: "ipv6", reply: "\x05\x00\x00\x04" + strings.Repeat("\x00", 15) + "\x01\x23\x45"},
		{name: "domain", reply: "\x05\x00\x00\x03\x0bexample.com\x01\xbb"},
	} {
		for _, auth := range []socks.Auth{{}, {Username: "u", Password: "p"}} {
			t.Run(tt.name+"/auth="+auth.Username, func(t *testing.T) {
				const data = "HTTP/1.1 200 OK\r\n\r\nhello"
				method := "\x05\x00"
				if auth.Username != "" {
					method = "\x05\x02"
				}
				raw, closed := script(method, func(c net.Conn) {
					readRequest(c)
					io.WriteString(c, tt.reply+data) // one write: reply and stream
				})
				srv := newServer(t, sockstest.Config{Raw: raw})
				c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("example.com", 80), auth)
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(io.LimitReader(c, int64(len(data))))
				if err != nil || string(got) != data {
					t.Errorf("stream = %q, %v; want %q", got, err, data)
				}
				c.Close()
				<-closed
			})
		}
	}
}

// TestResolveHostile checks answers of the wrong kind.
func TestResolveHostile(t *testing.T) {
	raw, _ := script("\x05\x00", func(c net.Conn) {
		readRequest(c)
		io.WriteString(c, "\x05\x00\x00\x03\x0bexample.com\x00\x00")
	})
	srv := newServer(t, sockstest.Config{Raw: raw})
	_, err := srv.Dialer().Resolve(testCtx(t), "example.com", socks.Auth{})
	var pe *socks.ProtocolError
	if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "socks resolve: ") {
		t.Errorf("Resolve answered with a hostname = %v, want *ProtocolError", err)
	}

	raw, _ = script("\x05\x00", func(c net.Conn) {
		readRequest(c)
		io.WriteString(c, okReply)
	})
	srv = newServer(t, sockstest.Config{Raw: raw})
	_, err = srv.Dialer().ResolvePTR(testCtx(t), netip.MustParseAddr("192.0.2.1"), socks.Auth{})
	if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "socks resolve_ptr: ") {
		t.Errorf("ResolvePTR answered with an address = %v, want *ProtocolError", err)
	}
}

func TestAddrString(t *testing.T) {
	for _, tt := range []struct {
		a    socks.Addr
		want string
	}{
		{a: socks.HostPort("example.com", 80), want: "example.com:80"},
		{a: socks.AddrFromAddrPort(netip.MustParseAddrPort("192.0.2.1:443")), want: "192.0.2.1:443"},
		{a: socks.AddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::1]:443")), want: "[2001:db8::1]:443"},
		{a: socks.Addr{Port: 1}, want: ":1"},
	} {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.a, got, tt.want)
		}
	}
}

// recordConn answers reads from a script and records what the client
// writes.
type recordConn struct {
	net.Conn // nil: any other method panics
	r        *strings.Reader
	sent     bytes.Buffer
	writes   []string
	local    net.Addr // LocalAddr's answer
}

func (c *recordConn) LocalAddr() net.Addr { return c.local }

func (c *recordConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *recordConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, string(p))
	return c.sent.Write(p)
}
func (c *recordConn) Close() error                     { return nil }
func (c *recordConn) SetDeadline(time.Time) error      { return nil }
func (c *recordConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }

// TestPipeline checks the writes of a pipelining Dialer: the greeting
// alone, then the auth message and the request together (what Tor
// accepts), and without a username the same writes as without Pipeline;
// over TCP, each message alone (Dialer.Pipeline says why).
func TestPipeline(t *testing.T) {
	req := "\x05\x01\x00\x03\x0bexample.com\x01\xbb"
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	for _, tt := range []struct {
		name   string
		auth   socks.Auth
		local  net.Addr
		script string
		want   []string
		err    error
	}{
		{name: "auth over tcp", auth: socks.Auth{Username: "tg1", Password: "x"}, local: tcp, script: "\x05\x02" + "\x01\x00" + okReply,
			want: []string{"\x05\x01\x02", "\x01\x03tg1\x01x", req}},
		{name: "auth over unix", auth: socks.Auth{Username: "tg1", Password: "x"}, local: &net.UnixAddr{Net: "unix"}, script: "\x05\x02" + "\x01\x00" + okReply,
			want: []string{"\x05\x01\x02", "\x01\x03tg1\x01x" + req}},
		{name: "auth", auth: socks.Auth{Username: "tg1", Password: "x"}, script: "\x05\x02" + "\x01\x00" + okReply,
			want: []string{"\x05\x01\x02", "\x01\x03tg1\x01x" + req}},
		{name: "no auth", script: "\x05\x00" + okReply,
			want: []string{"\x05\x01\x00", req}},
		{name: "rejected", auth: socks.Auth{Username: "tg1", Password: "x"}, script: "\x05\x02" + "\x01\x01",
			want: []string{"\x05\x01\x02", "\x01\x03tg1\x01x" + req}, err: socks.ErrAuthRejected},
		{name: "refused", auth: socks.Auth{Username: "tg1", Password: "x"}, script: "\x05\x02" + "\x01\x00" + "\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00",
			want: []string{"\x05\x01\x02", "\x01\x03tg1\x01x" + req}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &recordConn{r: strings.NewReader(tt.script), local: tt.local}
			d := &socks.Dialer{Dial: func(context.Context) (net.Conn, error) { return c, nil }, Pipeline: true}
			_, err := d.Connect(t.Context(), socks.HostPort("example.com", 443), tt.auth)
			var re *socks.ReplyError
			switch {
			case tt.name == "refused":
				if !errors.As(err, &re) || re.Reply != socks.ReplyConnectionRefused {
					t.Fatalf("Connect = %v, want connection refused", err)
				}
			case !errors.Is(err, tt.err):
				t.Fatalf("Connect = %v, want %v", err, tt.err)
			}
			if !slices.Equal(c.writes, tt.want) {
				t.Errorf("writes %q, want %q", c.writes, tt.want)
			}
		})
	}
	t.Run("sockstest", func(t *testing.T) {
		srv := newServer(t, sockstest.Config{RequireAuth: true, Connect: sockstest.Echo})
		d := srv.Dialer()
		d.Pipeline = true
		auth := socks.Auth{Username: strings.Repeat("U", 255), Password: strings.Repeat("P", 255)}
		c, err := d.Connect(testCtx(t), socks.HostPort(strings.Repeat("n", 255), 80), auth)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		echoRoundTrip(t, c, "hi")
		c.Close()
		if got := srv.Requests()[0].Auth; got != auth {
			t.Errorf("server got auth %q/%q", got.Username, got.Password)
		}
	})
}

// TestDialerBytes compares what the Dialer sends with hand-written bytes.
// The tests against sockstest's server check the request as the server
// parsed it, with socks.ServerReader from this package; these catch a bug
// that the encoder and that reader would share.
func TestDialerBytes(t *testing.T) {
	auth := socks.Auth{Username: "tg1", Password: "x"}
	for _, tt := range []struct {
		name   string
		script string // the server's answers
		run    func(d *socks.Dialer) error
		want   string
	}{
		{
			name:   "connect ipv4",
			script: "\x05\x00" + okReply,
			run: func(d *socks.Dialer) error {
				_, err := d.Connect(t.Context(), socks.Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 80}, socks.Auth{})
				return err
			},
			want: "\x05\x01\x00" + "\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50",
		},
		{
			name:   "connect ipv6 with auth",
			script: "\x05\x02" + "\x01\x00" + okReply,
			run: func(d *socks.Dialer) error {
				_, err := d.Connect(t.Context(), socks.Addr{IP: netip.MustParseAddr("2001:db8::7"), Port: 443}, auth)
				return err
			},
			want: "\x05\x01\x02" + "\x01\x03tg1\x01x" +
				"\x05\x01\x00\x04\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07\x01\xbb",
		},
		{
			name:   "connect hostname with auth",
			script: "\x05\x02" + "\x01\x00" + okReply,
			run: func(d *socks.Dialer) error {
				_, err := d.Connect(t.Context(), socks.HostPort("example.com", 443), auth)
				return err
			},
			want: "\x05\x01\x02" + "\x01\x03tg1\x01x" + "\x05\x01\x00\x03\x0bexample.com\x01\xbb",
		},
		{
			name:   "resolve",
			script: "\x05\x00" + "\x05\x00\x00\x01\xc0\x00\x02\x07\x00\x00",
			run: func(d *socks.Dialer) error {
				_, err := d.Resolve(t.Context(), "example.com", socks.Auth{})
				return err
			},
			want: "\x05\x01\x00" + "\x05\xf0\x00\x03\x0bexample.com\x00\x00",
		},
		{
			name:   "resolve_ptr",
			script: "\x05\x00" + "\x05\x00\x00\x03\x0bexample.com\x00\x00",
			run: func(d *socks.Dialer) error {
				_, err := d.ResolvePTR(t.Context(), netip.MustParseAddr("192.0.2.7"), socks.Auth{})
				return err
			},
			want: "\x05\x01\x00" + "\x05\xf1\x00\x01\xc0\x00\x02\x07\x00\x00",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &recordConn{r: strings.NewReader(tt.script)}
			d := &socks.Dialer{Dial: func(context.Context) (net.Conn, error) { return c, nil }}
			if err := tt.run(d); err != nil {
				t.Fatal(err)
			}
			if got := c.sent.String(); got != tt.want {
				t.Errorf("sent %x, want %x", got, tt.want)
			}
		})
	}
}
