package lan

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// A workstation is a machine, and an address proves nothing until
// torgate's own resolution bound it (issue 19, items 2-5 and 7).

// TestUnprovenSourceWaits: a packet from an address no MAC is bound to
// reaches nothing until the address answers torgate's own request from
// the packet's MAC; then it goes on, once.
func TestUnprovenSourceWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		pkt := ipv4(ws4, other)
		w.send(ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, pkt))
		synctest.Wait()
		if len(d.in) != 0 {
			t.Fatal("a packet from an unproven source reached the stack")
		}
		r := decodeARP(t, w.next(t))
		if r.op != header.ARPRequest || r.ethDst != broadcastMAC || r.tpa != ws4 {
			t.Fatalf("want torgate's broadcast request for %v, got %+v", ws4, r)
		}
		w.send(arpFrame(header.ARPReply, gwMAC, wsMAC, ws4, gwMAC, gw4.Addr()))
		synctest.Wait()
		if got := readPacket(t, d); !bytes.Equal(got, pkt) {
			t.Fatalf("Read % x", got)
		}
	})
}

// TestUnprovenSourceNeverAnswers: a spoofed in-prefix source that never
// answers costs three requests and a counted drop; nothing reaches the
// stack.
func TestUnprovenSourceNeverAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		w.discard = true
		for range 10 {
			w.send(ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(ws4, other)))
		}
		time.Sleep(maxProbes*probeInterval + time.Second)
		synctest.Wait()
		if len(d.in) != 0 {
			t.Fatal("a packet from an unproven source reached the stack")
		}
		if got, want := d.Stats().Drop("unproven_source"), uint64(10); got != want {
			t.Fatalf("unproven_source %d, want %d (held ones and the ones beyond the hold)", got, want)
		}
		if got := d.Stats().Sent[sentARPRequest].Load(); got != maxProbes {
			t.Fatalf("%d requests, want %d", got, maxProbes)
		}
		if d.held.Load() != 0 {
			t.Fatalf("%d packets still held", d.held.Load())
		}
	})
}

// TestHeldFromAnotherMAC: while an address resolves, a packet that came
// from another MAC than the one that answers is spoofed.
func TestHeldFromAnotherMAC(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		w.send(ethFrame(gwMAC, ws2MAC, header.IPv4ProtocolNumber, ipv4(ws4, other)))
		synctest.Wait()
		answer(t, w, ws4, wsMAC)
		synctest.Wait()
		if len(d.in) != 0 {
			t.Fatal("the impostor's packet reached the stack")
		}
		if got := d.Stats().Drop("spoofed_source"); got != 1 {
			t.Fatalf("spoofed_source %d, want 1", got)
		}
	})
}

// TestSpoofedBoundSource: an address bound to one MAC, sent from another,
// is a counted drop, and makes torgate check the owner (which answers,
// and keeps it).
func TestSpoofedBoundSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		bindForTest(d.ports[0], ws4, wsMAC)
		w.next(t) // the binding's request
		time.Sleep(2 * probeInterval)
		for range 5 {
			w.send(ethFrame(gwMAC, ws2MAC, header.IPv4ProtocolNumber, ipv4(ws4, other)))
		}
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		if got := d.Stats().Drop("spoofed_source"); got != 5 {
			t.Fatalf("spoofed_source %d, want 5", got)
		}
		r := decodeARP(t, w.next(t))
		if r.op != header.ARPRequest || r.ethDst != wsMAC || r.tpa != ws4 {
			t.Fatalf("want a unicast probe of the owner, got %+v", r)
		}
		w.send(arpFrame(header.ARPReply, gwMAC, wsMAC, ws4, gwMAC, gw4.Addr()))
		synctest.Wait()
		if id, ok := d.Identity(ws4); !ok || id != MachineID(0, wsMAC[:]) {
			t.Fatalf("identity of %v after the owner answered: %v %v", ws4, id, ok)
		}
		// The owner's own packets still pass.
		w.send(ethFrame(gwMAC, wsMAC, header.IPv4ProtocolNumber, ipv4(ws4, other)))
		if got := readPacket(t, d); !bytes.Equal(got, ipv4(ws4, other)) {
			t.Fatalf("Read % x", got)
		}
	})
}

