package lan

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/torgate/torgate/internal/vnet"
)

// directReads makes a test wire a directReader, as a macvtap is: frames
// from in, read whole or into pieces, and a read deadline that wakes a
// blocked read.
type directReads struct {
	in     chan []byte
	closed chan struct{}

	mu      sync.Mutex
	expired chan struct{} // closed while the deadline is in the past; guarded by mu
}

func newDirectReads(in chan []byte, closed chan struct{}) *directReads {
	return &directReads{in: in, closed: closed, expired: make(chan struct{})}
}

func (r *directReads) SetReadDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	past := !t.IsZero() && !t.After(time.Now())
	select {
	case <-r.expired:
		if !past {
			r.expired = make(chan struct{})
		}
	default:
		if past {
			close(r.expired)
		}
	}
	return nil
}

func (r *directReads) deadline() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.expired
}

// Readv fills parts in order with the next frame, as readv(2) does.
func (r *directReads) Readv(parts [][]byte) (int, error) {
	select {
	case f := <-r.in:
		n := 0
		for _, p := range parts {
			n += copy(p, f[n:])
		}
		return n, nil
	case <-r.closed:
		return 0, os.ErrClosed
	case <-r.deadline():
		return 0, os.ErrDeadlineExceeded
	}
}

// directWire is a vnetWire that ReadVnet reads itself.
type directWire struct {
	*vnetWire
	*directReads
}

var _ directReader = (*directWire)(nil)

func newDirectWire() *directWire {
	w := &vnetWire{wire: newWire()}
	return &directWire{vnetWire: w, directReads: newDirectReads(w.toDev, w.closed)}
}

// Read is what the readLoop reads with until the hand-over.
func (w *directWire) Read(b []byte) (int, error) { return w.Readv([][]byte{b}) }

// vnetReader runs ReadVnet until it fails and passes on every packet.
func vnetReader(d *Device) <-chan []byte {
	ch := make(chan []byte, 64)
	go func() {
		defer close(ch)
		buf := make([]byte, vnet.HdrLen+65535)
		for {
			n, err := d.ReadVnet(buf)
			if err != nil {
				return
			}
			ch <- bytes.Clone(buf[:n])
		}
	}()
	return ch
}

func nextPacket(t *testing.T, ch <-chan []byte) (vnet.Header, []byte) {
	t.Helper()
	select {
	case b, ok := <-ch:
		if !ok {
			t.Fatal("ReadVnet failed")
		}
		return vnet.Decode(b), b[vnet.HdrLen:]
	case <-time.After(10 * time.Second):
		t.Fatal("no packet from ReadVnet")
		return vnet.Header{}, nil
	}
}

