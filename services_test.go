package torgate_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// The gateway's addresses as the fixture's workstations reach its
// services (Config.ServiceAddrs: on a TUN they are given).
var (
	svc4 = netip.MustParseAddr("10.152.152.10")
	svc6 = netip.MustParseAddr("fd19:7a2b::10")
)

func withServices(c *torgate.Config) { c.ServiceAddrs = []netip.Addr{svc4, svc6} }

// ctlSession is a workstation's control-port connection.
type ctlSession struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (f *fixture) control(t *testing.T, from netip.Addr, gw netip.Addr) *ctlSession {
	t.Helper()
	c, err := f.dial(t, from, netip.AddrPortFrom(gw, torgate.DefaultControlPort))
	if err != nil {
		t.Fatalf("control port %s from %s: %v", gw, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return &ctlSession{t: t, c: c, r: bufio.NewReader(c)}
}

// ask sends one command and returns the reply's lines.
func (s *ctlSession) ask(cmd string) []string {
	s.t.Helper()
	s.c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(s.c, "%s\r\n", cmd)
	var lines []string
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("%s: %v (so far %q)", cmd, err, lines)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) >= 4 && l[3] == ' ' {
			return lines
		}
	}
}

// TestControlPortPerWorkstation: the filtered control port answers on
// the gateway's addresses, IPv4 and IPv6, inside the router's stack;
// NEWNYM gives the asking workstation new circuits and no other; what
// would reveal the gateway is refused; the gateway's other ports stay
// closed.
func TestControlPortPerWorkstation(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, withServices, ws1, ws2, ws6)
	creds := func(from netip.Addr) socks.Auth {
		conn, err := f.dial(t, from, dst4)
		if err != nil {
			t.Fatal(err)
		}
		transfer(conn, 16, 0)
		conn.Close()
		reqs := f.socks.Requests()
		return reqs[len(reqs)-1].Auth
	}
	a1, b1 := creds(ws1), creds(ws2)

	s := f.control(t, ws1, svc4)
	if l := s.ask("AUTHENTICATE"); l[0] != "250 OK" {
		t.Fatalf("AUTHENTICATE: %q", l)
	}
	if l := s.ask("GETINFO net/listeners/socks"); l[0] != `250-net/listeners/socks="10.152.152.10:9150"` {
		t.Errorf("net/listeners/socks: %q", l)
	}
	for _, refused := range []string{"GETINFO address", "SETCONF SocksPort=0", "SAVECONF", "GETINFO ns/all", "TAKEOWNERSHIP", "GETINFO circuit-status"} {
		if l := s.ask(refused); !strings.HasPrefix(l[len(l)-1], "5") {
			t.Errorf("%s answered %q, want a refusal", refused, l)
		}
	}
	if l := s.ask("SIGNAL NEWNYM"); l[0] != "250 OK" {
		t.Fatalf("SIGNAL NEWNYM: %q", l)
	}
	if a2, b2 := creds(ws1), creds(ws2); a2 == a1 || b2 != b1 {
		t.Errorf("NEWNYM from ws1: ws1's credentials changed %v, ws2's unchanged %v; want true, true", a2 != a1, b2 == b1)
	}

	s6 := f.control(t, ws6, svc6)
	s6.ask("AUTHENTICATE")
	if l := s6.ask("GETINFO net/listeners/socks"); l[0] != `250-net/listeners/socks="[fd19:7a2b::10]:9150"` {
		t.Errorf("net/listeners/socks over IPv6: %q", l)
	}

	// The gateway's other ports are no service: a RST, and Tor never
	// hears of it.
	before := len(f.socks.Requests())
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(svc4, 22), netip.AddrPortFrom(svc6, 2222)} {
		from := ws1
		if dst.Addr().Is6() {
			from = ws6
		}
		if c, err := f.dial(t, from, dst); err == nil {
			c.Close()
			t.Errorf("%s accepted a flow", dst)
		} else if !isRefused(err) {
			t.Errorf("%s: %v, want a RST", dst, err)
		}
	}
	if n := len(f.socks.Requests()); n != before {
		t.Errorf("flows to the gateway reached the upstream: %v", f.socks.Requests()[before:])
	}
}

// TestServicesOff: with the services off, their ports are closed like any
// other port of the gateway.
func TestServicesOff(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, func(c *torgate.Config) {
		withServices(c)
		c.NoControlPort, c.NoSOCKSPorts = true, true
	}, ws1)
	for _, p := range []uint16{torgate.DefaultControlPort, 9150, 9050} {
		if c, err := f.dial(t, ws1, netip.AddrPortFrom(svc4, p)); err == nil {
			c.Close()
			t.Errorf("port %d accepted with the services off", p)
		} else if !isRefused(err) {
			t.Errorf("port %d: %v, want a RST", p, err)
		}
	}
}

