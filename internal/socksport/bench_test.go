package socksport

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/tunnel"
)

// nopTunnel answers every request at once.
type nopTunnel struct{}

func (nopTunnel) ConnectPort(_ context.Context, s tunnel.PortStream) socks.Reply {
	s.Reply(socks.ReplyHostUnreachable)
	return socks.ReplyHostUnreachable
}
func (nopTunnel) ResolvePort(context.Context, tunnel.PortClient, string) (netip.Addr, socks.Reply) {
	return netip.Addr{}, socks.ReplyHostUnreachable
}
func (nopTunnel) ResolvePTRPort(context.Context, tunnel.PortClient, netip.Addr) (string, socks.Reply) {
	return "", socks.ReplyHostUnreachable
}

// BenchmarkHandshake is the Server's own cost of one connection: a Tor
// Browser handshake (username/password, CONNECT by name) read, answered
// and handed on, without the network or the tunnel.
func BenchmarkHandshake(b *testing.B) {
	s, err := New(Config{Tunnel: nopTunnel{}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	hello := []byte("\x05\x02\x00\x02" + "\x01\x0bexample.com\x08nonce123" + "\x05\x01\x00\x03\x0bexample.com\x01\xbb")
	who := netip.MustParseAddr("10.152.152.11")
	b.ReportAllocs()
	for b.Loop() {
		s.ServeTCP(&fakeRequest{who: who, port: 9150, conn: &scriptConn{r: bytes.NewReader(hello)}})
	}
}
