// Package wstest simulates workstations for hermetic tests: each one is a
// complete gVisor stack from wireguard's tun/netstack with its own
// address, and a Hub joins them into the single tun.Device the router
// reads, as a LAN behind a gateway would.
//
// The repository has three workstation fakes, one per job, and no other
// fake TUN: wstest for hermetic tests (several hosts with full TCP stacks
// behind one device, per-destination delivery counts, packet injection);
// bench.Link with bench.Workstation and bench.RawPeer for benchmarks (a
// bounded queue of preallocated buffers, nothing allocates, so that what
// a benchmark measures is the router); and internal/nstest for
// integration tests (a real kernel TUN in a network namespace, for real
// tools such as curl and dig). wstest favours convenience over
// allocation (it copies every packet), which is why benchmarks do not
// use it, and bench.Link has one far end, which is why tests with several
// workstations do not use it.
package wstest

import (
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
	wgnet "golang.zx2c4.com/wireguard/tun/netstack"
)

// Workstation is one simulated host.
type Workstation struct {
	Addr netip.Addr
	// Net dials and listens from the workstation.
	Net *wgnet.Net
	dev tun.Device
}

// Hub is the router's side of the simulated LAN. It implements
// tun.Device: Read returns packets the workstations sent, Write delivers
// packets to the workstation owning the destination address.
type Hub struct {
	mtu    int
	in     chan []byte
	events chan tun.Event
	ws     map[netip.Addr]*Workstation
	done   chan struct{}
	once   sync.Once

	// Delivered counts packets written towards each workstation.
	mu        sync.Mutex
	delivered map[netip.Addr]int
	// Stray counts packets written to addresses no workstation owns.
	Stray atomic.Int64
}

var _ tun.Device = (*Hub)(nil)

// New builds a Hub with one workstation per address. Everything is closed
// in tb.Cleanup.
func New(tb testing.TB, mtu int, addrs ...netip.Addr) (*Hub, []*Workstation) {
	tb.Helper()
	h := &Hub{
		mtu:       mtu,
		in:        make(chan []byte, 1024),
		events:    make(chan tun.Event, 1),
		ws:        make(map[netip.Addr]*Workstation),
		done:      make(chan struct{}),
		delivered: make(map[netip.Addr]int),
	}
	h.events <- tun.EventUp
	var list []*Workstation
	for _, a := range addrs {
		dev, n, err := wgnet.CreateNetTUN([]netip.Addr{a}, nil, mtu)
		if err != nil {
			tb.Fatalf("create workstation %v: %v", a, err)
		}
		w := &Workstation{Addr: a, Net: n, dev: dev}
		h.ws[a] = w
		list = append(list, w)
		go h.pump(w)
	}
	tb.Cleanup(func() { h.Close() })
	return h, list
}

// pump moves packets from one workstation's stack to the hub's queue.
// After Close it keeps reading and discards: a workstation's stack hands
// each packet it sends to this reader synchronously, often while it is
// handling one the router wrote (an RST answering a late segment), so a
// pump that stopped would block the router's writer for ever, and the
// router's Close with it (TestOverNetstack under -race in CI, 2026-12-05).
func (h *Hub) pump(w *Workstation) {
	bufs := [][]byte{make([]byte, h.mtu+64)}
	sizes := []int{0}
	for {
		n, err := w.dev.Read(bufs, sizes, 0)
		if err != nil {
			return
		}
		if n == 0 {
			continue
		}
		pkt := append([]byte(nil), bufs[0][:sizes[0]]...)
		select {
		case h.in <- pkt:
		case <-h.done:
		}
	}
}

// Inject queues a raw packet as if a workstation had sent it.
func (h *Hub) Inject(pkt []byte) {
	select {
	case h.in <- append([]byte(nil), pkt...):
	case <-h.done:
	}
}

// Delivered returns how many packets the router wrote towards addr.
func (h *Hub) Delivered(addr netip.Addr) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.delivered[addr]
}

// File implements tun.Device.
func (h *Hub) File() *os.File { return nil }

// Read implements tun.Device.
func (h *Hub) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var pkt []byte
	select {
	case pkt = <-h.in:
	case <-h.done:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], pkt)
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case pkt = <-h.in:
		default:
			return n, nil
		}
	}
}

// Write implements tun.Device. After Close it fails with os.ErrClosed,
// as a closed TUN does.
func (h *Hub) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-h.done:
		return 0, os.ErrClosed
	default:
	}
	for _, b := range bufs {
		pkt := b[offset:]
		if len(pkt) < 20 {
			continue
		}
		var dst netip.Addr
		switch pkt[0] >> 4 {
		case 4:
			dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		case 6:
			if len(pkt) < 40 {
				continue
			}
			dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		}
		w := h.ws[dst]
		if w == nil {
			h.Stray.Add(1)
			continue
		}
		h.mu.Lock()
		h.delivered[dst]++
		h.mu.Unlock()
		// The workstation stack takes its own copy.
		w.dev.Write([][]byte{pkt}, 0)
	}
	return len(bufs), nil
}

// MTU implements tun.Device.
func (h *Hub) MTU() (int, error) { return h.mtu, nil }

// Name implements tun.Device.
func (h *Hub) Name() (string, error) { return "wstest", nil }

// Events implements tun.Device.
func (h *Hub) Events() <-chan tun.Event { return h.events }

// BatchSize implements tun.Device.
func (h *Hub) BatchSize() int { return 64 }

// Close implements tun.Device. It stops the hub; the workstations'
// stacks are left to the garbage of the test binary, not closed:
// wireguard's tun/netstack cannot close a stack that still sends. Its
// Close waits for every endpoint's lock, which a stack goroutine holds
// while it blocks handing a packet to a reader that is gone (a deadlock
// TestConnNettest met in CI, 2026-12-04); with a reader that keeps
// draining, the channel Close closes races with that goroutine's send
// (the race detector's report in the next CI run). A handful of idle
// goroutines per test is the price.
func (h *Hub) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}
