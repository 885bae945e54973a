package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Copy buffers come in three sizes, pooled as pointers. A direction starts
// small and moves up a size when a read fills its buffer, down when reads
// use a quarter of it: interactive flows stay at 16 KiB, bulk ones reach
// 256 KiB, where one read takes what a loopback socket holds and one write
// hands gVisor several 64 KiB GSO segments at once (bench/README.md: 32
// KiB buffers gave 0.15 of the kernel path downstream, 256 KiB 0.29). An
// idle direction holds none (pipe).
const (
	relayBufSmall = 16 << 10
	relayBufMid   = 64 << 10
	relayBufLarge = 256 << 10
)

var relayBufSizes = [...]int{relayBufSmall, relayBufMid, relayBufLarge}

var relayBufs = [...]sync.Pool{
	{New: func() any { return new([relayBufSmall]byte) }},
	{New: func() any { return new([relayBufMid]byte) }},
	{New: func() any { return new([relayBufLarge]byte) }},
}

// relayBuf is a pooled buffer of size class class.
type relayBuf struct {
	class int
	ptr   any // *[N]byte, returned to relayBufs[class]
	b     []byte
}

func getRelayBuf(class int) relayBuf {
	p := relayBufs[class].Get()
	var b []byte
	switch v := p.(type) {
	case *[relayBufSmall]byte:
		b = v[:]
	case *[relayBufMid]byte:
		b = v[:]
	case *[relayBufLarge]byte:
		b = v[:]
	}
	return relayBuf{class: class, ptr: p, b: b}
}

func (r *relayBuf) put() {
	if r.ptr != nil {
		relayBufs[r.class].Put(r.ptr)
		*r = relayBuf{}
	}
}

// nextClass picks the buffer size class after a read of n bytes into a
// buffer of class c.
func nextClass(c, n int) int {
	switch {
	case n == relayBufSizes[c] && c < len(relayBufSizes)-1:
		return c + 1
	case n <= relayBufSizes[c]/4 && c > 0:
		return c - 1
	}
	return c
}

type closeWriter interface{ CloseWrite() error }
type closeReader interface{ CloseRead() error }

// flowState is shared by the two copy directions of one flow.
type flowState struct {
	client, up net.Conn
	// last is the time of the last byte either way, in UnixNano.
	last atomic.Int64
	// halfDone counts finished directions.
	halfDone atomic.Int32
	once     sync.Once
	// watchdog ends the flow after inactivity; re-armed at half-close.
	watchdog *time.Timer
	halfIdle time.Duration
}

func (fs *flowState) abort() {
	fs.once.Do(func() {
		fs.client.Close()
		fs.up.Close()
	})
}

// relay copies both ways until both directions finish, then closes both
// connections. A clean EOF one way half-closes the other side; an error
// either way ends the flow.
func (t *Tunnel) relay(gen context.Context, client, up net.Conn) {
	fs := &flowState{client: client, up: up}
	fs.last.Store(time.Now().UnixNano())
	stop := context.AfterFunc(gen, fs.abort)
	defer stop()

	// Idle watchdog: a timer per flow, re-armed from the activity stamp,
	// instead of a deadline per read.
	fs.halfIdle = t.cfg.HalfCloseTimeout
	var timer *time.Timer
	timer = time.AfterFunc(t.cfg.IdleTimeout, func() {
		limit := t.cfg.IdleTimeout
		if fs.halfDone.Load() > 0 {
			limit = t.cfg.HalfCloseTimeout
		}
		idle := time.Duration(time.Now().UnixNano() - fs.last.Load())
		if idle >= limit {
			fs.abort()
			return
		}
		timer.Reset(limit - idle)
	})
	fs.watchdog = timer
	defer timer.Stop()

	var wg sync.WaitGroup
	wg.Go(func() {
		n := t.pipe(fs, up, client)
		t.bytes.WithLabelValues("upstream").Add(float64(n))
	})
	n := t.pipe(fs, client, up)
	t.bytes.WithLabelValues("downstream").Add(float64(n))
	wg.Wait()
	fs.abort()
}

// readWaiter is implemented by connections that can wait for data without
// a buffer: netstack.Conn, and sockets through socketWaiter.
type readWaiter interface{ WaitRead() error }

// waiterFor returns how to wait for data on c without a buffer, or nil.
func waiterFor(c net.Conn) readWaiter {
	if rw, ok := c.(readWaiter); ok {
		return rw
	}
	if w := newSocketWaiter(c); w != nil {
		return w
	}
	return nil
}

// pipe copies src to dst and half-closes dst on EOF.
//
// An idle flow holds no copy buffer: a buffer is taken from the pool when
// data is there and given back as soon as a read comes back short (the
// source is drained), and the wait in between needs none (waiterFor).
// A source that cannot wait that way keeps its buffer while blocked.
func (t *Tunnel) pipe(fs *flowState, dst, src net.Conn) int64 {
	var buf relayBuf
	defer buf.put()
	class := 0
	wait := waiterFor(src)
	// Waiting on a netstack.Conn is a lock and a flag check: do it before
	// every read, so no read ever blocks holding a buffer. A socket wait
	// costs a syscall: only after the source was drained.
	_, cheapWait := src.(readWaiter)
	var total int64
	var err error
	for {
		if buf.ptr == nil || cheapWait {
			if wait != nil {
				if werr := wait.WaitRead(); werr != nil {
					err = werr
					break
				}
			}
			if buf.ptr == nil {
				buf = getRelayBuf(class)
			}
		}
		n, rerr := src.Read(buf.b)
		if n > 0 {
			fs.last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf.b[:n]); werr != nil {
				err = werr
				break
			}
			total += int64(n)
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				err = rerr
			}
			break
		}
		if next := nextClass(class, n); next != class || (wait != nil && n < len(buf.b)) {
			// A new size, or drained: wait for more without a buffer.
			class = next
			buf.put()
		}
	}
	if err != nil {
		fs.abort()
		return total
	}
	if fs.halfDone.Add(1) == 1 {
		// First direction done: from now on the other direction must
		// make progress within the (shorter) half-close limit.
		fs.last.Store(time.Now().UnixNano())
		fs.watchdog.Reset(fs.halfIdle)
	}
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	}
	if cr, ok := src.(closeReader); ok {
		cr.CloseRead()
	}
	return total
}