// TestDirectRead: with offloads on and one link that can be read
// directly, ReadVnet takes the reads over from the readLoop (which ends),
// a packet the readLoop had queued comes first, and the link layer works
// as before on ReadVnet's goroutine: ARP answered, a new source's packet
// held until torgate's own resolution binds it (then delivered whole,
// from a copy), a spoofed one dropped; Close ends ReadVnet.
func TestDirectRead(t *testing.T) {
	w := newDirectWire()
	d := eth1Device(t, w, true)
	p := d.ports[0]
	bindForTest(p, ws4, wsMAC)
	checkZeroHdr(t, w.wire.next(t))
	// Before the hand-over, the readLoop reads and queues.
	early := tcpPacket(ws4, other, 100)
	w.send(vnetFrame(vnet.Header{}, early))
	for len(d.in) == 0 {
		time.Sleep(time.Millisecond)
	}
	if !d.EnableOffload() {
		t.Fatal("EnableOffload refused")
	}
	if !d.direct.Load() {
		t.Fatal("not in direct mode")
	}
	select {
	case <-p.readDone:
	default:
		t.Fatal("readLoop still running")
	}
	pkts := vnetReader(d)
	if _, got := nextPacket(t, pkts); !bytes.Equal(got, early) {
		t.Fatal("the readLoop's packet changed")
	}

	// A super-frame straight into ReadVnet's buffer.
	big := tcpPacket(ws4, other, 20000)
	gso := vnet.Header{Flags: vnet.FlagNeedsCsum, CsumStart: 14 + 20, CsumOffset: 16, GSOType: vnet.GSOTCPv4, GSOSize: 1448, HdrLen: 14 + 20 + 20}
	w.send(vnetFrame(gso, big))
	h, got := nextPacket(t, pkts)
	want := gso
	want.Shift(-ethHeaderLen)
	if !bytes.Equal(got, big) || h != want {
		t.Fatalf("super-frame: %d bytes with %+v, want %d with %+v", len(got), h, len(big), want)
	}

	// ARP for the gateway, answered from ReadVnet's goroutine.
	w.send(append(make([]byte, vnet.HdrLen), arpFrame(header.ARPRequest, broadcastMAC, wsMAC, ws4, mac{}, gw4.Addr())...))
	if r := decodeARP(t, checkZeroHdr(t, w.wire.next(t))); r.op != header.ARPReply || r.spa != gw4.Addr() {
		t.Fatalf("want a reply for the gateway, got %+v", r)
	}

	// A new source: held, resolved by torgate, then delivered.
	first := tcpPacket(ws4b, other, 300)
	w.send(append(make([]byte, vnet.HdrLen), ethFrame(gwMAC, ws2MAC, header.IPv4ProtocolNumber, first)...))
	r := decodeARP(t, checkZeroHdr(t, w.wire.next(t)))
	if r.op != header.ARPRequest || r.tpa != ws4b {
		t.Fatalf("want torgate's request for %v, got %+v", ws4b, r)
	}
	select {
	case <-pkts:
		t.Fatal("delivered before its source was proved")
	case <-time.After(50 * time.Millisecond):
	}
	w.send(append(make([]byte, vnet.HdrLen), arpFrame(header.ARPReply, gwMAC, ws2MAC, ws4b, gwMAC, gw4.Addr())...))
	if _, got := nextPacket(t, pkts); !bytes.Equal(got, first) {
		t.Fatal("held packet changed")
	}

	// ws4 from another MAC: spoofed.
	before := d.Stats().Drop("spoofed_source")
	w.send(append(make([]byte, vnet.HdrLen), ethFrame(gwMAC, ws2MAC, header.IPv4ProtocolNumber, tcpPacket(ws4, other, 10))...))
	// A frame after it shows it was handled.
	w.send(vnetFrame(vnet.Header{}, early))
	nextPacket(t, pkts)
	if d.Stats().Drop("spoofed_source") != before+1 {
		t.Fatal("spoofed source not dropped")
	}

	d.Close()
	select {
	case _, ok := <-pkts:
		if ok {
			t.Fatal("packet after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadVnet still running after Close")
	}
	buf := make([]byte, vnet.HdrLen+65535)
	if _, err := d.ReadVnet(buf); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("ReadVnet after Close: %v", err)
	}
}

// TestDirectReadTooBig: a frame larger than ReadVnet's buffer can take
// is a counted drop, as it was when the readLoop read it.
func TestDirectReadTooBig(t *testing.T) {
	d, w := testDirectDevice(t)
	pkts := vnetReader(d)
	huge := append(make([]byte, vnet.HdrLen), ethFrame(gwMAC, wsMAC, header.IPv6ProtocolNumber, ipv6(ws6, other6, 6, 64, make([]byte, 65535)))...)
	w.send(huge)
	w.send(vnetFrame(vnet.Header{}, tcpPacket(ws4, other, 10)))
	nextPacket(t, pkts)
	if d.Stats().Drop("too_big") != 1 {
		t.Fatalf("too_big %d, want 1", d.Stats().Drop("too_big"))
	}
}

var other6 = netip.MustParseAddr("2001:db8::1")

// testDirectDevice is testVnetDevice in direct mode.
func testDirectDevice(t *testing.T) (*Device, *directWire) {
	t.Helper()
	w := newDirectWire()
	d := eth1Device(t, w, true)
	if !d.EnableOffload() || !d.direct.Load() {
		t.Fatal("not in direct mode")
	}
	bindForTest(d.ports[0], ws4, wsMAC)
	bindForTest(d.ports[0], ws6, wsMAC)
	for range 2 {
		checkZeroHdr(t, w.wire.next(t))
	}
	return d, w
}
