package torgate_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/internal/netns"
	"github.com/torgate/torgate/internal/testnet"
)

// routerEOFGrace is the router's eofGrace: how long an end of stream from
// a plain SOCKS upstream with the caller's readiness is held before it
// becomes a FIN; a Tor's ends must not wait that long.
const routerEOFGrace = 250 * time.Millisecond

// closingServer answers every request with a short HTTP/1.0 body and
// closes: the end of the response is the end of the connection. It sends
// the time of each close on the returned channel.
func closingServer(t *testing.T, ip netip.Addr) (netip.AddrPort, <-chan time.Time) {
	closed := make(chan time.Time, 64)
	addr := requestServer(t, ip, func(c net.Conn) {
		c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nclosing\n"))
		c.Close()
		closed <- time.Now()
	})
	return addr, closed
}

// eofLatencies fetches from the closing server at port (by byIPAddr,
// through the gateway) n times, from a socket in the workstation
// namespace, and returns how long after the server's close each end of
// stream reached the workstation. Every end must be a FIN (io.ReadAll
// without error), with the whole body.
func eofLatencies(t *testing.T, g *gateway, port uint16, closed <-chan time.Time, n int) []time.Duration {
	t.Helper()
	addr := net.JoinHostPort(byIPAddr, strconv.Itoa(int(port)))
	var lat []time.Duration
	for i := range n {
		var body []byte
		var rerr error
		var endAt time.Time
		err := netns.Do(g.ws.Name, func() error {
			c, err := net.DialTimeout("tcp", addr, 60*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
				return err
			}
			body, rerr = io.ReadAll(c)
			endAt = time.Now()
			return nil
		})
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		if rerr != nil {
			kind := "error"
			if errors.Is(rerr, syscall.ECONNRESET) {
				kind = "RST"
			}
			t.Fatalf("fetch %d: the end of a complete response arrived as a %s (%v), not a FIN", i, kind, rerr)
		}
		if want := "closing\n"; len(body) < len(want) || string(body[len(body)-len(want):]) != want {
			t.Fatalf("fetch %d: body %q", i, body)
		}
		select {
		case closeAt := <-closed:
			lat = append(lat, endAt.Sub(closeAt))
		case <-time.After(5 * time.Second):
			t.Fatalf("fetch %d: the server never closed", i)
		}
	}
	return lat
}

func roundAll(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.Round(100 * time.Microsecond).String()
	}
	return fmt.Sprint(s)
}

// checkAttachedFIN: an attached Tor's process is not inspected, and a
// stream the server ends reaches the workstation as a FIN once Tor
// confirmed it over the control connection (torctl.Tor.Confirm), with no
// grace: well under routerEOFGrace after the server's close. The
// latencies are logged.
func checkAttachedFIN(t *testing.T, g *gateway, n *testnet.Network) {
	if gone, known := g.tor.ProcessState(); gone || known {
		t.Fatalf("attached tor on %s: ProcessState = gone %v, known %v; want neither (Confirm decides)", n.ControlAddr, gone, known)
	}
	web, closed := closingServer(t, n.WebAddr.Addr())
	lat := eofLatencies(t, g, web.Port(), closed, 8)
	t.Logf("attached, confirmed: FIN %v after the server's close (min %v)", roundAll(lat), slices.Min(lat).Round(100*time.Microsecond))
	// The minimum, not each: one slow relay cell on a loaded box says
	// nothing about the grace, and with the grace no end arrives before it.
	if m := slices.Min(lat); m >= routerEOFGrace {
		t.Errorf("fastest FIN %v after the server's close: the grace (%v) applies to an attached Tor instead of a confirmation", m, routerEOFGrace)
	}
}

// relay forwards every connection to its listener to target, from this
// process: a stand-in for socat or an SSH forward in front of a control
// port.
func relay(t *testing.T, target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, a, b)
			mu.Unlock()
			go func() { io.Copy(a, b); a.Close() }()
			go func() { io.Copy(b, a); b.Close() }()
		}
	}()
	return ln.Addr().String()
}

// checkRelayed: through a relay an attached Tor's ends of stream are
// confirmed with Tor over the relayed control connection like any other
// (torctl.Tor.Confirm): FINs, without the grace a plain SOCKS upstream's
// ends wait.
func checkRelayed(t *testing.T, n *testnet.Network) {
	g := newGateway(t, torgate.Config{AttachedTor: &torgate.AttachedTor{ControlAddr: relay(t, n.ControlAddr)}})
	web, closed := closingServer(t, n.WebAddr.Addr())
	lat := eofLatencies(t, g, web.Port(), closed, 3)
	t.Logf("attached through a relay: FIN %v after the server's close", roundAll(lat))
	if m := slices.Min(lat); m >= routerEOFGrace {
		t.Errorf("fastest FIN %v after the server's close: an attached Tor's ends through a relay wait a grace (%v) instead of a confirmation", m, routerEOFGrace)
	}
}
