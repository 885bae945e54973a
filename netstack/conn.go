package netstack

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Conn is a TCP connection terminated by the stack. It is a
// gonet.TCPConn (addresses, Close, CloseRead, CloseWrite) whose Read,
// Write and deadlines are reimplemented so that the data path allocates
// nothing: gonet allocates a waiter entry for every Read or Write that
// blocks and a reader for every Write. Conn keeps one of each for its
// lifetime instead. WaitRead lets a relay wait for data without holding a
// buffer.
type Conn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
	wq *waiter.Queue

	readMu    sync.Mutex        // serializes Read and WaitRead
	sw        tcpip.SliceWriter // guarded by readMu
	readEntry waiter.Entry      // guarded by readMu
	readReady chan struct{}     // notified by readEntry
	writeMu   sync.Mutex        // serializes Write
	br        bytes.Reader      // guarded by writeMu
	wrEntry   waiter.Entry      // guarded by writeMu
	wrReady   chan struct{}     // notified by wrEntry
	rd, wd    deadline          // read and write deadlines
}

var _ net.Conn = (*Conn)(nil)

// Events that end a wait: data (or room) arrived, the peer finished, the
// connection failed or was closed.
const (
	readEvents  = waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr
	writeEvents = waiter.WritableEvents | waiter.EventHUp | waiter.EventErr
)

func newConn(wq *waiter.Queue, ep tcpip.Endpoint) *Conn {
	c := &Conn{TCPConn: gonet.NewTCPConn(wq, ep), ep: ep, wq: wq}
	c.readEntry, c.readReady = waiter.NewChannelEntry(readEvents)
	c.wrEntry, c.wrReady = waiter.NewChannelEntry(writeEvents)
	c.rd.init()
	c.wd.init()
	return c
}

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	registered := false
	defer func() {
		if registered {
			c.wq.EventUnregister(&c.readEntry)
		}
	}()
	for {
		if c.rd.expired() {
			return 0, c.opError("read", errTimeout)
		}
		c.sw = tcpip.SliceWriter(b)
		res, err := c.ep.Read(&c.sw, tcpip.ReadOptions{})
		switch err.(type) {
		case nil:
			if res.Count > 0 {
				// Receive-buffer auto-tuning learns from what the
				// application consumes.
				c.ep.ModerateRecvBuf(res.Count)
			}
			return res.Count, nil
		case *tcpip.ErrClosedForReceive:
			return 0, io.EOF
		case *tcpip.ErrWouldBlock:
			if !registered {
				// Register, then try again before sleeping: data may
				// have come in between.
				c.wq.EventRegister(&c.readEntry)
				registered = true
				continue
			}
			select {
			case <-c.readReady:
			case <-c.rd.done():
			}
		default:
			return 0, c.opError("read", errors.New(err.String()))
		}
	}
}

// WaitRead blocks until a Read would not block: data has arrived, the peer
// finished sending, or the connection failed or was closed. It ignores
// deadlines; closing the connection ends the wait.
func (c *Conn) WaitRead() error {
	if c.ep.Readiness(readEvents) != 0 {
		return nil
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.wq.EventRegister(&c.readEntry)
	defer c.wq.EventUnregister(&c.readEntry)
	for c.ep.Readiness(readEvents) == 0 {
		<-c.readReady
	}
	return nil
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	registered := false
	defer func() {
		if registered {
			c.wq.EventUnregister(&c.wrEntry)
		}
	}()
	n := 0
	for n < len(b) {
		if c.wd.expired() {
			return n, c.opError("write", errTimeout)
		}
		c.br.Reset(b[n:])
		k, err := c.ep.Write(&c.br, tcpip.WriteOptions{})
		n += int(k)
		switch err.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			if !registered {
				c.wq.EventRegister(&c.wrEntry)
				registered = true
				continue
			}
			select {
			case <-c.wrReady:
			case <-c.wd.done():
			}
		default:
			return n, c.opError("write", errors.New(err.String()))
		}
	}
	c.br.Reset(nil) // do not keep the caller's buffer alive
	return n, nil
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wd.set(t)
	return nil
}

func (c *Conn) opError(op string, err error) *net.OpError {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// timeoutError is os.ErrDeadlineExceeded's behaviour for a deadline that
// passed: a net.Error with Timeout true.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// Is makes errors.Is(err, os.ErrDeadlineExceeded) hold, as for net's conns.
func (timeoutError) Is(target error) bool { return target == errDeadlineExceeded }

var errTimeout error = timeoutError{}

// deadline is one direction's deadline: a channel closed when it passes.
// Setting a deadline allocates a timer (as net's conns do); waiting on it
// allocates nothing.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer   // guarded by mu
	cancel chan struct{} // guarded by mu; closed when the deadline passed
}

func (d *deadline) init() { d.cancel = make(chan struct{}) }

func (d *deadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func (d *deadline) expired() bool {
	select {
	case <-d.done():
		return true
	default:
		return false
	}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		// The old timer fired and its function waits for mu to close
		// the old channel: leave that one to it and use a new one.
		d.cancel = make(chan struct{})
	}
	d.timer = nil
	select {
	case <-d.cancel:
		// The old deadline passed: waiters saw it; start afresh.
		d.cancel = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		close(d.cancel)
		return
	}
	ch := d.cancel
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		// A later set may have replaced the channel; close only ours.
		if d.cancel == ch {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
	})
}

// errDeadlineExceeded is os.ErrDeadlineExceeded.
var errDeadlineExceeded = os.ErrDeadlineExceeded
