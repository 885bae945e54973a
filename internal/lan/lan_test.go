package lan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestARPReply(t *testing.T) {
	tests := []struct {
		name   string
		ethDst mac
	}{
		{name: "broadcast", ethDst: broadcastMAC},
		{name: "unicast", ethDst: gwMAC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, w := testDevice(t)
			w.send(arpFrame(header.ARPRequest, tt.ethDst, wsMAC, ws4, mac{}, gw4.Addr()))
			r := decodeARP(t, w.next(t))
			want := arpMsg{ethDst: wsMAC, op: header.ARPReply, sha: gwMAC, spa: gw4.Addr(), tha: wsMAC, tpa: ws4}
			if r != want {
				t.Fatalf("reply %+v, want %+v", r, want)
			}
			// The asker is not learned from its request: torgate asks
			// it itself, and its answer binds ws4 to wsMAC.
			answer(t, w, ws4, wsMAC)
			awaitBound(t, d, ws4)
			write(t, d, ipv4(other, ws4))
			if f := w.next(t); ethDst(f) != wsMAC || be16(f[12:14]) != ethTypeIPv4 {
				t.Fatalf("packet went to %x type %#x", ethDst(f), be16(f[12:14]))
			}
			if got := d.Stats().Sent[sentARPReply].Load(); got != 1 {
				t.Errorf("arp replies sent %d, want 1", got)
			}
		})
	}
}

func TestARPNotForUs(t *testing.T) {
	d, w := testDevice(t)
	// A request for another workstation: no reply, nothing learned.
	w.send(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, ws4b))
	// An ARP probe (RFC 5227) for our address is defended to all.
	w.send(arpFrame(header.ARPRequest, broadcastMAC, ws2MAC, netip.IPv4Unspecified(), mac{}, gw4.Addr()))
	r := decodeARP(t, w.next(t))
	if r.ethDst != broadcastMAC || r.op != header.ARPReply || r.spa != gw4.Addr() {
		t.Fatalf("probe defence %+v", r)
	}
	write(t, d, ipv4(other, ws4))
	r = decodeARP(t, w.next(t))
	if r.op != header.ARPRequest || r.ethDst != broadcastMAC || r.tpa != ws4 || r.spa != gw4.Addr() || r.sha != gwMAC {
		t.Fatalf("want a broadcast request for %v, got %+v", ws4, r)
	}
	if d.Stats().Drop("arp_ignored") != 1 {
		t.Errorf("arp_ignored %d, want 1", d.Stats().Drop("arp_ignored"))
	}
}

func TestGratuitousARP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		// Unknown sender: gratuitous ARP creates nothing.
		w.send(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, ws4))
		synctest.Wait()
		write(t, d, ipv4(other, ws4))
		synctest.Wait()
		if r := decodeARP(t, w.next(t)); r.op != header.ARPRequest {
			t.Fatalf("want a request, got %+v", r)
		}
		w.send(arpFrame(header.ARPReply, gwMAC, wsMAC, ws4, gwMAC, gw4.Addr()))
		synctest.Wait()
		if f := w.next(t); ethDst(f) != wsMAC {
			t.Fatalf("queued packet to %x", ethDst(f))
		}
		// Another MAC claims the address: the entry stays with the MAC
		// that answered torgate, which is probed (unicast).
		time.Sleep(2 * probeInterval)
		w.send(arpFrame(header.ARPReply, broadcastMAC, ws2MAC, ws4, broadcastMAC, ws4))
		synctest.Wait()
		write(t, d, ipv4(other, ws4))
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		sawPacket, sawProbe := false, false
		for range 2 {
			f := w.next(t)
			if ethDst(f) != wsMAC {
				t.Fatalf("after gratuitous ARP a frame went to %x, want %x", ethDst(f), wsMAC)
			}
			if be16(f[12:14]) == ethTypeIPv4 {
				sawPacket = true
				continue
			}
			if r := decodeARP(t, f); r.op == header.ARPRequest && r.tpa == ws4 {
				sawProbe = true
			}
		}
		if !sawPacket || !sawProbe {
			t.Fatalf("packet %v, unicast probe %v: want both", sawPacket, sawProbe)
		}
		// A packet from ws4 sent from ws2MAC is spoofed.
		w.send(ethFrame(gwMAC, ws2MAC, header.IPv4ProtocolNumber, ipv4(ws4, other)))
		synctest.Wait()
		if got := d.Stats().Drop("spoofed_source"); got != 1 {
			t.Fatalf("spoofed_source %d, want 1", got)
		}
		// The bound MAC stays silent: the address is free again, and
		// the next resolution binds whoever answers.
		time.Sleep(maxProbes*probeInterval + time.Second)
		synctest.Wait()
		for len(w.fromDev) > 0 {
			<-w.fromDev
		}
		w.send(ethFrame(gwMAC, ws2MAC, header.IPv4ProtocolNumber, ipv4(ws4, other)))
		synctest.Wait()
		answer(t, w, ws4, ws2MAC)
		synctest.Wait()
		if got := readPacket(t, d); !bytes.Equal(got, ipv4(ws4, other)) {
			t.Fatalf("held packet % x", got)
		}
		// A reply not addressed to us (another THA) teaches nothing.
		w.send(arpFrame(header.ARPReply, broadcastMAC, wsMAC, ws4b, ws2MAC, gw4.Addr()))
		synctest.Wait()
		write(t, d, ipv4(other, ws4b))
		synctest.Wait()
		if r := decodeARP(t, w.next(t)); r.op != header.ARPRequest || r.tpa != ws4b {
			t.Fatalf("want a request for %v, got %+v", ws4b, r)
		}
	})
}

