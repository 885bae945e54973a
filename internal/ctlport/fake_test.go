package ctlport

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/internal/torctl"
)

var (
	gw   = netip.MustParseAddr("10.152.152.10")
	gw6  = netip.MustParseAddr("fd19:c33d:88bc::10")
	wsA  = netip.MustParseAddr("10.152.152.11")
	wsB  = netip.MustParseAddr("10.152.152.12")
	port = uint16(9051)
)

// fakeFlow is a flow.Request whose connection is one end of a net.Pipe
// (or a given conn), so tests run in a synctest bubble.
type fakeFlow struct {
	who      netip.Addr
	dst      netip.AddrPort
	conn     net.Conn
	mu       sync.Mutex
	rejected bool
	accepted bool
	decided  chan struct{} // closed at the first Accept or Reject
}

// decide marks f decided; f.mu held.
func (f *fakeFlow) decide() {
	if f.decided != nil && !f.rejected && !f.accepted {
		close(f.decided)
	}
}

var (
	_ flow.Request = (*fakeFlow)(nil)
	_ Tor          = (*torctl.Tor)(nil) // what the router passes as Config.Tor
)

func (f *fakeFlow) Who() netip.Addr     { return f.who }
func (f *fakeFlow) Src() netip.AddrPort { return netip.AddrPortFrom(f.who, 40000) }
func (f *fakeFlow) Dst() netip.AddrPort { return f.dst }
func (f *fakeFlow) Accept() (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rejected || f.accepted || f.conn == nil {
		return nil, errors.New("fake flow: no connection")
	}
	f.decide()
	f.accepted = true
	return f.conn, nil
}
func (f *fakeFlow) Reject() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decide()
	f.rejected = true
	if f.conn != nil && !f.accepted {
		f.conn.Close()
	}
}

func (f *fakeFlow) wasRejected() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rejected
}

// fakeTor answers GETINFO from a table and records what it was asked.
type fakeTor struct {
	mu    sync.Mutex
	info  map[string]string
	asked []string
	calls int
	err   error
}

func newFakeTor() *fakeTor {
	return &fakeTor{info: map[string]string{
		"version":                    "0.4.9.1",
		"status/circuit-established": "1",
		"status/bootstrap-phase":     `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`,
		"consensus/valid-after":      "2026-12-05 07:00:00",
		"consensus/fresh-until":      "2026-12-05 08:00:00",
		"consensus/valid-until":      "2026-12-05 10:00:00",
		// What a real Tor would leak if ctlport ever asked:
		"address":             "203.0.113.7",
		"circuit-status":      "1 BUILT $AAAA~guard,$BBBB~middle,$CCCC~exit",
		"net/listeners/socks": `"127.0.0.1:9050"`,
	}}
}

func (f *fakeTor) GetInfo(ctx context.Context, keys ...string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.asked = append(f.asked, keys...)
	if f.err != nil {
		return nil, f.err
	}
	m := map[string]string{}
	for _, k := range keys {
		v, ok := f.info[k]
		if !ok {
			return nil, errors.New("552 Unrecognized key")
		}
		m[k] = v
	}
	return m, nil
}

func (f *fakeTor) askedKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

func (f *fakeTor) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// identities records NewIdentity calls.
type identities struct {
	mu   sync.Mutex
	who  []netip.Addr
	at   []time.Time
	fail error
}

func (n *identities) NewIdentity(who netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fail != nil {
		return n.fail
	}
	n.who = append(n.who, who)
	n.at = append(n.at, time.Now())
	return nil
}

func (n *identities) get() []netip.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.who)
}

// socksOn is a Config.SOCKSListeners for the gateway's two addresses.
func socksOn(local netip.Addr) []netip.AddrPort {
	switch local {
	case gw:
		return []netip.AddrPort{netip.AddrPortFrom(gw, 9150)}
	case gw6:
		return []netip.AddrPort{netip.AddrPortFrom(gw6, 9150), netip.AddrPortFrom(gw6, 9050)}
	}
	return nil
}

type harness struct {
	t   testing.TB
	srv *Server
	tor *fakeTor
	ids *identities
}

// newHarness returns a Server on a fakeTor; edit adjusts the Config.
func newHarness(t testing.TB, edit func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, tor: newFakeTor(), ids: &identities{}}
	cfg := Config{
		Tor:            func(netip.Addr) Tor { return h.tor },
		NewIdentity:    h.ids.NewIdentity,
		SOCKSListeners: socksOn,
		Logger:         testlog.New(t, slog.LevelDebug),
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	t.Cleanup(func() { srv.Close() })
	return h
}

// client is the workstation's end of a control connection.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	flow *fakeFlow
}

// dial serves a new connection from who to local:9051.
func (h *harness) dial(who, local netip.Addr) *client {
	h.t.Helper()
	ws, gwEnd := net.Pipe()
	f := &fakeFlow{who: who, dst: netip.AddrPortFrom(local, port), conn: gwEnd, decided: make(chan struct{})}
	// As the stack does: ServeTCP on a goroutine of the flow's own, which
	// serves the connection; dial returns once the flow is decided.
	go h.srv.ServeTCP(f)
	<-f.decided
	h.t.Cleanup(func() { ws.Close() })
	return &client{t: h.t, conn: ws, r: bufio.NewReader(ws), flow: f}
}

// authed dials and authenticates.
func (h *harness) authed(who netip.Addr) *client {
	h.t.Helper()
	c := h.dial(who, gw)
	if got := c.cmd("AUTHENTICATE"); !slices.Equal(got, []string{"250 OK"}) {
		h.t.Fatalf("AUTHENTICATE = %q", got)
	}
	return c
}

// cmd sends line and returns the reply's lines, data lines included.
func (c *client) cmd(line string) []string {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
	return c.readReply()
}

// readReply reads one reply; nil if the connection closed first.
func (c *client) readReply() []string {
	c.t.Helper()
	var lines []string
	data := false
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			if len(lines) > 0 {
				c.t.Fatalf("connection ended within a reply: %q: %v", lines, err)
			}
			return nil
		}
		if !strings.HasSuffix(l, "\r\n") {
			c.t.Fatalf("reply line %q does not end in CRLF", l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		lines = append(lines, l)
		switch {
		case data:
			data = l != "."
		case len(l) >= 4 && l[3] == '+':
			data = true
		case len(l) >= 4 && l[3] == ' ', len(l) == 3:
			return lines
		}
	}
}

// closed reports whether the server closed the connection.
func (c *client) closed() bool {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.r.ReadByte()
	return err != nil
}
