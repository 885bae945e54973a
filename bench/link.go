package bench

import (
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
)

// Link is an in-memory TUN: the router reads and writes it through its
// tun.Device methods, and a far end (a Workstation's gVisor stack or a
// RawPeer) sits on the other side.
//
// Towards the router, the far end takes a free buffer with Get, fills it
// and queues it with Put; a bounded queue of preallocated buffers stands in
// for the kernel TUN's queue and, like it, drops when full. Towards the far
// end, every packet the router writes is handed to the deliver function
// synchronously, inside Write, as the kernel processes a TUN write in the
// writer's context. Nothing on either path allocates.
type Link struct {
	mtu     int
	deliver func(pkt []byte)
	bufs    [][]byte
	free    chan int // indexes of unused bufs
	full    chan int // indexes of queued packets, in order
	lens    []int    // packet length per buffer index
	events  chan tun.Event
	done    chan struct{}
	once    sync.Once

	// Drops counts packets the far end could not queue (queue full).
	Drops atomic.Uint64
}

var _ tun.Device = (*Link)(nil)

// linkQueueLen bounds packets in flight towards the router. The kernel TUN
// queue is 500 packets by default (txqueuelen); the benchmark queue is
// deeper so that TCP windows, not drops, pace the flows: a drop turns a
// throughput benchmark into a loss-recovery benchmark.
const linkQueueLen = 4096

// NewLink returns a Link carrying packets of up to mtu bytes. deliver
// receives each packet the router writes; pkt is valid only during the
// call and deliver must not block for long (it runs on the router's write
// path).
func NewLink(mtu int, deliver func(pkt []byte)) *Link {
	l := &Link{
		mtu:     mtu,
		deliver: deliver,
		bufs:    make([][]byte, linkQueueLen),
		free:    make(chan int, linkQueueLen),
		full:    make(chan int, linkQueueLen),
		lens:    make([]int, linkQueueLen),
		events:  make(chan tun.Event, 1),
		done:    make(chan struct{}),
	}
	for i := range l.bufs {
		l.bufs[i] = make([]byte, mtu)
		l.free <- i
	}
	l.events <- tun.EventUp
	return l
}

// Get returns a free buffer of MTU bytes and its index, or ok false if the
// queue is full (the caller counts a drop with Drop) or the link closed.
func (l *Link) Get() (buf []byte, idx int, ok bool) {
	select {
	case i := <-l.free:
		return l.bufs[i], i, true
	default:
		return nil, 0, false
	}
}

// Put queues the first n bytes of the buffer at idx towards the router.
func (l *Link) Put(idx, n int) {
	l.lens[idx] = n
	l.full <- idx // never blocks: at most linkQueueLen indexes exist
}

// Send copies pkt into a free buffer and queues it; it reports false (and
// counts a drop) if the queue is full.
func (l *Link) Send(pkt []byte) bool {
	buf, idx, ok := l.Get()
	if !ok {
		l.Drops.Add(1)
		return false
	}
	l.Put(idx, copy(buf, pkt))
	return true
}

// Drop counts a packet the far end could not queue.
func (l *Link) Drop() { l.Drops.Add(1) }

// File implements tun.Device. An in-memory link has no file, so the router
// takes its generic (non-offload) path.
func (l *Link) File() *os.File { return nil }

// Read implements tun.Device: it blocks for one packet, then takes as many
// more as are queued, up to len(bufs).
func (l *Link) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var i int
	select {
	case i = <-l.full:
	case <-l.done:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], l.bufs[i][:l.lens[i]])
		l.free <- i
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case i = <-l.full:
		default:
			return n, nil
		}
	}
}

// Write implements tun.Device: each packet goes to the far end at once.
func (l *Link) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-l.done:
		return 0, os.ErrClosed
	default:
	}
	for _, b := range bufs {
		l.deliver(b[offset:])
	}
	return len(bufs), nil
}

// MTU implements tun.Device.
func (l *Link) MTU() (int, error) { return l.mtu, nil }

// Name implements tun.Device.
func (l *Link) Name() (string, error) { return "benchlink", nil }

// Events implements tun.Device.
func (l *Link) Events() <-chan tun.Event { return l.events }

// BatchSize implements tun.Device. 128 is wireguard's conn.IdealBatchSize,
// what a Linux TUN with offloads reports.
func (l *Link) BatchSize() int { return 128 }

// Close implements tun.Device. It is idempotent.
func (l *Link) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Done is closed when the link is.
func (l *Link) Done() <-chan struct{} { return l.done }