func TestNeighbourSolicitation(t *testing.T) {
	all := netip.MustParseAddr("ff02::1")
	tests := []struct {
		name      string
		frame     []byte
		wantDst   mac
		wantIP    netip.Addr
		target    netip.Addr
		wantFlags uint8
	}{
		{
			name:    "multicast global",
			frame:   nsFrame(mcastMAC(solicited(gw6.Addr())), wsMAC, ws6, solicited(gw6.Addr()), gw6.Addr(), &wsMAC, 255),
			wantDst: wsMAC, wantIP: ws6, target: gw6.Addr(), wantFlags: naFlagRouter | naFlagSolic | naFlagOverr,
		},
		{
			name:    "unicast link-local",
			frame:   nsFrame(gwMAC, wsMAC, wsLL, gwLL, gwLL, nil, 255),
			wantDst: wsMAC, wantIP: wsLL, target: gwLL, wantFlags: naFlagRouter | naFlagSolic | naFlagOverr,
		},
		{
			name:    "dad",
			frame:   nsFrame(mcastMAC(solicited(gw6.Addr())), wsMAC, netip.IPv6Unspecified(), solicited(gw6.Addr()), gw6.Addr(), nil, 255),
			wantDst: mcastMAC(all), wantIP: all, target: gw6.Addr(), wantFlags: naFlagRouter | naFlagOverr,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, w := testDevice(t)
			w.send(tt.frame)
			na := decodeNDP(t, w.next(t))
			want := ndpMsg{ethDst: tt.wantDst, lla: gwMAC, src: tt.target, dst: tt.wantIP, target: tt.target, typ: header.ICMPv6NeighborAdvert, flags: tt.wantFlags}
			if na != want {
				t.Fatalf("NA %+v\nwant %+v", na, want)
			}
		})
	}
}

func TestNDPDropped(t *testing.T) {
	rs := ethFrame(mcastMAC(netip.MustParseAddr("ff02::2")), wsMAC, header.IPv6ProtocolNumber,
		ipv6(wsLL, netip.MustParseAddr("ff02::2"), 58, 255, []byte{133, 0, 0, 0, 0, 0, 0, 0}))
	tests := []struct {
		name   string
		frame  []byte
		reason string
	}{
		{name: "hop limit 64", frame: nsFrame(gwMAC, wsMAC, ws6, gw6.Addr(), gw6.Addr(), &wsMAC, 64), reason: "ndp_invalid"},
		{name: "not our target", frame: nsFrame(mcastMAC(solicited(ws6)), ws2MAC, wsLL, solicited(ws6), ws6, &ws2MAC, 255), reason: "ndp_ignored"},
		{name: "router solicitation", frame: rs, reason: "ndp_ignored"},
		{name: "spoofed source", frame: nsFrame(gwMAC, wsMAC, netip.MustParseAddr("2001:db8::1"), gw6.Addr(), gw6.Addr(), &wsMAC, 255), reason: "spoofed_source"},
		{name: "dad with slla", frame: nsFrame(mcastMAC(solicited(gw6.Addr())), wsMAC, netip.IPv6Unspecified(), solicited(gw6.Addr()), gw6.Addr(), &wsMAC, 255), reason: "ndp_invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d, w := testDevice(t)
				w.send(tt.frame)
				synctest.Wait()
				w.none(t)
				if got := d.Stats().Drop(tt.reason); got != 1 {
					t.Errorf("%s drops %d, want 1", tt.reason, got)
				}
			})
		})
	}
}

