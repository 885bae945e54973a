package torctl

// This file is torgate's one Tor control-port client
// (https://spec.torproject.org/control-spec/), used by the supervisor in
// this package and by the private test network (internal/testnet). It is
// the only file that imports bine's control package, and uses it for two
// things only: authentication (PROTOCOLINFO, SAFECOOKIE) and reading one
// reply. bine's request and event machinery is not used: its calls block
// with no context (control/conn.go) and its event relay blocks on a full
// listener channel (control/cmd_event.go).
//
// How a Conn works: until Authenticate succeeds, bine's calls read and
// write the connection directly, and a context that ends closes it. From
// then on one goroutine, readLoop, is the only reader. It hands each
// reply to the command waiting for it over an unbuffered channel, and
// each event (status 650) to onEvent, in order. A command takes its turn
// (sem), writes its line and waits for its reply, the end of its context
// or the end of the connection. A command abandoned by its context closes the
// connection: the protocol cannot skip a late reply.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"

	"github.com/cretz/bine/control"
)

// Reply is one control-port reply, or one asynchronous event (Status
// 650). Every line of a reply shares its status.
type Reply struct {
	Status int         // 250, 552, 650, ...
	Lines  []ReplyLine // at least one; the last is the final "NNN text" line
}

// ReplyLine is one line of a reply: its text after "NNN-", "NNN+" or
// "NNN ". For a data line ("250+key=" followed by a dot-terminated block)
// Data holds the block with the dot-stuffing removed and its lines joined
// by "\n".
type ReplyLine struct {
	Text string
	Data string
}

// Event is one asynchronous event.
type Event struct {
	Code  string      // "STATUS_CLIENT", "NETWORK_LIVENESS", "STREAM", ...
	Raw   string      // the rest of the first line, e.g. "NOTICE BOOTSTRAP PROGRESS=50 ..."
	Lines []ReplyLine // the whole reply, for the events that span lines (CONF_CHANGED, NS)
}

// ReplyError is a reply whose status is not 2xx. Per call: the
// connection stays usable.
type ReplyError struct {
	Command string // first word of the command, e.g. "GETINFO"
	Status  int    // e.g. 552 (unrecognized key), 515 (bad authentication)
	Text    string // text of the final line
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("tor control %s: %d %s", e.Command, e.Status, e.Text)
}

// Event codes torctl's supervisor subscribes to.
const (
	evStatusClient    = string(control.EventCodeStatusClient)
	evNetworkLiveness = string(control.EventCodeNetworkLiveness)
)

// closedError is returned by commands on a connection that has ended,
// with the reason. It matches net.ErrClosed, so callers can test for it.
type closedError struct{ why error }

func (e *closedError) Error() string {
	if e.why == nil {
		return "tor control connection closed"
	}
	return "tor control connection closed: " + e.why.Error()
}

func (e *closedError) Unwrap() error        { return e.why }
func (e *closedError) Is(target error) bool { return target == net.ErrClosed }

// errCloseCalled is the reason recorded by Close.
var errCloseCalled = errors.New("closed by its user")

// errNotAuthenticated: a command before Authenticate succeeded.
var errNotAuthenticated = errors.New("tor control connection not authenticated")

// Conn is one control connection. Its methods are safe for concurrent
// use; commands are serialised, one request and one reply at a time.
type Conn struct {
	nc      net.Conn
	tp      *textproto.Conn
	bc      *control.Conn
	onEvent func(Event)

	// sem serialises commands: a command holds its one slot from its
	// write to its reply. A channel, not a mutex, so that a command
	// waiting for its turn gives up with its context, and so that
	// synctest sees the wait as durable.
	sem     chan struct{}
	reading bool // readLoop runs; set once by Authenticate, holding sem

	replies  chan Reply    // unbuffered: readLoop to the command waiting
	done     chan struct{} // closed by fail
	loopDone chan struct{} // closed when readLoop returns

	errMu sync.Mutex
	err   error // why the connection ended; guarded by errMu, set once before done closes
}