// socksVia connects to dst through the gateway's SOCKS port gw:port from
// workstation from, with the client credentials auth, and returns the
// credentials the upstream (Tor) saw.
func (f *fixture) socksVia(t *testing.T, from netip.Addr, gw netip.AddrPort, auth socks.Auth) socks.Auth {
	t.Helper()
	d := &socks.Dialer{Dial: func(ctx context.Context) (net.Conn, error) {
		return f.ws[from].Net.DialContextTCPAddrPort(ctx, gw)
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := d.Connect(ctx, socks.HostPort("example.org", 80), auth)
	if err != nil {
		t.Fatalf("SOCKS from %s via %s: %v", from, gw, err)
	}
	transfer(c, 16, 0)
	c.Close()
	reqs := f.socks.Requests()
	return reqs[len(reqs)-1].Auth
}

// TestSOCKSPortPerWorkstation: the SOCKS ports, on the gateway's IPv4 and
// IPv6 addresses, derive what Tor sees from (workstation, port, the
// client's credentials): equal inputs share, any difference separates, no
// workstation can pick another's; the control port's NEWNYM rotates them
// for its workstation only.
func TestSOCKSPortPerWorkstation(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, withServices, ws1, ws2, ws6)
	p := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
	ax := socks.Auth{Username: "a", Password: "x"}
	a1 := f.socksVia(t, ws1, p(svc4, 9150), ax)
	if a1 == ax {
		t.Fatal("the client's own credentials reached the upstream")
	}
	if again := f.socksVia(t, ws1, p(svc4, 9150), ax); again != a1 {
		t.Error("the same workstation, port and credentials got other credentials")
	}
	if other := f.socksVia(t, ws1, p(svc4, 9150), socks.Auth{Username: "b", Password: "x"}); other == a1 {
		t.Error("two client usernames share credentials")
	}
	if other := f.socksVia(t, ws1, p(svc4, 9100), ax); other == a1 {
		t.Error("two ports share credentials")
	}
	b1 := f.socksVia(t, ws2, p(svc4, 9150), ax)
	if b1 == a1 {
		t.Error("two workstations sending the same credentials share what Tor sees")
	}
	if v6 := f.socksVia(t, ws6, p(svc6, 9150), ax); v6 == a1 || v6 == b1 {
		t.Error("a third workstation (over IPv6) got another's credentials")
	}
	s := f.control(t, ws1, svc4)
	s.ask("AUTHENTICATE")
	if l := s.ask("SIGNAL NEWNYM"); l[0] != "250 OK" {
		t.Fatalf("NEWNYM: %q", l)
	}
	if a2, b2 := f.socksVia(t, ws1, p(svc4, 9150), ax), f.socksVia(t, ws2, p(svc4, 9150), ax); a2 == a1 || b2 != b1 {
		t.Errorf("after ws1's NEWNYM: ws1's changed %v (want true), ws2's kept %v (want true)", a2 != a1, b2 == b1)
	}
}

// TestSOCKSPortFailsClosed: while Tor is not ready a SOCKS request gets a
// failure reply and the upstream is never asked; a forbidden destination
// gets "not allowed".
func TestSOCKSPortFailsClosed(t *testing.T) {
	var ready atomic.Bool
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, func(c *torgate.Config) {
		withServices(c)
		c.Ready = ready.Load
	}, ws1)
	d := &socks.Dialer{Dial: func(ctx context.Context) (net.Conn, error) {
		return f.ws[ws1].Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(svc4, 9150))
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var re *socks.ReplyError
	if _, err := d.Connect(ctx, socks.HostPort("example.org", 80), socks.Auth{}); !errors.As(err, &re) {
		t.Errorf("not ready: %v, want a SOCKS failure reply", err)
	}
	ready.Store(true)
	if _, err := d.Connect(ctx, socks.AddrFromAddrPort(netip.MustParseAddrPort("10.152.152.12:22")), socks.Auth{}); !errors.As(err, &re) || re.Reply != socks.ReplyNotAllowed {
		t.Errorf("a LAN destination: %v, want reply %v", err, socks.ReplyNotAllowed)
	}
	if reqs := f.socks.Requests(); len(reqs) != 0 {
		t.Errorf("the upstream was asked: %+v", reqs)
	}
}
