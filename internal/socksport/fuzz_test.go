package socksport

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/tunnel"
)

// scriptConn is a client that sends data, then ends its side, and whose
// replies go nowhere: a handshake runs to its end without timers.
type scriptConn struct {
	r      *bytes.Reader
	closed atomic.Bool
}

func (c *scriptConn) Read(b []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	return c.r.Read(b)
}
func (c *scriptConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *scriptConn) Close() error                     { c.closed.Store(true); return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// checkTunnel stands in for the tunnel and checks what the Server passes
// on: well-formed requests only, of the workstation that sent them.
type checkTunnel struct {
	t    *testing.T
	who  netip.Addr
	data []byte
}

func (k *checkTunnel) client(c tunnel.PortClient) {
	if c.Who != k.who || c.Port != 9150 {
		k.t.Fatalf("client %+v, want %v on 9150", c, k.who)
	}
	if len(c.User) > 255 || len(c.Pass) > 255 {
		k.t.Fatalf("credentials of %d and %d bytes", len(c.User), len(c.Pass))
	}
}

func (k *checkTunnel) ConnectPort(_ context.Context, s tunnel.PortStream) socks.Reply {
	k.client(s.PortClient)
	if (s.Dst.Name == "") == !s.Dst.IP.IsValid() || len(s.Dst.Name) > 255 || s.Dst.Port == 0 {
		k.t.Fatalf("CONNECT to %#v", s.Dst)
	}
	// The early bytes, then what the client sent while Tor dialled, are
	// what followed the request, in order: a run of the input. (Not
	// always its end: the reader's buffer and the dial watch each take
	// what had arrived, and a long input goes on beyond them.)
	after := s.Early
	if s.More != nil {
		after = append(after[:len(after):len(after)], s.More()...)
	}
	if !bytes.Contains(k.data, after) {
		k.t.Fatalf("early bytes %x are not a run of the input %x", after, k.data)
	}
	s.Reply(socks.ReplyHostUnreachable)
	return socks.ReplyHostUnreachable
}

func (k *checkTunnel) ResolvePort(_ context.Context, c tunnel.PortClient, name string) (netip.Addr, socks.Reply) {
	k.client(c)
	if name == "" || len(name) > 255 {
		k.t.Fatalf("RESOLVE of %q", name)
	}
	return netip.MustParseAddr("2001:db8::1"), socks.ReplySucceeded
}

func (k *checkTunnel) ResolvePTRPort(_ context.Context, c tunnel.PortClient, ip netip.Addr) (string, socks.Reply) {
	k.client(c)
	if !ip.IsValid() {
		k.t.Fatal("RESOLVE_PTR of no address")
	}
	return "host.example", socks.ReplySucceeded
}

// FuzzServeTCP: whatever a client sends, ServeTCP returns without a
// panic, hands the tunnel only well-formed requests, closes the
// connection, gives its handshake slot back and counts the connection.
func FuzzServeTCP(f *testing.F) {
	for _, seed := range []string{
		"\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x00\x50GET /",
		"\x05\x02\x00\x02\x01\x0bexample.com\x05nonce\x05\x01\x00\x01\xc0\x00\x02\x01\x01\xbb",
		"\x05\x01\x00\x05\xf0\x00\x03\x0bexample.com\x00\x00",
		"\x05\x01\x00\x05\xf1\x00\x04\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00",
		"\x05\x01\x00\x05\xf1\x00\x03\x07127.0.1\x00\x00",
		"\x05\x01\x00\x05\x02\x00\x01\xc0\x00\x02\x01\x00\x50",
		"\x04\x01\x00\x50\x00\x00\x00\x01user\x00example.com\x00early",
		"\x04\xf0\x00\x00\x00\x00\x00\x01\x00example.com\x00",
		"\x04\xf1\x00\x00\xc0\x00\x02\x01\x00",
		"GET / HTTP/1.1\r\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		who := netip.MustParseAddr("10.152.152.11")
		s, err := New(Config{Tunnel: &checkTunnel{t: t, who: who, data: data}})
		if err != nil {
			t.Fatal(err)
		}
		c := &scriptConn{r: bytes.NewReader(data)}
		s.ServeTCP(&fakeRequest{who: who, port: 9150, conn: c})
		if !c.closed.Load() {
			t.Fatal("connection left open")
		}
		if held, total := s.pool.Held(who); held != 0 || total != 0 || testutil.ToFloat64(s.active) != 0 {
			t.Fatalf("handshake slots held after the call: %d of %d", held, total)
		}
		if n := testutil.CollectAndCount(s.connections); n != 3 {
			t.Fatalf("%d connection series", n)
		}
		var conns float64
		for _, v := range []string{"socks5", "socks4", "none"} {
			conns += testutil.ToFloat64(s.connections.WithLabelValues(v))
		}
		if conns != 1 {
			t.Fatalf("connections counted %v times", conns)
		}
		s.Close()
	})
}
