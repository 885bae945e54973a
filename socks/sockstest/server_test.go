package sockstest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// window keeps the pipelining check short in these tests.
const window = 5 * time.Millisecond

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// noServerGoroutines fails if any goroutine of a Server is still running.
func noServerGoroutines(t *testing.T) {
	t.Helper()
	var stacks []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks = buf[:runtime.Stack(buf, true)]
		if !bytes.Contains(stacks, []byte("sockstest.(*Server)")) {
			return
		}
	}
	t.Fatalf("server goroutines left after Close:\n%s", stacks)
}

func TestDialMapHTTP(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Host)
	}))
	defer web.Close()
	srv := sockstest.NewServer(t, sockstest.Config{
		PipelineWindow: window,
		Connect: sockstest.DialMap(map[socks.Addr]string{
			socks.HostPort("example.com", 80):        web.Listener.Addr().String(),
			socks.HostPort("elsewhere.example", 80):  "192.0.2.1:80", // not loopback: never dialed
			socks.HostPort("refused.example", 80):    closedPort(t),
			socks.HostPort("not-an-address.test", 1): "example.com:80",
		}),
	})
	d := srv.Dialer()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			var p uint16
			fmt.Sscan(port, &p)
			return d.Connect(ctx, socks.HostPort(host, p), socks.Auth{Username: "web", Password: "1"})
		},
	}}
	defer client.CloseIdleConnections()

	resp, err := client.Get("http://example.com/")
	if err != nil {
		t.Fatalf("GET through the server: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello example.com" {
		t.Errorf("body = %q", body)
	}

	for _, tt := range []struct {
		dst  socks.Addr
		want socks.Reply
	}{
		{dst: socks.HostPort("unknown.example", 80), want: socks.ReplyHostUnreachable},
		{dst: socks.HostPort("elsewhere.example", 80), want: socks.ReplyNotAllowed},
		{dst: socks.HostPort("refused.example", 80), want: socks.ReplyConnectionRefused},
		{dst: socks.HostPort("not-an-address.test", 1), want: socks.ReplyNotAllowed},
	} {
		_, err := d.Connect(testCtx(t), tt.dst, socks.Auth{})
		var re *socks.ReplyError
		if !errors.As(err, &re) || re.Reply != tt.want {
			t.Errorf("Connect(%v) = %v, want reply %v", tt.dst, err, tt.want)
		}
	}
	if reqs := srv.Requests(); reqs[0].Dst != socks.HostPort("example.com", 80) || reqs[0].Auth.Username != "web" {
		t.Errorf("first request recorded as %+v", reqs[0])
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestDialLoopbackDefault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.WriteString(c, "banner")
			c.Close()
		}
	}()
	srv := sockstest.NewServer(t, sockstest.Config{PipelineWindow: window})
	c, err := srv.Dialer().Connect(testCtx(t), socks.AddrFromAddrPort(netip.MustParseAddrPort(ln.Addr().String())), socks.Auth{})
	if err != nil {
		t.Fatalf("Connect to a loopback destination: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "banner" {
		t.Errorf("stream = %q, %v", got, err)
	}
}

// TestRelayHalfClose checks that each end-of-stream crosses the relay as a
// half-close: the upstream sees EOF while it can still answer.
func TestRelayHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c) // until the client's half-close
		fmt.Fprintf(c, "got %d bytes", n)
	}()
	srv := sockstest.NewServer(t, sockstest.Config{
		PipelineWindow: window,
		Connect:        sockstest.DialTo(func(socks.Addr) string { return ln.Addr().String() }),
	})
	c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("upload.example", 443), socks.Auth{})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(make([]byte, 100000)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 100000 bytes" {
		t.Errorf("answer = %q, %v", got, err)
	}
	c.Close()
	waitActive(t, srv)
}

// waitActive waits until the server has closed every client connection.
func waitActive(t *testing.T, srv *sockstest.Server) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); srv.Active() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Active() = %d, want 0", srv.Active())
		}
	}
}