// NewConn wraps an open connection to a control port. onEvent, if not
// nil, receives the events asked for with SetEvents, in order, on the
// connection's reading goroutine: it must return quickly (replies wait
// behind it) and must not call the Conn's methods. Call Authenticate
// first, and Close when done.
func NewConn(nc net.Conn, onEvent func(Event)) *Conn {
	if onEvent == nil {
		onEvent = func(Event) {}
	}
	tp := textproto.NewConn(nc)
	return &Conn{
		nc:       nc,
		tp:       tp,
		bc:       control.NewConn(tp),
		onEvent:  onEvent,
		sem:      make(chan struct{}, 1),
		replies:  make(chan Reply),
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
}

// Authenticate logs in: with password when it is set (HASHEDPASSWORD),
// otherwise with whatever Tor offers without one (NULL, or SAFECOOKIE
// with the cookie file Tor names). It must be the first call, and starts
// the reading goroutine. If ctx ends first, the connection is closed;
// after any failure only Close is left to call.
func (c *Conn) Authenticate(ctx context.Context, password string) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	if c.reading {
		return nil
	}
	if c.isDone() {
		return c.closedErr()
	}
	stop := context.AfterFunc(ctx, func() { c.fail(fmt.Errorf("authentication abandoned: %w", ctx.Err())) })
	err := c.authenticate(password)
	if !stop() {
		return ctx.Err() // the connection is closed
	}
	if err != nil {
		return err
	}
	if c.isDone() { // closed meanwhile by Close
		return c.closedErr()
	}
	c.reading = true
	go c.readLoop()
	return nil
}

// authenticate does the exchange with bine, which reads the replies
// itself: nothing else reads yet.
func (c *Conn) authenticate(password string) error {
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
		return nil
	}
	if !pi.HasAuthMethod("NULL") && !pi.HasAuthMethod("SAFECOOKIE") {
		return fmt.Errorf("%w: Tor offers %s; give a password (--tor-control-password-file)", ErrAuth, methods)
	}
	if err := c.bc.Authenticate(""); err != nil {
		return fmt.Errorf("%w: %w", ErrAuth, err)
	}
	return nil
}

// readLoop is the connection's only reader once it is authenticated.
func (c *Conn) readLoop() {
	defer close(c.loopDone)
	for {
		resp, err := c.bc.ReadResponse()
		if err != nil {
			c.fail(err)
			return
		}
		rep := replyOf(resp)
		if rep.Status == control.StatusAsyncEvent {
			code, raw, _ := strings.Cut(rep.Lines[0].Text, " ")
			c.onEvent(Event{Code: code, Raw: raw, Lines: rep.Lines})
			continue
		}
		// Tor sends no reply nobody asked for; if it did, the next
		// command would take it, and fail on its content.
		select {
		case c.replies <- rep:
		case <-c.done:
			return
		}
	}
}

// replyOf converts bine's reply. bine keeps a data line's text and block
// in one string, separated by CRLF (which no single line contains).
func replyOf(r *control.Response) Reply {
	rep := Reply{Status: r.Err.Code, Lines: make([]ReplyLine, 0, len(r.Data)+1)}
	for _, d := range r.Data {
		text, data, _ := strings.Cut(d, "\r\n")
		rep.Lines = append(rep.Lines, ReplyLine{Text: text, Data: data})
	}
	rep.Lines = append(rep.Lines, ReplyLine{Text: r.Reply})
	return rep
}

// Request sends one command line (without CRLF) and returns its reply. A
// reply that is not 2xx comes with a *ReplyError. If ctx ends before the
// reply, the connection is closed and ctx.Err() returned.
func (c *Conn) Request(ctx context.Context, line string) (Reply, error) {
	cmd, _, _ := strings.Cut(line, " ")
	if strings.ContainsAny(line, "\r\n") {
		return Reply{}, fmt.Errorf("tor control %s: command contains CR or LF", cmd)
	}
	if err := c.acquire(ctx); err != nil {
		return Reply{}, err // nothing sent: the connection stays usable
	}
	defer c.release()
	switch {
	case c.isDone():
		return Reply{}, c.closedErr()
	case !c.reading:
		return Reply{}, errNotAuthenticated
	case ctx.Err() != nil:
		return Reply{}, ctx.Err() // nothing sent: the connection stays usable
	}
	stop := context.AfterFunc(ctx, func() { c.fail(fmt.Errorf("%s abandoned: %w", cmd, ctx.Err())) })
	defer stop()
	if err := c.tp.PrintfLine("%s", line); err != nil {
		c.fail(err)
	}
	select {
	case rep := <-c.replies:
		if rep.Status < 200 || rep.Status > 299 {
			return rep, &ReplyError{Command: cmd, Status: rep.Status, Text: rep.Lines[len(rep.Lines)-1].Text}
		}
		return rep, nil
	case <-c.done:
		if err := ctx.Err(); err != nil {
			return Reply{}, err
		}
		return Reply{}, c.closedErr()
	}
}