func TestInbound(t *testing.T) {
	vlan := ethFrame(gwMAC, wsMAC, 0x8100, append([]byte{0, 5, 0x08, 0}, ipv4(ws4, other)...))
	padded := ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, append(ipv4(ws4, other), 0, 0, 0, 0, 0, 0))
	truncated := ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(ws4, other)[:24])
	tests := []struct {
		name    string
		frame   []byte
		deliver []byte // the packet Read must return; nil: dropped
		reason  string
	}{
		{name: "ipv4 from workstation", frame: ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(ws4, other)), deliver: ipv4(ws4, other)},
		{name: "ipv4 padded", frame: padded, deliver: ipv4(ws4, other)},
		{name: "ipv6 from workstation", frame: ethFrame(gwMAC, wsMAC, header.IPv6ProtocolNumber, ipv6(ws6, netip.MustParseAddr("2001:db8::1"), 6, 64, make([]byte, 20))), deliver: ipv6(ws6, netip.MustParseAddr("2001:db8::1"), 6, 64, make([]byte, 20))},
		{name: "ipv6 link-local source", frame: ethFrame(gwMAC, wsMAC, header.IPv6ProtocolNumber, ipv6(wsLL, gw6.Addr(), 17, 64, make([]byte, 8))), deliver: ipv6(wsLL, gw6.Addr(), 17, 64, make([]byte, 8))},
		{name: "ipv4 spoofed", frame: ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(other, gw4.Addr())), reason: "spoofed_source"},
		{name: "ipv4 from our address", frame: ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(gw4.Addr(), other)), reason: "spoofed_source"},
		{name: "ipv4 from subnet broadcast", frame: ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(netip.MustParseAddr("10.152.191.255"), other)), reason: "spoofed_source"},
		{name: "ipv6 spoofed", frame: ethFrame(gwMAC, wsMAC, header.IPv6ProtocolNumber, ipv6(netip.MustParseAddr("2001:db8::2"), gw6.Addr(), 6, 64, make([]byte, 20))), reason: "spoofed_source"},
		{name: "other workstation's frame", frame: ethFrame(ws2MAC, wsMAC, header.IPv4ProtocolNumber, ipv4(ws4, ws4b)), reason: "not_for_us"},
		{name: "ip to broadcast mac", frame: ethFrame(broadcastMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(ws4, netip.MustParseAddr("255.255.255.255"))), reason: "multicast_ip"},
		{name: "vlan", frame: vlan, reason: "vlan"},
		{name: "lldp", frame: ethFrame(mac{0x01, 0x80, 0xc2, 0, 0, 0x0e}, wsMAC, 0x88cc, make([]byte, 46)), reason: "ethertype"},
		{name: "truncated", frame: truncated, reason: "malformed"},
		{name: "runt", frame: []byte{1, 2, 3}, reason: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, w := testDevice(t)
			for _, a := range []netip.Addr{ws4, ws6, wsLL} {
				bindForTest(d.ports[0], a, wsMAC)
			}
			w.send(tt.frame)
			if tt.deliver != nil {
				if got := readPacket(t, d); !bytes.Equal(got, tt.deliver) {
					t.Fatalf("Read % x\nwant % x", got, tt.deliver)
				}
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for d.Stats().Drop(tt.reason) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("no %s drop", tt.reason)
				}
				time.Sleep(time.Millisecond)
			}
			select {
			case <-d.in:
				t.Fatal("dropped frame was also delivered")
			default:
			}
		})
	}
}

