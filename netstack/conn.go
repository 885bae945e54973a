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
	"gvisor.dev/gvisor/pkg/waiter"
)

// Conn is a TCP connection terminated by the stack. It does what
// gonet.TCPConn does, with a data path that allocates nothing (gonet
// allocates a waiter entry for every Read or Write that blocks and a
// reader for every Write) and a small footprint while idle: the wait
// channels and deadline timers exist only once something waited or set a
// deadline. A relay can drain it without blocking (TryRead) and be told
// when more arrives (NotifyRead), so an idle flow needs no goroutine.
type Conn struct {
	ep tcpip.Endpoint
	wq *waiter.Queue

	readMu    sync.Mutex        // serializes Read, TryRead and WaitRead
	sw        tcpip.SliceWriter // guarded by readMu
	readEntry waiter.Entry      // guarded by readMu
	readReady chan struct{}     // guarded by readMu; nil until a read waited
	writeMu   sync.Mutex        // serializes Write
	br        bytes.Reader      // guarded by writeMu
	wrEntry   waiter.Entry      // guarded by writeMu
	wrReady   chan struct{}     // guarded by writeMu; nil until a write waited
	rd, wd    deadline          // read and write deadlines

	// poke makes the workstation answer after Abort (see
	// Stack.pokeAfterReset); nil for conns not made by a Stack.
	poke func()

	notifyMu  sync.Mutex
	notify    waiter.Entry // guarded by notifyMu
	notifying bool         // guarded by notifyMu
}

var _ net.Conn = (*Conn)(nil)

// Events that end a wait: data (or room) arrived, the peer finished, the
// connection failed or was closed.
const (
	readEvents  = waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr
	writeEvents = waiter.WritableEvents | waiter.EventHUp | waiter.EventErr
)

func newConn(wq *waiter.Queue, ep tcpip.Endpoint) *Conn {
	return &Conn{ep: ep, wq: wq}
}

// read reads what is there into b; wouldBlock reports that nothing was.
// The caller holds readMu.
func (c *Conn) read(b []byte) (n int, wouldBlock bool, err error) {
	c.sw = tcpip.SliceWriter(b)
	res, terr := c.ep.Read(&c.sw, tcpip.ReadOptions{})
	c.sw = nil // do not keep the caller's buffer alive
	switch terr.(type) {
	case nil:
		if res.Count > 0 {
			// Receive-buffer auto-tuning learns from what the
			// application consumes.
			c.ep.ModerateRecvBuf(res.Count)
		}
		return res.Count, false, nil
	case *tcpip.ErrClosedForReceive:
		return 0, false, io.EOF
	case *tcpip.ErrWouldBlock:
		return 0, true, nil
	default:
		return 0, false, c.opError("read", errors.New(terr.String()))
	}
}

// register registers the channel entry e for events, making it (and its
// channel ch) on first use: a connection that never waits never has one.
func (c *Conn) register(e *waiter.Entry, ch *chan struct{}, events waiter.EventMask) {
	if *ch == nil {
		*e, *ch = waiter.NewChannelEntry(events)
	}
	c.wq.EventRegister(e)
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
		n, wouldBlock, err := c.read(b)
		if !wouldBlock {
			return n, err
		}
		if !registered {
			// Register, then try again before sleeping: data may have
			// come in between.
			c.register(&c.readEntry, &c.readReady, readEvents)
			registered = true
			continue
		}
		select {
		case <-c.readReady:
		case <-c.rd.done():
		}
	}
}

// TryRead reads what has arrived into b without waiting; wouldBlock
// reports that nothing has (and n is 0). End of stream is io.EOF, as for
// Read. Deadlines do not apply.
func (c *Conn) TryRead(b []byte) (n int, wouldBlock bool, err error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	return c.read(b)
}

// Readable reports whether a Read would not block now: data, the peer's
// FIN or an error is there.
func (c *Conn) Readable() bool { return c.ep.Readiness(readEvents) != 0 }

