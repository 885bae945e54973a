package torctl

// This file is the only one that imports bine's control package. bine's
// calls block with no context (control/conn.go) and its event relay blocks
// on a full listener channel (control/cmd_event.go); ctlConn puts a context
// on every call and keeps the relay channel drained.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cretz/bine/control"
)

// eventBuffer is the capacity of the channel bine relays events into. The
// event loop drains it after every event; the buffer only has to absorb
// events that arrive while a command is reading its reply.
const eventBuffer = 64

// idleYield is how long the event loop pauses when bine's HandleNextEvent
// returned without an event and no command is in flight: a reply nobody
// asked for. It only stops a spin; Tor never sends such a reply.
const idleYield = 10 * time.Millisecond

// event is one asynchronous control-port event, reduced to what torctl
// uses: the event code and the text after it.
type event struct {
	Code string // "STATUS_CLIENT", "NETWORK_LIVENESS", ...
	Raw  string // e.g. "NOTICE BOOTSTRAP PROGRESS=50 TAG=... SUMMARY=\"...\""
}

// Event codes torctl subscribes to.
const (
	evStatusClient    = string(control.EventCodeStatusClient)
	evNetworkLiveness = string(control.EventCodeNetworkLiveness)
)

// ctlConn is one control connection. Every method takes a context: the bine
// call runs in its own goroutine and, if ctx ends first, the connection is
// closed, which makes the call return. The protocol cannot skip a late
// reply, so a timed-out connection is useless anyway. Commands are
// serialised; events go to onEvent from a single goroutine, in order.
type ctlConn struct {
	nc      net.Conn
	bc      *control.Conn
	onEvent func(event)

	cmdMu     sync.Mutex     // serialises commands
	cmdActive atomic.Bool    // a command is between its write and its reply
	cmdDone   chan struct{}  // cap 1; poked when a command ends
	inflight  sync.WaitGroup // commands running; Add only under errMu, see fail

	events chan control.Event // bine relays here; drained by eventLoop

	closing  chan struct{} // closed by fail, under errMu
	loopDone chan struct{} // closed when eventLoop has returned
	started  bool          // eventLoop was started; set once by subscribe
	errMu    sync.Mutex
	err      error // why the connection ended; guarded by errMu
}

// errConnClosed is returned by commands on a connection that has ended.
var errConnClosed = errors.New("control connection closed")

// newCtlConn wraps an open connection to a control port. Call authenticate,
// then subscribe (which starts event delivery), and close when done.
func newCtlConn(nc net.Conn, onEvent func(event)) *ctlConn {
	if onEvent == nil {
		onEvent = func(event) {}
	}
	return &ctlConn{
		nc:       nc,
		bc:       control.NewConn(textproto.NewConn(nc)),
		onEvent:  onEvent,
		cmdDone:  make(chan struct{}, 1),
		events:   make(chan control.Event, eventBuffer),
		closing:  make(chan struct{}),
		loopDone: make(chan struct{}),
	}
}

// do runs one bine call under ctx.
func (c *ctlConn) do(ctx context.Context, f func() error) error {
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	c.errMu.Lock()
	if c.err != nil {
		c.errMu.Unlock()
		return c.closedErr()
	}
	c.inflight.Add(1)
	c.errMu.Unlock()
	c.cmdActive.Store(true)
	defer func() {
		c.cmdActive.Store(false)
		select {
		case c.cmdDone <- struct{}{}:
		default:
		}
	}()
	res := make(chan error, 1)
	go func() {
		defer c.inflight.Done()
		res <- f()
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		c.fail(fmt.Errorf("command abandoned: %w", ctx.Err()))
		<-res // closing the connection made f return
		return ctx.Err()
	case <-c.closing:
		<-res
		return c.closedErr()
	}
}

// authenticate logs in: with password when it is set (HASHEDPASSWORD),
// otherwise with whatever Tor offers without one (NULL or SAFECOOKIE,
// reading the cookie file Tor names).
func (c *ctlConn) authenticate(ctx context.Context, password string) error {
	return c.do(ctx, func() error {
		pi, err := c.bc.ProtocolInfo()
		if err != nil {
			return fmt.Errorf("protocolinfo: %w", err)
		}
		methods := strings.Join(pi.AuthMethods, ",")
		if password != "" {
			if !pi.HasAuthMethod("HASHEDPASSWORD") {
				return fmt.Errorf("%w: a password was given but Tor offers %s", ErrAuth, methods)
			}
			if _, err := c.bc.SendRequest("AUTHENTICATE %s", hex.EncodeToString([]byte(password))); err != nil {
				return fmt.Errorf("%w: %w", ErrAuth, err)
			}
			c.bc.Authenticated = true
			return nil
		}
		if !pi.HasAuthMethod("NULL") && !pi.HasAuthMethod("SAFECOOKIE") {
			return fmt.Errorf("%w: Tor offers %s; give a password (--tor-control-password-file)", ErrAuth, methods)
		}
		if err := c.bc.Authenticate(""); err != nil {
			return fmt.Errorf("%w: %w", ErrAuth, err)
		}
		return nil
	})
}