// TestResolveQueue: packets to an unknown workstation wait (at most
// queuePerNeighbour) while it is asked, and go out when it answers.
func TestResolveQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		for i := range 5 {
			p := ipv4(other, ws4)
			p[4] = byte(i) // IP ID tells them apart
			write(t, d, p)
		}
		synctest.Wait()
		if r := decodeARP(t, w.next(t)); r.op != header.ARPRequest || r.ethDst != broadcastMAC || r.tpa != ws4 {
			t.Fatalf("want one broadcast request, got %+v", r)
		}
		w.none(t)
		if got := d.Stats().Drop("queue_full"); got != 2 {
			t.Errorf("queue_full %d, want 2", got)
		}
		w.send(arpFrame(header.ARPReply, gwMAC, wsMAC, ws4, gwMAC, gw4.Addr()))
		synctest.Wait()
		for i := range 3 {
			f := w.next(t)
			if ethDst(f) != wsMAC || f[14+4] != byte(i) {
				t.Fatalf("packet %d: to %x id %d", i, ethDst(f), f[14+4])
			}
		}
		w.none(t)
		if d.queued.Load() != 0 {
			t.Errorf("queued %d after resolution", d.queued.Load())
		}
	})
}

// TestResolveFails: no answer -> three requests a second apart, then the
// queued packets and new ones are dropped (no_neighbour), never sent
// anywhere; after failedHold a new packet asks again.
func TestResolveFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		write(t, d, ipv4(other, ws4))
		var requests int
		for range 10 {
			time.Sleep(500 * time.Millisecond)
			synctest.Wait()
			for {
				select {
				case f := <-w.fromDev:
					if r := decodeARP(t, f); r.op != header.ARPRequest || r.tpa != ws4 {
						t.Fatalf("unexpected frame %+v", r)
					}
					requests++
					continue
				default:
				}
				break
			}
		}
		// Started at once, then probed within the 5 s above.
		if requests != maxProbes {
			t.Fatalf("%d requests, want %d", requests, maxProbes)
		}
		if got := d.Stats().Drop("no_neighbour"); got != 1 {
			t.Fatalf("no_neighbour %d, want 1 (the queued packet)", got)
		}
		write(t, d, ipv4(other, ws4))
		synctest.Wait()
		w.none(t)
		if got := d.Stats().Drop("no_neighbour"); got != 2 {
			t.Fatalf("no_neighbour %d, want 2", got)
		}
		time.Sleep(failedHold)
		synctest.Wait()
		write(t, d, ipv4(other, ws4))
		synctest.Wait()
		if r := decodeARP(t, w.next(t)); r.op != header.ARPRequest {
			t.Fatalf("want a new request after the hold, got %+v", r)
		}
		if d.queued.Load() != 1 {
			t.Errorf("queued %d, want 1", d.queued.Load())
		}
	})
}

// TestProbeSilentWorkstation: a known workstation that stops answering
// is probed (unicast) once its confirmation is old, and after maxProbes
// unanswered probes its packets are dropped and counted.
func TestProbeSilentWorkstation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		w.send(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr()))
		synctest.Wait()
		w.next(t) // our reply
		answer(t, w, ws4, wsMAC)
		synctest.Wait()
		time.Sleep(staleAfter + time.Second)
		write(t, d, ipv4(other, ws4))
		synctest.Wait()
		if f := w.next(t); ethDst(f) != wsMAC || be16(f[12:14]) != ethTypeIPv4 {
			t.Fatal("a stale entry must still be used")
		}
		probes := 0
		for range 20 {
			time.Sleep(250 * time.Millisecond)
			synctest.Wait()
			select {
			case f := <-w.fromDev:
				r := decodeARP(t, f)
				if r.op != header.ARPRequest || r.ethDst != wsMAC || r.tpa != ws4 {
					t.Fatalf("want a unicast probe, got %+v", r)
				}
				probes++
			default:
			}
		}
		if probes != maxProbes {
			t.Fatalf("%d probes, want %d", probes, maxProbes)
		}
		write(t, d, ipv4(other, ws4))
		synctest.Wait()
		w.none(t)
		if got := d.Stats().Drop("no_neighbour"); got != 1 {
			t.Fatalf("no_neighbour %d, want 1", got)
		}
	})
}