// NotifyRead arranges for fn to be called each time the connection may
// have become readable (data, the peer's FIN, an error, Close), until
// StopNotifyRead. fn runs on the stack's goroutines, possibly with its
// locks held: it must not block or call back into the connection. A later
// call replaces fn.
func (c *Conn) NotifyRead(fn func()) {
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	if c.notifying {
		c.wq.EventUnregister(&c.notify)
	}
	c.notify = waiter.NewFunctionEntry(readEvents, func(waiter.EventMask) { fn() })
	c.wq.EventRegister(&c.notify)
	c.notifying = true
}

// StopNotifyRead ends NotifyRead's calls. Calling it more than once is
// harmless.
func (c *Conn) StopNotifyRead() {
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	if c.notifying {
		c.wq.EventUnregister(&c.notify)
		c.notifying = false
	}
}

// WaitRead blocks until a Read would not block: data has arrived, the peer
// finished sending, or the connection failed or was closed. It ignores
// deadlines; closing the connection ends the wait.
func (c *Conn) WaitRead() error {
	if c.Readable() {
		return nil
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.register(&c.readEntry, &c.readReady, readEvents)
	defer c.wq.EventUnregister(&c.readEntry)
	for !c.Readable() {
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
				c.register(&c.wrEntry, &c.wrReady, writeEvents)
				registered = true
				continue
			}
			select {
			case <-c.wrReady:
			case <-c.wd.done():
			}
		default:
			c.br.Reset(nil)
			return n, c.opError("write", errors.New(err.String()))
		}
	}
	c.br.Reset(nil) // do not keep the caller's buffer alive
	return n, nil
}

// Close implements net.Conn: it closes the endpoint (a FIN, or a RST if
// unread data is left), which also ends blocked reads and writes.
func (c *Conn) Close() error {
	c.StopNotifyRead()
	c.ep.Close()
	return nil
}

// Abort ends the connection with a RST, discarding what is buffered
// either way, and releases it like Close. A workstation that reads a
// body delimited by the end of the connection then reports an error,
// where a FIN would have looked like a complete download: torgate uses
// it whenever it cuts a flow off (Tor went down, the upstream failed,
// shutdown) rather than relaying an end of stream. It also ends blocked
// reads and writes.
func (c *Conn) Abort() error {
	c.StopNotifyRead()
	// A RST even after our FIN, then release (gvisor.go G2).
	abortEndpoint(c.ep)
	if c.poke != nil {
		c.poke()
	}
	return nil
}

// CloseRead shuts down the reading side.
func (c *Conn) CloseRead() error {
	if err := c.ep.Shutdown(tcpip.ShutdownRead); err != nil {
		return c.opError("close", errors.New(err.String()))
	}
	return nil
}

// CloseWrite shuts down the writing side: the workstation gets a FIN.
func (c *Conn) CloseWrite() error {
	if err := c.ep.Shutdown(tcpip.ShutdownWrite); err != nil {
		return c.opError("close", errors.New(err.String()))
	}
	return nil
}

// LocalAddr implements net.Conn: the destination the workstation asked
// for.
func (c *Conn) LocalAddr() net.Addr {
	a, err := c.ep.GetLocalAddress()
	if err != nil {
		return nil
	}
	return tcpAddr(a)
}

// RemoteAddr implements net.Conn: the workstation's address and port.
func (c *Conn) RemoteAddr() net.Addr {
	a, err := c.ep.GetRemoteAddress()
	if err != nil {
		return nil
	}
	return tcpAddr(a)
}

func tcpAddr(a tcpip.FullAddress) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IP(a.Addr.AsSlice()), Port: int(a.Port)}
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

// done returns the channel closed when the deadline passes, made on first
// use.
func (d *deadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancel == nil {
		d.cancel = make(chan struct{})
	}
	return d.cancel
}

func (d *deadline) expired() bool {
	d.mu.Lock()
	unset := d.cancel == nil
	d.mu.Unlock()
	if unset {
		return false
	}
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
	if d.cancel == nil {
		d.cancel = make(chan struct{})
	}
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