// TestOneMachine: a machine's IPv4, IPv6 and link-local addresses are one
// identity, another MAC is another, and an identity is never an address a
// packet can carry.
func TestOneMachine(t *testing.T) {
	d, _ := testDevice(t)
	p := d.ports[0]
	for _, a := range []netip.Addr{ws4, ws6, wsLL} {
		bindForTest(p, a, wsMAC)
	}
	bindForTest(p, ws4b, ws2MAC)
	id, ok := d.Identity(ws4)
	if !ok || !IsMachineID(id) {
		t.Fatalf("Identity(%v) = %v, %v", ws4, id, ok)
	}
	for _, a := range []netip.Addr{ws6, wsLL, netip.AddrFrom16(ws4.As16())} {
		if got, _ := d.Identity(a); got != id {
			t.Errorf("Identity(%v) = %v, want %v", a, got, id)
		}
	}
	if other, _ := d.Identity(ws4b); other == id {
		t.Error("two MACs are one machine")
	}
	if _, ok := d.Identity(netip.MustParseAddr("10.152.152.99")); ok {
		t.Error("an unbound address has an identity")
	}
}

// TestAddressesPerMachine: a machine answering for hundreds of addresses
// holds at most maxAddrsPerMachine bindings, recycling its own.
func TestAddressesPerMachine(t *testing.T) {
	d, w := testDevice(t)
	w.discard = true
	p := d.ports[0]
	base := netip.MustParseAddr("10.152.153.0").As4()
	for i := range 300 {
		a := base
		a[3] = byte(i)
		a[2] += byte(i >> 8)
		bindForTest(p, netip.AddrFrom4(a), wsMAC)
	}
	bindForTest(p, ws4b, ws2MAC)
	p.mu.Lock()
	n, other := p.perMAC[wsMAC], p.perMAC[ws2MAC]
	p.mu.Unlock()
	if n != maxAddrsPerMachine || other != 1 {
		t.Fatalf("bindings: %d for the greedy machine (want %d), %d for the other (want 1)", n, maxAddrsPerMachine, other)
	}
}

// TestNewMachineBudget: a station forging MACs gets newMachineBurst
// machines at once, then one per newMachineEvery; a machine admitted
// before keeps working and adds addresses freely.
func TestNewMachineBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		w.discard = true
		p := d.ports[0]
		bindForTest(p, ws4, wsMAC)
		base := netip.MustParseAddr("10.152.160.0").As4()
		for i := range 2 * newMachineBurst {
			a := base
			a[3] = byte(i)
			bindForTest(p, netip.AddrFrom4(a), mac{0x02, 0xee, 0, 0, byte(i >> 8), byte(i)})
		}
		if got := d.Stats().Drop("machine_budget"); got != newMachineBurst+1 {
			t.Fatalf("machine_budget %d, want %d", got, newMachineBurst+1)
		}
		bindForTest(p, ws6, wsMAC)
		if _, ok := d.Identity(ws6); !ok {
			t.Fatal("an admitted machine could not add an address")
		}
		time.Sleep(newMachineEvery)
		bindForTest(p, ws4b, ws2MAC)
		if _, ok := d.Identity(ws4b); !ok {
			t.Fatal("no new machine after the budget refilled")
		}
	})
}