// TestProbeAnswered: an answered probe keeps the entry reachable.
func TestProbeAnswered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		w.send(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr()))
		synctest.Wait()
		w.next(t)
		answer(t, w, ws4, wsMAC)
		synctest.Wait()
		time.Sleep(staleAfter + time.Second)
		write(t, d, ipv4(other, ws4))
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		w.next(t) // the packet
		if r := decodeARP(t, w.next(t)); r.ethDst != wsMAC {
			t.Fatalf("want a unicast probe, got %+v", r)
		}
		w.send(arpFrame(header.ARPReply, gwMAC, wsMAC, ws4, gwMAC, gw4.Addr()))
		time.Sleep(10 * time.Second)
		synctest.Wait()
		w.none(t)
		var c [numStates]int
		d.ports[0].countStates(&c)
		if c[stateReachable] != 1 {
			t.Fatalf("states %v, want one reachable", c)
		}
	})
}

func TestIPv6Resolution(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		pkt := ipv6(netip.MustParseAddr("2001:db8::1"), ws6, 6, 64, make([]byte, 20))
		write(t, d, pkt)
		synctest.Wait()
		ns := decodeNDP(t, w.next(t))
		want := ndpMsg{ethDst: mcastMAC(solicited(ws6)), lla: gwMAC, src: gw6.Addr(), dst: solicited(ws6), target: ws6, typ: header.ICMPv6NeighborSolicit}
		if ns != want {
			t.Fatalf("NS %+v\nwant %+v", ns, want)
		}
		// An unsolicited NA creates nothing; the solicited one resolves.
		w.send(naFrame(mcastMAC(netip.MustParseAddr("ff02::1")), ws2MAC, ws6, netip.MustParseAddr("ff02::1"), ws6, naFlagOverr, &ws2MAC))
		synctest.Wait()
		w.none(t)
		w.send(naFrame(gwMAC, wsMAC, ws6, gw6.Addr(), ws6, naFlagSolic|naFlagOverr, &wsMAC))
		synctest.Wait()
		f := w.next(t)
		if ethDst(f) != wsMAC || !bytes.Equal(f[14:], pkt) {
			t.Fatalf("packet to %x: % x", ethDst(f), f[14:])
		}
		// Link-local destinations resolve on the (only) link too.
		write(t, d, ipv6(gwLL, wsLL, 6, 64, make([]byte, 20)))
		synctest.Wait()
		if ns := decodeNDP(t, w.next(t)); ns.src != gwLL || ns.target != wsLL {
			t.Fatalf("link-local NS %+v", ns)
		}
	})
}

func TestOutboundNoRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		for _, dst := range []string{"192.0.2.7", "2001:db8::7", "10.152.191.255", "ff02::1", "224.0.0.1", "10.152.152.10", "fd19:7a2b::1"} {
			a := netip.MustParseAddr(dst)
			if a.Is4() {
				write(t, d, ipv4(gw4.Addr(), a))
			} else {
				write(t, d, ipv6(gw6.Addr(), a, 6, 64, nil))
			}
		}
		write(t, d, []byte{0x45, 0})
		synctest.Wait()
		w.none(t)
		if d.Stats().Drop("no_route") != 7 || d.Stats().Drop("malformed") != 1 {
			t.Fatalf("no_route %d malformed %d", d.Stats().Drop("no_route"), d.Stats().Drop("malformed"))
		}
	})
}

func TestTableBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		w.discard = true
		base := netip.MustParseAddr("10.152.160.0").As4()
		for i := range maxNeighbours + 10 {
			a := base
			a[2] += byte(i >> 8)
			a[3] = byte(i)
			write(t, d, ipv4(other, netip.AddrFrom4(a)))
		}
		synctest.Wait()
		// Resolutions in flight are bounded apart from bound entries:
		// the newest push out the oldest.
		if n := tableLen(d); n != maxPending {
			t.Fatalf("table has %d entries, want %d", n, maxPending)
		}
		if got := d.Stats().Drop("table_full"); got != maxNeighbours+10-maxPending {
			t.Fatalf("table_full %d, want %d", got, maxNeighbours+10-maxPending)
		}
		if q := d.queued.Load(); q > maxQueuedTotal {
			t.Fatalf("queued %d above the global bound", q)
		}
		// Failed entries expire and free the table.
		time.Sleep(maxProbes*probeInterval + failedHold + time.Second)
		synctest.Wait()
		if n := tableLen(d); n != 0 {
			t.Fatalf("%d entries left after expiry", n)
		}
		if d.queued.Load() != 0 {
			t.Fatalf("queued %d after expiry", d.queued.Load())
		}
	})
}

