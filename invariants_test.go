package torgate_test

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/torgate/torgate"
	"github.com/torgate/torgate/dns"
	"github.com/torgate/torgate/internal/testlog"
	"github.com/torgate/torgate/netstack"
	"github.com/torgate/torgate/socks"
	"github.com/torgate/torgate/socks/sockstest"
)

// TestDestinationsNotLogged runs refused flows, named flows and DNS
// queries with debug logging and checks no destination appears.
func TestDestinationsNotLogged(t *testing.T) {
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixture(t, sockstest.Config{Connect: sockstest.Refuse(socks.ReplyHostUnreachable)}, func(c *torgate.Config) {
		c.Logger = log
	}, ws1)
	va := firstAddr(query(t, f, ws1, netip.MustParseAddr("10.152.152.10"), false, "secret-site.example.", dnsmessage.TypeA))
	for _, d := range []netip.AddrPort{netip.MustParseAddrPort("203.0.113.77:443"), netip.AddrPortFrom(va, 443)} {
		if c, err := f.dial(t, ws1, d); err == nil {
			c.Close()
		}
	}
	f.r.Close()
	out := logs.String()
	if !strings.Contains(out, "level=DEBUG") {
		t.Fatalf("no debug logs at all; the test proves nothing:\n%s", out)
	}
	for _, secret := range []string{"203.0.113.77", "secret-site", va.String()} {
		if strings.Contains(out, secret) {
			t.Errorf("logs name destination %q:\n%s", secret, out)
		}
	}
}

// dnsPacket builds a raw IPv4/UDP DNS query from src to dst.
func dnsPacket(src, dst netip.Addr, sport uint16, id uint16) []byte {
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("flood.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	payload, _ := q.Pack()
	b := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: 53, Length: uint16(header.UDPMinimumSize + len(payload))})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFrom4(src.As4()), tcpip.AddrFrom4(dst.As4()), u.Length())
	u.SetChecksum(^u.CalculateChecksum(checksum.Checksum(payload, xsum)))
	return b
}

// TestDNSFloodIsBounded: a burst of queries in resolve mode against an
// upstream that never answers is capped by the worker pool (dns's); the
// excess is a counted drop, and goroutines stay bounded.
func TestDNSFloodIsBounded(t *testing.T) {
	f := newFixture(t, sockstest.Config{Raw: hangRaw}, func(c *torgate.Config) {
		c.DNSMode = torgate.DNSResolve
	}, ws1)
	base := runtime.NumGoroutine()
	for i := range 5000 {
		f.hub.Inject(dnsPacket(ws1, netip.MustParseAddr("198.51.100.53"), uint16(10000+i), uint16(i)))
	}
	ds := f.r.DNS()
	// The flood comes from one source: its share of the workers runs out
	// first (RefusedShare), before the pool does (RefusedOverload).
	waitFor(t, func() bool { return ds.Stats().Refused[dns.TransportUDP][dns.RefusedShare] > 0 })
	// Every query is accounted for: a worker holds it (its goroutine
	// waits on the silent upstream) or it was dropped. Only then does the
	// count below see the whole flood.
	waitFor(t, func() bool {
		st := ds.Stats()
		return st.Messages+st.Refused[dns.TransportUDP][dns.RefusedShare]+st.Refused[dns.TransportUDP][dns.RefusedOverload] >= 5000
	})
	if g := runtime.NumGoroutine() - base; g > 2000 {
		t.Fatalf("%d goroutines after a DNS flood", g)
	}
	st := ds.Stats()
	t.Logf("queries handled %d, dropped over the source's share %d", st.Messages, st.Refused[dns.TransportUDP][dns.RefusedShare])
	if n := st.Refused[dns.TransportUDP][dns.RefusedOverload]; n != 0 {
		t.Errorf("%d queries of one source refused as overload: its share should run out first", n)
	}
}

// hangRaw is a SOCKS server that accepts and never says a word.
func hangRaw(c net.Conn) { io.Copy(io.Discard, c) }

func synPacket(src, dst netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: sport, DstPort: dport, SeqNum: 1, DataOffset: header.TCPMinimumSize,
		Flags: header.TCPFlagSyn, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpip.AddrFrom4(src.As4()), tcpip.AddrFrom4(dst.As4()), header.TCPMinimumSize)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return b
}

// TestSYNFloodIsBounded: a source spraying SYNs at an upstream that never
// answers holds at most MaxDialsPerSource dials; the rest get RSTs, and
// another source still gets through.
func TestSYNFloodIsBounded(t *testing.T) {
	hang := netip.MustParseAddr("203.0.113.9")
	var hung atomic.Int64
	f := newFixture(t, sockstest.Config{Connect: func(r sockstest.Request) (socks.Reply, net.Conn) {
		if r.Dst.IP == hang {
			hung.Add(1)
			return sockstest.Hang(r)
		}
		return sockstest.Echo(r)
	}, PipelineWindow: -1}, func(c *torgate.Config) { c.MaxDialsPerSource = 64 }, ws1, ws2)
	base := runtime.NumGoroutine()
	for i := range 5000 {
		f.hub.Inject(synPacket(ws1, hang, uint16(20000+i), 443))
	}
	// Every SYN is accounted for: dropped over the source's share of
	// pending handshakes, refused by the tunnel (a RST), or a dial that
	// hangs at the upstream. Only then does the count below see the
	// whole flood.
	st := f.r.Stack().Stats()
	accounted := func() int64 {
		return int64(st.Drops[netstack.ReasonShare].Load()) + int64(metricSum(t, f.r.Tunnel().Metrics(), "flows_refused_total")) + hung.Load()
	}
	waitCond(t, 30*time.Second, func() bool { return accounted() >= 5000 })
	t.Logf("SYNs: %d over the share, %v refused, %d hanging", st.Drops[netstack.ReasonShare].Load(), metricSum(t, f.r.Tunnel().Metrics(), "flows_refused_total"), hung.Load())
	if n := hung.Load(); n > 64 {
		t.Fatalf("%d dials hang at the upstream, want at most MaxDialsPerSource (64)", n)
	}
	if g := runtime.NumGoroutine() - base; g > 1500 {
		t.Fatalf("%d goroutines after a SYN flood", g)
	}
	conn, err := f.dial(t, ws2, dst4)
	if err != nil {
		t.Fatalf("another source starved by a SYN flood: %v", err)
	}
	conn.Close()
}

// TestICMPUnreachableFlag: silence by default (TestDroppedTrafficIsCounted);
// with the flag, dropped UDP is answered with ICMP port unreachable, and
// still counted.
func TestICMPUnreachableFlag(t *testing.T) {
	f := newFixture(t, sockstest.Config{Connect: sockstest.Echo}, func(c *torgate.Config) { c.ICMPUnreachable = true }, ws1)
	before := f.hub.Delivered(ws1)
	uc, err := f.ws[ws1].Net.DialUDPAddrPort(netip.AddrPort{}, netip.MustParseAddrPort("192.0.2.10:443"))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.Write([]byte("quic?"))
	waitFor(t, func() bool { return f.hub.Delivered(ws1) > before })
	if n := f.r.Stack().Stats().Drops[netstack.ReasonUDP].Load(); n == 0 {
		t.Fatal("UDP answered with ICMP but not counted as a drop")
	}
}