// TestGatewayAddressClaimed: another station claiming the gateway's
// address is counted and answered with the gateway's own announcement,
// and claims inside the announcements' bound get one more at its end.
func TestGatewayAddressClaimed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, w := testDevice(t)
		for range 3 {
			w.send(arpFrame(header.ARPReply, broadcastMAC, ws2MAC, gw4.Addr(), broadcastMAC, gw4.Addr()))
		}
		synctest.Wait()
		if got := d.Stats().Drop("address_conflict"); got != 3 {
			t.Fatalf("address_conflict %d, want 3", got)
		}
		if got := d.Stats().Sent[sentARPRequest].Load(); got != 1 {
			t.Fatalf("%d requests sent, want one gratuitous request", got)
		}
		// Gratuitous as Linux defines it, so that it overrides the
		// claim at once: a request with sender = target, and a reply
		// whose target MAC is its sender's.
		req, rep := decodeARP(t, w.next(t)), decodeARP(t, w.next(t))
		if req.op != header.ARPRequest || req.ethDst != broadcastMAC || req.sha != gwMAC || req.spa != gw4.Addr() || req.tpa != gw4.Addr() {
			t.Fatalf("want the gateway's gratuitous request, got %+v", req)
		}
		if rep.op != header.ARPReply || rep.ethDst != broadcastMAC || rep.sha != gwMAC || rep.tha != gwMAC || rep.spa != gw4.Addr() || rep.tpa != gw4.Addr() {
			t.Fatalf("want the gateway's gratuitous reply, got %+v", rep)
		}
		w.none(t) // once per defendEvery
		// The claims inside the bound get one trailing announcement at
		// its end, so the gateway has the last word.
		time.Sleep(defendEvery)
		synctest.Wait()
		if r := decodeARP(t, w.next(t)); r.op != header.ARPRequest || r.spa != gw4.Addr() || r.sha != gwMAC {
			t.Fatalf("want the gateway's trailing gratuitous request, got %+v", r)
		}
		if r := decodeARP(t, w.next(t)); r.op != header.ARPReply || r.spa != gw4.Addr() || r.sha != gwMAC {
			t.Fatalf("want the gateway's trailing gratuitous reply, got %+v", r)
		}
		w.none(t) // one trailing announcement, not one per claim
		// The IPv6 address is defended on its own.
		w.send(naFrame(mcastMAC(netip.MustParseAddr("ff02::1")), ws2MAC, gw6.Addr(), netip.MustParseAddr("ff02::1"), gw6.Addr(), naFlagOverr, &ws2MAC))
		synctest.Wait()
		if f := w.next(t); be16(f[12:14]) != ethTypeIPv6 {
			t.Fatalf("want the gateway's NA, got ethertype %#x", be16(f[12:14]))
		}
		time.Sleep(defendEvery)
		w.send(arpFrame(header.ARPReply, broadcastMAC, ws2MAC, gw4.Addr(), broadcastMAC, gw4.Addr()))
		synctest.Wait()
		if r := decodeARP(t, w.next(t)); r.spa != gw4.Addr() || r.sha != gwMAC {
			t.Fatalf("want the gateway's announcement again, got %+v", r)
		}
	})
}

// TestCheckAddresses: a gateway whose address another station defends
// (a torgate already serving the LAN) refuses to start, naming the
// station; on a quiet LAN it starts.
func TestCheckAddresses(t *testing.T) {
	d, w := testDevice(t)
	if err := d.CheckAddresses(); err != nil {
		t.Fatalf("quiet LAN: %v", err)
	}
	for range 2 { // the probes: ARP and DAD
		w.next(t)
	}
	go func() {
		r := decodeARP(t, w.next(t))
		if r.op != header.ARPRequest || !r.spa.IsUnspecified() || r.tpa != gw4.Addr() {
			t.Errorf("want an ARP probe for %v, got %+v", gw4.Addr(), r)
		}
		// The other gateway defends its address (RFC 5227).
		w.send(arpFrame(header.ARPReply, broadcastMAC, ws2MAC, gw4.Addr(), broadcastMAC, gw4.Addr()))
	}()
	err := d.CheckAddresses()
	if !errors.Is(err, ErrAddressInUse) || !strings.Contains(err.Error(), "02:00:00:00:00:12") {
		t.Fatalf("CheckAddresses with the address defended elsewhere: %v", err)
	}
}