// TestWriteErrorSurvives: a link that refuses frames (down) costs counted
// drops, never a Write error; when it comes back, traffic flows.
func TestWriteErrorSurvives(t *testing.T) {
	d, w := testDevice(t)
	w.send(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr()))
	w.next(t)
	answer(t, w, ws4, wsMAC)
	awaitBound(t, d, ws4)
	w.setWriteErr(syscall.ENETDOWN)
	for range 3 {
		b := make([]byte, 16+40)
		copy(b[16:], ipv4(other, ws4))
		if n, err := d.Write([][]byte{b}, 16); err != nil || n != 1 {
			t.Fatalf("Write = %d, %v; want 1, nil", n, err)
		}
	}
	if got := d.Stats().Drop("write_error"); got != 3 {
		t.Fatalf("write_error %d, want 3", got)
	}
	w.setWriteErr(nil)
	write(t, d, ipv4(other, ws4))
	if f := w.next(t); ethDst(f) != wsMAC {
		t.Fatal("no traffic after the link came back")
	}
}

// TestReadWriteOffsets: Write without headroom copies; Read drops what
// does not fit and batches the rest.
func TestReadWriteOffsets(t *testing.T) {
	d, w := testDevice(t)
	w.send(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr()))
	w.next(t)
	answer(t, w, ws4, wsMAC)
	awaitBound(t, d, ws4)
	bindForTest(d.ports[0], ws6, wsMAC)
	<-w.fromDev // its solicitation
	pkt := ipv4(other, ws4)
	if _, err := d.Write([][]byte{append([]byte(nil), pkt...)}, 0); err != nil {
		t.Fatal(err)
	}
	if f := w.next(t); !bytes.Equal(f[14:], pkt) || ethDst(f) != wsMAC || mac(f[6:12]) != gwMAC {
		t.Fatalf("frame % x", f)
	}
	big := ethFrame(gwMAC, wsMAC, header.IPv6ProtocolNumber, ipv6(ws6, gw6.Addr(), 6, 64, make([]byte, 200)))
	w.send(big)
	w.send(ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, pkt2()))
	deadline := time.Now().Add(10 * time.Second)
	for len(d.in) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	bufs := [][]byte{make([]byte, 4+100), make([]byte, 4+100)}
	sizes := make([]int, 2)
	n, err := d.Read(bufs, sizes, 4)
	if err != nil || n != 1 || !bytes.Equal(bufs[0][4:4+sizes[0]], pkt2()) {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if d.Stats().Drop("too_big") != 1 {
		t.Fatalf("too_big %d, want 1", d.Stats().Drop("too_big"))
	}
}

func pkt2() []byte { return ipv4(ws4, netip.MustParseAddr("198.18.0.1")) }