func TestEchoAndDiscard(t *testing.T) {
	for _, unix := range []bool{false, true} {
		srv := sockstest.NewServer(t, sockstest.Config{Unix: unix, PipelineWindow: window, Connect: sockstest.Echo})
		t.Run(srv.Network()+"/echo", func(t *testing.T) {
			c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("echo.example", 7), socks.Auth{})
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := strings.Repeat("echo ", 10000)
			go func() {
				io.WriteString(c, msg)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != msg {
				t.Errorf("echo of %d bytes = %d bytes, %v", len(msg), len(got), err)
			}
		})
	}
	srv := sockstest.NewServer(t, sockstest.Config{PipelineWindow: window, Connect: sockstest.Discard})
	c, err := srv.Dialer().Connect(testCtx(t), socks.HostPort("sink.example", 9), socks.Auth{})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "dropped")
	c.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
		t.Errorf("discard answered %q, %v", got, err)
	}
}

// rawExchange dials srv, writes the greeting in msg, reads the method reply,
// writes the rest of msg, half-closes and returns everything the server sent
// until it closed the connection.
func rawExchange(t *testing.T, srv *sockstest.Server, msg string) []byte {
	t.Helper()
	c, err := net.Dial(srv.Network(), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Greeting first, then the rest: this client must not pipeline either.
	n := min(2+int(msg[1]), len(msg))
	io.WriteString(c, msg[:n])
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil {
		return m[:0]
	}
	io.WriteString(c, msg[n:])
	c.(interface{ CloseWrite() error }).CloseWrite() // done: let the server see EOF
	rest, _ := io.ReadAll(c)
	return append(m[:], rest...)
}

func TestStrictness(t *testing.T) {
	srv := sockstest.NewServer(t, sockstest.Config{PipelineWindow: window, Connect: sockstest.Echo})
	for _, tt := range []struct {
		name, msg, want, violation string
	}{
		{name: "bind", msg: "\x05\x01\x00" + "\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50",
			want: "\x05\x00" + "\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"},
		{name: "udp associate", msg: "\x05\x01\x00" + "\x05\x03\x00\x01\x7f\x00\x00\x01\x00\x50",
			want: "\x05\x00" + "\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"},
		{name: "bad atyp", msg: "\x05\x01\x00" + "\x05\x01\x00\x05\x7f\x00\x00\x01\x00\x50",
			want: "\x05\x00" + "\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00", violation: "address type 0x05"},
		{name: "reserved byte", msg: "\x05\x01\x00" + "\x05\x01\x01\x01\x7f\x00\x00\x01\x00\x50",
			want: "\x05\x00" + "\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00", violation: "reserved byte"},
		{name: "port 0", msg: "\x05\x01\x00" + "\x05\x01\x00\x03\x01a\x00\x00",
			want: "\x05\x00" + "\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00", violation: "port 0"},
		{name: "empty name", msg: "\x05\x01\x00" + "\x05\x01\x00\x03\x00\x00\x50",
			want: "\x05\x00" + "\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00", violation: "empty hostname"},
		{name: "ptr of a name", msg: "\x05\x01\x00" + "\x05\xf1\x00\x03\x01a\x00\x00",
			want: "\x05\x00" + "\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00"},
		{name: "no methods", msg: "\x05\x00\x00", want: "", violation: "no methods"},
		{name: "gssapi only", msg: "\x05\x01\x01", want: "\x05\xff"},
		{name: "auth version", msg: "\x05\x01\x02" + "\x05\x01u\x01p", want: "\x05\x02", violation: "auth: unexpected version 0x05"},
		{name: "socks4", msg: "\x04\x01\x00\x50\x7f\x00\x00\x01\x00", want: "", violation: "greeting: unexpected version 0x04"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(srv.Errors())
			if got := rawExchange(t, srv, tt.msg); string(got) != tt.want {
				t.Errorf("server answered %x, want %x", got, tt.want)
			}
			errs := srv.Errors()[before:]
			if tt.violation == "" && len(errs) != 0 || tt.violation != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.violation)) {
				t.Errorf("violations %v, want %q", errs, tt.violation)
			}
		})
	}
	st := srv.Stats()
	if st.Other != 2 || st.Connect != 1 || st.ResolvePTR != 1 || st.Accepted != 11 {
		t.Errorf("Stats() = %+v", st)
	}
}