// getInfo runs GETINFO and returns the raw values by key; a multi-line
// value ("250+key=" and a dot-terminated block) is returned as its block.
// bine's GetInfo is not used: it unquotes a value that starts and ends
// with a quote as one string, which fails for net/listeners/socks with
// two listeners ("a" "b").
func (c *ctlConn) getInfo(ctx context.Context, keys ...string) (map[string]string, error) {
	var resp *control.Response
	err := c.do(ctx, func() error {
		var err error
		resp, err = c.bc.SendRequest("GETINFO %s", strings.Join(keys, " "))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("getinfo %s: %w", strings.Join(keys, " "), err)
	}
	m := make(map[string]string, len(resp.Data))
	for _, d := range resp.Data {
		k, v, _ := strings.Cut(d, "=")
		if body, ok := strings.CutPrefix(v, "\r\n"); ok {
			v = body
		}
		m[k] = v
	}
	return m, nil
}

// signal sends SIGNAL name.
func (c *ctlConn) signal(ctx context.Context, name string) error {
	if err := c.do(ctx, func() error { return c.bc.Signal(name) }); err != nil {
		return fmt.Errorf("signal %s: %w", name, err)
	}
	return nil
}

// takeOwnership makes Tor exit when this connection closes, so a managed
// Tor never outlives torgate.
func (c *ctlConn) takeOwnership(ctx context.Context) error {
	if err := c.do(ctx, c.bc.TakeOwnership); err != nil {
		return fmt.Errorf("takeownership: %w", err)
	}
	return nil
}

// subscribe turns on the given events and starts delivering them to
// onEvent. Call it once, after authenticate.
func (c *ctlConn) subscribe(ctx context.Context, codes ...string) error {
	ecs := make([]control.EventCode, len(codes))
	for i, s := range codes {
		ecs[i] = control.EventCode(s)
	}
	if err := c.do(ctx, func() error { return c.bc.AddEventListener(c.events, ecs...) }); err != nil {
		return fmt.Errorf("setevents: %w", err)
	}
	c.started = true
	go c.eventLoop()
	return nil
}

// eventLoop reads events while no command is reading its reply. bine's
// HandleNextEvent holds bine's read lock while it waits for the next line;
// when that line is a command's reply rather than an event it returns nil
// without reading it, and calling it again at once would spin on the same
// bytes. So the loop waits for the command to finish first, delivering the
// events that the command's read relays meanwhile.
func (c *ctlConn) eventLoop() {
	defer close(c.loopDone)
	defer c.drainUntilIdle()
	for {
		busy := c.cmdActive.Load()
		if err := c.bc.HandleNextEvent(); err != nil {
			c.fail(err)
			return
		}
		got := c.drain()
		for c.cmdActive.Load() {
			busy = true
			select {
			case ev := <-c.events:
				c.deliver(ev)
			case <-c.cmdDone:
			case <-c.closing:
				return
			}
		}
		if got == 0 && !busy {
			select {
			case <-time.After(idleYield):
			case <-c.closing:
				return
			}
		}
	}
}

// drain delivers the events already relayed, without waiting.
func (c *ctlConn) drain() int {
	n := 0
	for {
		select {
		case ev := <-c.events:
			c.deliver(ev)
			n++
		default:
			return n
		}
	}
}

// drainUntilIdle keeps bine's relay from blocking until the commands still
// running have returned (they fail fast on the closed connection).
func (c *ctlConn) drainUntilIdle() {
	idle := make(chan struct{})
	go func() { c.inflight.Wait(); close(idle) }()
	for {
		select {
		case ev := <-c.events:
			c.deliver(ev)
		case <-idle:
			c.drain()
			return
		}
	}
}

func (c *ctlConn) deliver(ev control.Event) {
	switch e := ev.(type) {
	case *control.StatusEvent:
		c.onEvent(event{Code: string(e.Type), Raw: e.Raw})
	case *control.NetworkLivenessEvent:
		c.onEvent(event{Code: evNetworkLiveness, Raw: e.Raw})
	}
}

// fail ends the connection, recording the first reason (err is never
// nil). closing is closed under errMu, and do adds to inflight under it
// only while no reason is recorded, so every Add happens before every
// Wait (which starts after closing is closed): an Add from zero racing a
// Wait breaks WaitGroup's rule, and the race detector caught it in
// TestManagedRestart (1 run in 40).
func (c *ctlConn) fail(err error) {
	c.errMu.Lock()
	if c.err != nil {
		c.errMu.Unlock()
		return
	}
	c.err = err
	close(c.closing)
	c.errMu.Unlock()
	c.nc.Close()
}

// closedErr reports why the connection ended.
func (c *ctlConn) closedErr() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.err == nil {
		return errConnClosed
	}
	return fmt.Errorf("%w: %w", errConnClosed, c.err)
}

// done is closed when the connection has ended for any reason.
func (c *ctlConn) done() <-chan struct{} { return c.closing }

// close ends the connection and waits for the event loop, if started.
// Not safe to call concurrently with subscribe.
func (c *ctlConn) close() {
	c.fail(errConnClosed)
	if c.started {
		<-c.loopDone
	} else {
		c.inflight.Wait()
	}
}
