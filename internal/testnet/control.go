package testnet

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/torgate/torgate/internal/torctl"
)

// eventBuffer is how many events a Control holds for a test that has not
// read them yet. The busiest subscription, STREAM on the client during a
// test's fetches, sends a few per flow.
const eventBuffer = 1024

// Control is a control connection to one of the network's tors:
// torctl's client (torctl.Conn, authenticated with the cookie), plus a
// channel that holds its events for a test to read.
type Control struct {
	*torctl.Conn
	events  chan torctl.Event
	dropped atomic.Int64 // events dropped because events was full
}

// DialControl connects to a control port and authenticates with the
// cookie file the tor behind it names (CookieAuthentication 1).
func DialControl(ctx context.Context, addr string) (*Control, error) {
	return DialControlAt(ctx, "tcp", addr)
}

// DialControlAt is DialControl for a control port ("tcp") or a control
// socket ("unix", a path): a tor the harness did not start, such as the
// one torgate manages (ControlSocket), whose cookie the caller can read.
func DialControlAt(ctx context.Context, network, addr string) (*Control, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("control dial: %w", err)
	}
	c := &Control{events: make(chan torctl.Event, eventBuffer)}
	c.Conn = torctl.NewConn(nc, c.queue)
	if err := c.Authenticate(ctx, ""); err != nil {
		c.Close()
		return nil, fmt.Errorf("control %s: %w", addr, err)
	}
	return c, nil
}

// queue is the Conn's event handler. It never blocks (that would hold up
// replies): a test that does not drain Events loses events, counted.
func (c *Control) queue(ev torctl.Event) {
	select {
	case c.events <- ev:
	default:
		c.dropped.Add(1)
	}
}

// Events returns the events requested with SetEvents. The channel is
// never closed, so select on it together with a context.
func (c *Control) Events() <-chan torctl.Event { return c.events }

// DroppedEvents returns how many events were dropped because Events was
// not drained.
func (c *Control) DroppedEvents() int64 { return c.dropped.Load() }