func TestClose(t *testing.T) {
	d, _ := testDevice(t)
	done := make(chan error, 1)
	go func() {
		_, err := d.Read([][]byte{make([]byte, 1600)}, []int{0}, 0)
		done <- err
	}()
	d.Close()
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if _, err := d.Write([][]byte{make([]byte, 40)}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := d.Ready(); err == nil {
		t.Fatal("Ready after Close")
	}
}

func TestNewDeviceErrors(t *testing.T) {
	tests := []struct {
		name string
		link Link
		want string
	}{
		{name: "no address", link: Link{Name: "eth1", MAC: net.HardwareAddr(gwMAC[:]), Addrs: []netip.Prefix{netip.PrefixFrom(gwLL, 64)}}, want: "ip addr add 10.152.152.10/18 dev eth1"},
		{name: "bad mac", link: Link{Name: "eth1", MAC: net.HardwareAddr{1, 2}, Addrs: []netip.Prefix{gw4}}, want: "not Ethernet"},
		{name: "multicast mac", link: Link{Name: "eth1", MAC: net.HardwareAddr(broadcastMAC[:]), Addrs: []netip.Prefix{gw4}}, want: "not unicast"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWire()
			tt.link.Frames = w
			_, err := NewDevice([]Link{tt.link}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			select {
			case <-w.closed:
			default:
				t.Fatal("link not closed on error")
			}
		})
	}
}

// TestAddrs: the derived link-local and the prefixes the router uses.
func TestAddrs(t *testing.T) {
	w := newWire()
	d, err := NewDevice([]Link{{Name: "eth1", MAC: net.HardwareAddr(gwMAC[:]), Addrs: []netip.Prefix{gw4, gw6}, Frames: w}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := []netip.Addr{gw4.Addr(), gw6.Addr(), netip.MustParseAddr("fe80::ff:fe00:10")}
	if got := d.Addrs(); len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("Addrs %v, want %v", got, want)
	}
	if got := d.Prefixes(); len(got) != 2 || got[0] != netip.MustParsePrefix("10.152.128.0/18") || got[1] != netip.MustParsePrefix("fd19:7a2b::/64") {
		t.Fatalf("Prefixes %v", got)
	}
	if !d.IsOwn(netip.MustParseAddr("::ffff:10.152.152.10")) || d.IsOwn(ws4) {
		t.Fatal("IsOwn")
	}
}

// TestTwoLinks: Write picks the LAN by destination.
func TestTwoLinks(t *testing.T) {
	w1, w2 := newWire(), newWire()
	d, err := NewDevice([]Link{
		{Name: "eth1", MAC: net.HardwareAddr(gwMAC[:]), Addrs: []netip.Prefix{gw4}, Frames: w1},
		{Name: "eth2", MAC: net.HardwareAddr{0x02, 0, 0, 0, 1, 0x10}, Addrs: []netip.Prefix{netip.MustParsePrefix("10.153.0.1/24")}, Frames: w2},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	write(t, d, ipv4(other, netip.MustParseAddr("10.153.0.5")))
	if r := decodeARP(t, w2.next(t)); r.tpa != netip.MustParseAddr("10.153.0.5") || r.spa != netip.MustParseAddr("10.153.0.1") {
		t.Fatalf("eth2 request %+v", r)
	}
	write(t, d, ipv4(other, ws4))
	if r := decodeARP(t, w1.next(t)); r.tpa != ws4 {
		t.Fatalf("eth1 request %+v", r)
	}
	w1.none(t)
	w2.none(t)
}

// TestSocketpair runs the ARP exchange and a packet each way over a
// SOCK_SEQPACKET socketpair, as a tap descriptor would carry them.
func TestSocketpair(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		unix.SetNonblock(fd, true)
	}
	gw, ws := os.NewFile(uintptr(fds[0]), "gw"), os.NewFile(uintptr(fds[1]), "ws")
	defer ws.Close()
	d, err := NewDevice([]Link{{Name: "sp0", MAC: net.HardwareAddr(gwMAC[:]), Addrs: []netip.Prefix{gw4}, Frames: gw}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ws.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := ws.Write(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr())); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	n, err := ws.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if r := decodeARP(t, buf[:n]); r.op != header.ARPReply || r.sha != gwMAC {
		t.Fatalf("reply %+v", r)
	}
	if n, err = ws.Read(buf); err != nil {
		t.Fatal(err)
	}
	if r := decodeARP(t, buf[:n]); r.op != header.ARPRequest || r.tpa != ws4 {
		t.Fatalf("want torgate's request for %v, got %+v", ws4, r)
	}
	ws.Write(arpFrame(header.ARPReply, gwMAC, wsMAC, ws4, gwMAC, gw4.Addr()))
	awaitBound(t, d, ws4)
	ws.Write(ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, pkt2()))
	if got := readPacket(t, d); !bytes.Equal(got, pkt2()) {
		t.Fatalf("Read % x", got)
	}
	write(t, d, ipv4(other, ws4))
	if n, err = ws.Read(buf); err != nil || ethDst(buf[:n]) != wsMAC {
		t.Fatalf("read %d %v", n, err)
	}
}

func TestMetrics(t *testing.T) {
	d, w := testDevice(t)
	w.send(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr()))
	w.next(t)
	answer(t, w, ws4, wsMAC)
	awaitBound(t, d, ws4)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(d.Metrics()...)
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 2+int(numReasons)+int(numSent)+int(numStates) {
		t.Fatalf("GatherAndCount = %d, %v", n, err)
	}
	probs, err := testutil.GatherAndLint(reg)
	if err != nil || len(probs) > 0 {
		t.Fatalf("lint: %v %v", probs, err)
	}
	want := `
# HELP lan_control_sent_total ARP and neighbour discovery frames the gateway sent, by kind (a failed write also counts as a write_error drop).
# TYPE lan_control_sent_total counter
lan_control_sent_total{kind="arp_reply"} 1
lan_control_sent_total{kind="arp_request"} 1
lan_control_sent_total{kind="na"} 0
lan_control_sent_total{kind="ns"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "lan_control_sent_total"); err != nil {
		t.Fatal(err)
	}
}

func tableLen(d *Device) int {
	p := d.ports[0]
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.neigh)
}

// TestTableFullOfLearned: a table filled by ARP from made-up senders
// still takes a new workstation once those entries have gone quiet.
func TestTableFullOfLearned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		w.discard = true
		bindForTest(d.ports[0], ws4, wsMAC)
		// A flood of requests from made-up senders that never answer
		// torgate's own requests.
		base := netip.MustParseAddr("10.152.160.0").As4()
		for i := range maxNeighbours {
			a := base
			a[2] += byte(i >> 8)
			a[3] = byte(i)
			w.send(arpFrame(header.ARPRequest, broadcastMAC, ws2MAC, netip.AddrFrom4(a), mac{}, gw4.Addr()))
			if i%32 == 0 {
				synctest.Wait()
			}
		}
		synctest.Wait()
		if n := tableLen(d); n != maxPending+1 {
			t.Fatalf("table has %d entries, want %d resolving and one bound", n, maxPending)
		}
		// The bound machine keeps its address; a newcomer still gets in.
		if _, ok := d.Identity(ws4); !ok {
			t.Fatal("the flood unbound a machine")
		}
		bindForTest(d.ports[0], ws4b, ws2MAC)
		if _, ok := d.Identity(ws4b); !ok {
			t.Fatal("a newcomer was locked out")
		}
	})
}

// TestOwnMACNotLearned: a frame claiming the gateway's own MAC as a
// workstation's teaches nothing.
func TestOwnMACNotLearned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		w.send(arpFrame(header.ARPRequest, broadcastMAC, gwMAC, ws4, mac{}, gw4.Addr()))
		synctest.Wait()
		for len(w.fromDev) > 0 {
			<-w.fromDev
		}
		write(t, d, ipv4(other, ws4))
		synctest.Wait()
		if r := decodeARP(t, w.next(t)); r.op != header.ARPRequest {
			t.Fatalf("want a request, got %+v", r)
		}
	})
}

// TestReattachSwapsFrames: while Ready reports ErrGone the Device asks
// Reattach for new frames, closes the old ones and carries on with the
// new, neighbour table intact.
func TestReattachSwapsFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		oldW, newW := newWire(), newWire()
		var gone atomic.Bool
		d, err := NewDevice([]Link{{
			Name: "eth1", MAC: net.HardwareAddr(gwMAC[:]), Addrs: []netip.Prefix{gw4}, Frames: oldW,
			Ready: func() error {
				if gone.Load() {
					return fmt.Errorf("macvtap: %w", ErrGone)
				}
				return nil
			},
			Reattach: func() (io.ReadWriteCloser, error) {
				gone.Store(false)
				return newW, nil
			},
		}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		oldW.send(arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr()))
		synctest.Wait()
		oldW.next(t)
		answer(t, oldW, ws4, wsMAC)
		synctest.Wait()
		gone.Store(true)
		time.Sleep(reattachInterval + time.Millisecond)
		synctest.Wait()
		select {
		case <-oldW.closed:
		default:
			t.Fatal("old frames not closed")
		}
		if err := d.Ready(); err != nil {
			t.Fatalf("Ready after re-attach: %v", err)
		}
		write(t, d, ipv4(other, ws4))
		synctest.Wait()
		if f := newW.next(t); ethDst(f) != wsMAC {
			t.Fatal("packet not on the new frames")
		}
		newW.send(ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, pkt2()))
		synctest.Wait()
		if got := readPacket(t, d); !bytes.Equal(got, pkt2()) {
			t.Fatal("no packet read from the new frames")
		}
	})
}
