package socksport

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/internal/wstest"
	"github.com/torgate/torgate/netstack"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
	"github.com/torgate/torgate/tunnel"
)

// TestOverNetstack runs the SOCKS ports as the router will: workstations
// with TCP stacks of their own (wstest) connect to the gateway's address
// through torgate's gVisor stack, whose connections the Server reads and
// the tunnel relays (TryRead and NotifyRead, after the handshake's
// blocking reads with a deadline).
func TestOverNetstack(t *testing.T) {
	hub, ws := wstest.New(t, 1500, wsA, wsB)
	tor := sockstest.NewServer(t, sockstest.Config{Connect: sockstest.Echo})
	iso, _ := tunnel.NewIsolator(tunnel.IsolateSource, nil)
	tn, err := tunnel.New(tunnel.Config{Upstream: tor.Dialer(), Isolator: iso})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Tunnel: tn})
	if err != nil {
		t.Fatal(err)
	}
	st, err := netstack.New(netstack.Config{
		Device: hub,
		TCP: netstack.TCPHandlerFunc(func(f flow.Request) {
			// The router's mux: the gateway's own address on a SOCKS port.
			if f.Dst().Addr() == gateway && (f.Dst().Port() == 9050 || f.Dst().Port() == 9150) {
				srv.ServeTCP(f)
				return
			}
			f.Reject()
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Start()
	t.Cleanup(func() {
		srv.Close()
		tn.Close()
		st.Close()
	})
	dialer := func(w *wstest.Workstation, port uint16) *socks.Dialer {
		return &socks.Dialer{Dial: func(ctx context.Context) (net.Conn, error) {
			return w.Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(gateway, port))
		}}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// A bulk stream both ways, through the relay.
	c, err := dialer(ws[0], 9150).Connect(ctx, socks.HostPort(onion, 80), socks.Auth{Username: "example.com", Password: "n"})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	go c.Write(payload)
	got := make([]byte, len(payload))
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("1 MiB echo: %v", err)
	}
	c.Close()

	// Early data pipelined with a SOCKS4a request.
	raw, err := ws[1].Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(gateway, 9050))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	raw.Write([]byte("\x04\x01\x00\x50\x00\x00\x00\x01\x00example.com\x00early"))
	want := "\x00\x5a\x00\x00\x00\x00\x00\x00early"
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(raw, buf); err != nil || string(buf) != want {
		t.Fatalf("SOCKS4a with early data: %q, %v", buf, err)
	}

	// Forbidden: a failure reply over the stack, nothing dialed.
	n := tor.Stats().Accepted
	if _, err := dialer(ws[1], 9050).Connect(ctx, socks.Addr{IP: gateway, Port: 22}, socks.Auth{}); replyCode(err) != socks.ReplyNotAllowed {
		t.Fatalf("CONNECT to the gateway itself: %v, want not allowed", err)
	}
	if tor.Stats().Accepted != n {
		t.Fatal("Tor was dialed for a forbidden destination")
	}

	// The same with a request body pipelined behind the request: the
	// reply still arrives, then a clean end, not a reset that could make
	// the workstation drop the reply unread.
	raw, err = ws[1].Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(gateway, 9050))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	raw.Write(append([]byte("\x05\x01\x00\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50"), make([]byte, 32<<10)...))
	got, err = io.ReadAll(raw)
	if want := "\x05\x00\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"; err != nil || string(got) != want {
		t.Fatalf("forbidden with a pipelined body: %x, %v; want %x, then EOF", got, err, want)
	}
}