// TestEarlyStreamBytes: stream bytes sent in the same write as the request,
// before the reply, reach the upstream (here the echo) ahead of the rest.
func TestEarlyStreamBytes(t *testing.T) {
	srv := sockstest.NewServer(t, sockstest.Config{PipelineWindow: window, Connect: sockstest.Echo})
	got := rawExchange(t, srv, "\x05\x01\x00"+"\x05\x01\x00\x03\x0bexample.com\x00\x50"+"early bytes")
	if want := "\x05\x00" + "\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00" + "early bytes"; string(got) != want {
		t.Errorf("server answered %q, want %q", got, want)
	}
	if errs := srv.Errors(); len(errs) != 0 {
		t.Errorf("violations %v", errs)
	}
}

func TestRequireAuth(t *testing.T) {
	srv := sockstest.NewServer(t, sockstest.Config{PipelineWindow: window, RequireAuth: true})
	if got := rawExchange(t, srv, "\x05\x01\x00"); string(got) != "\x05\xff" {
		t.Errorf("no-auth client got %x, want 05ff", got)
	}
	if got := rawExchange(t, srv, "\x05\x02\x00\x02"+"\x01\x01u\x01p"); string(got) != "\x05\x02\x01\x00" {
		t.Errorf("auth client got %x, want method 02 and auth success", got)
	}
}

// TestCloseEndsEverything checks that Close unblocks every kind of
// connection and leaves no goroutine behind.
func TestCloseEndsEverything(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() { // an upstream that never answers nor closes
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	srv := sockstest.NewServer(t, sockstest.Config{
		PipelineWindow: window,
		Connect: func(req sockstest.Request) (socks.Reply, net.Conn) {
			if req.Dst.Port == 1 {
				return sockstest.Hang(req)
			}
			return sockstest.DialTo(func(socks.Addr) string { return up.Addr().String() })(req)
		},
	})
	d := srv.Dialer()
	ctx := testCtx(t)

	hung := make(chan error, 1)
	go func() {
		_, err := d.Connect(ctx, socks.HostPort("hang.example", 1), socks.Auth{})
		hung <- err
	}()
	relayed, err := d.Connect(ctx, socks.HostPort("relay.example", 2), socks.Auth{})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer relayed.Close()
	pipelined, err := net.Dial(srv.Network(), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer pipelined.Close()
	io.WriteString(pipelined, "\x05\x01\x02\x01\x01u\x01p")
	for srv.Pipelined() == 0 || len(srv.Requests()) < 2 {
		time.Sleep(time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("server never saw all three clients")
		}
	}

	srv.Close()
	srv.Close() // idempotent
	noServerGoroutines(t)

	if err := <-hung; err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging Connect = %v, want a prompt error when the server closes", err)
	}
	relayed.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := relayed.Read(make([]byte, 1)); err == nil {
		t.Errorf("relayed stream still open after Close")
	}
	if _, err := net.Dial(srv.Network(), srv.Addr()); err == nil {
		t.Errorf("server still accepts after Close")
	}
}

func TestRawTakesOver(t *testing.T) {
	srv := sockstest.NewServer(t, sockstest.Config{Unix: true, Raw: func(c net.Conn) {
		io.WriteString(c, "not socks")
	}})
	c, err := net.Dial(srv.Network(), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "not socks" {
		t.Errorf("raw server sent %q, %v", got, err)
	}
	if st := srv.Stats(); st.Accepted != 1 {
		t.Errorf("Stats() = %+v", st)
	}
}