// GetInfo runs GETINFO and returns the value of each key; a multi-line
// value is returned as its block. bine's GetInfo is not used: it unquotes
// a value that starts and ends with a quote as one string, which fails
// for net/listeners/socks with two listeners ("a" "b").
func (c *Conn) GetInfo(ctx context.Context, keys ...string) (map[string]string, error) {
	rep, err := c.Request(ctx, "GETINFO "+strings.Join(keys, " "))
	if err != nil {
		return nil, fmt.Errorf("getinfo %s: %w", strings.Join(keys, " "), err)
	}
	m := make(map[string]string, len(keys))
	for _, l := range rep.Lines[:len(rep.Lines)-1] { // the last is "OK"
		k, v, _ := strings.Cut(l.Text, "=")
		if l.Data != "" {
			v = l.Data
		}
		m[k] = v
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return nil, fmt.Errorf("getinfo %s: %w: no value for %q", strings.Join(keys, " "), ErrSyntax, k)
		}
	}
	return m, nil
}

// SetConf sets one option at runtime.
func (c *Conn) SetConf(ctx context.Context, key, value string) error {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\r", `\r`, "\n", `\n`)
	if _, err := c.Request(ctx, "SETCONF "+key+`="`+r.Replace(value)+`"`); err != nil {
		return fmt.Errorf("setconf %s: %w", key, err)
	}
	return nil
}

// SetEvents replaces the set of events sent to onEvent ("STREAM",
// "STATUS_CLIENT", ...); none turns them off.
func (c *Conn) SetEvents(ctx context.Context, codes ...string) error {
	if _, err := c.Request(ctx, strings.TrimSpace("SETEVENTS "+strings.Join(codes, " "))); err != nil {
		return fmt.Errorf("setevents: %w", err)
	}
	return nil
}

// Signal sends SIGNAL name ("NEWNYM", ...).
func (c *Conn) Signal(ctx context.Context, name string) error {
	if _, err := c.Request(ctx, "SIGNAL "+name); err != nil {
		return fmt.Errorf("signal %s: %w", name, err)
	}
	return nil
}

// takeOwnership makes Tor exit when this connection closes, so a managed
// Tor never outlives torgate.
func (c *Conn) takeOwnership(ctx context.Context) error {
	if _, err := c.Request(ctx, "TAKEOWNERSHIP"); err != nil {
		return fmt.Errorf("takeownership: %w", err)
	}
	return nil
}

// acquire waits for the command slot.
func (c *Conn) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.closedErr()
	}
}

func (c *Conn) release() { <-c.sem }

// fail ends the connection, recording the first reason (err is never
// nil). Closing the socket makes a pending read or write return.
func (c *Conn) fail(err error) {
	c.errMu.Lock()
	if c.err != nil {
		c.errMu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	c.errMu.Unlock()
	c.nc.Close()
}

func (c *Conn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// closedErr reports why the connection ended.
func (c *Conn) closedErr() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.err == errCloseCalled {
		return &closedError{}
	}
	return &closedError{why: c.err}
}

// Done is closed when the connection has ended, for any reason; Err then
// says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is nil while the connection is up; then it wraps net.ErrClosed and
// the reason it ended.
func (c *Conn) Err() error {
	if !c.isDone() {
		return nil
	}
	return c.closedErr()
}

// Close ends the connection and waits until onEvent is no longer called.
// It is idempotent; do not call it from onEvent.
func (c *Conn) Close() error {
	c.fail(errCloseCalled)
	c.sem <- struct{}{} // a command in flight returns: its connection is closed
	reading := c.reading
	c.release()
	if reading {
		<-c.loopDone
	}
	return nil
}
