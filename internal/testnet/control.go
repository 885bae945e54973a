package testnet

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/torgate/torgate/internal/ctlproto"
)

// Limits of the control-protocol reader, so that a confused peer cannot
// make it buffer without bound. The largest reply the harness reads is
// circuit-status or stream-status of a busy client, a few kB.
const (
	maxControlLine  = 64 << 10
	maxControlReply = 4 << 20
	eventBuffer     = 1024
)

// Control is a minimal client of tor's control protocol
// (https://spec.torproject.org/control-spec/): authenticate with the
// cookie, send one command at a time, and receive asynchronous events.
// Its methods are safe for concurrent use; commands are serialised.
type Control struct {
	conn net.Conn

	mu sync.Mutex // serialises commands: one request, one reply

	replies chan Reply    // synchronous replies, from readLoop
	events  chan Reply    // asynchronous (6xx) replies, from readLoop
	done    chan struct{} // closed when readLoop ends
	readErr error         // why readLoop ended; valid after done
	quit    chan struct{} // closed by Close

	dropped atomic.Int64 // events dropped because events was full
	closed  atomic.Bool
}

// Reply is one control-port reply: every line shares the status code.
type Reply struct {
	Code  int
	Lines []ReplyLine
}

// ReplyLine is one line of a reply. For a data line ("250+key=" followed
// by a dot-terminated block) Data holds the block, lines joined by "\n".
type ReplyLine struct {
	Text string
	Data string
}

// ReplyError is a control reply whose code is not 2xx.
type ReplyError struct {
	Command string // first word of the command
	Code    int
	Text    string
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("control %s: %d %s", e.Command, e.Code, e.Text)
}

// DialControl connects to a control port and authenticates with the cookie
// file of the tor behind it (CookieAuthentication 1).
func DialControl(ctx context.Context, addr, cookiePath string) (*Control, error) {
	cookie, err := os.ReadFile(cookiePath)
	if err != nil {
		return nil, fmt.Errorf("control cookie: %w", err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("control dial: %w", err)
	}
	c := &Control{
		conn:    conn,
		replies: make(chan Reply, 1),
		events:  make(chan Reply, eventBuffer),
		done:    make(chan struct{}),
		quit:    make(chan struct{}),
	}
	go c.readLoop()
	if _, err := c.Do(ctx, "AUTHENTICATE "+hex.EncodeToString(cookie)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// readLoop reads replies and routes them: 6xx to events, the rest to the
// command waiting in Do. It never blocks on events, dropping (and counting)
// instead, so a caller that does not drain Events cannot stall commands.
func (c *Control) readLoop() {
	defer close(c.done)
	r := bufio.NewReaderSize(c.conn, 4096)
	for {
		rep, err := readReply(r)
		if err != nil {
			c.readErr = err
			return
		}
		if rep.Code >= 600 && rep.Code < 700 {
			select {
			case c.events <- rep:
			default:
				c.dropped.Add(1)
			}
			continue
		}
		select {
		case c.replies <- rep:
		case <-c.quit:
			c.readErr = net.ErrClosed
			return
		}
	}
}

// Do sends one command line (without CRLF) and returns its reply. A non-2xx
// reply is returned together with a *ReplyError. If ctx ends first, the
// connection is closed: the protocol has no way to skip a late reply.
func (c *Control) Do(ctx context.Context, line string) (Reply, error) {
	if strings.ContainsAny(line, "\r\n") {
		return Reply{}, errors.New("control: command contains CR or LF")
	}
	cmd, _, _ := strings.Cut(line, " ")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return Reply{}, net.ErrClosed
	}
	dl, _ := ctx.Deadline() // zero (no deadline) when ctx has none
	_ = c.conn.SetWriteDeadline(dl)
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.Close()
		return Reply{}, fmt.Errorf("control %s: %w", cmd, err)
	}
	select {
	case rep := <-c.replies:
		if rep.Code < 200 || rep.Code > 299 {
			text := ""
			if len(rep.Lines) > 0 {
				text = rep.Lines[len(rep.Lines)-1].Text
			}
			return rep, &ReplyError{Command: cmd, Code: rep.Code, Text: text}
		}
		return rep, nil
	case <-c.done:
		return Reply{}, fmt.Errorf("control %s: %w", cmd, c.readErr)
	case <-ctx.Done():
		c.Close()
		return Reply{}, fmt.Errorf("control %s: %w", cmd, ctx.Err())
	}
}

// Events returns the channel of asynchronous events (code 650) requested
// with SetEvents. It is never closed, so select on it together with a
// context. Events arriving while it is full are dropped and counted.
func (c *Control) Events() <-chan Reply { return c.events }

// DroppedEvents returns how many events were dropped because Events was
// not drained.
func (c *Control) DroppedEvents() int64 { return c.dropped.Load() }

// Close closes the connection. It is idempotent.
func (c *Control) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	close(c.quit)
	return c.conn.Close()
}

// GetInfo returns the values of the GETINFO keys.
func (c *Control) GetInfo(ctx context.Context, keys ...string) (map[string]string, error) {
	rep, err := c.Do(ctx, "GETINFO "+strings.Join(keys, " "))
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(keys))
	for _, l := range rep.Lines {
		k, v, ok := strings.Cut(l.Text, "=")
		if !ok {
			continue // the final "OK"
		}
		if l.Data != "" {
			v = l.Data
		}
		out[k] = v
	}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("control GETINFO: no value for %q", k)
		}
	}
	return out, nil
}

// SetConf sets one option at runtime.
func (c *Control) SetConf(ctx context.Context, key, value string) error {
	_, err := c.Do(ctx, "SETCONF "+key+"="+quote(value))
	return err
}

// SetEvents replaces the set of subscribed events (e.g. "STREAM", "CIRC").
func (c *Control) SetEvents(ctx context.Context, events ...string) error {
	_, err := c.Do(ctx, "SETEVENTS "+strings.Join(events, " "))
	return err
}

// Signal sends a SIGNAL command such as "NEWNYM".
func (c *Control) Signal(ctx context.Context, name string) error {
	_, err := c.Do(ctx, "SIGNAL "+name)
	return err
}

// Stream is one stream from GETINFO stream-status or a STREAM event.
type Stream struct {
	ID        string
	Status    string // e.g. "NEW", "SENTCONNECT", "SUCCEEDED"
	CircuitID string // "0" while unattached
	Target    string // host:port; a REMAP event may change it
	// From STREAM events only:
	SourceAddr    string // the SOCKS client's address (its LocalAddr)
	SocksUsername string
	SocksPassword string
}

// Streams returns the client's current streams.
func (c *Control) Streams(ctx context.Context) ([]Stream, error) {
	info, err := c.GetInfo(ctx, "stream-status")
	if err != nil {
		return nil, err
	}
	var out []Stream
	for _, line := range nonEmptyLines(info["stream-status"]) {
		s, err := parseStream(line)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Circuit is one circuit from GETINFO circuit-status.
type Circuit struct {
	ID            string
	Status        string   // e.g. "BUILT", "EXTENDED", "LAUNCHED"
	Path          []string // "$FPR~nick" per hop; the last hop is the exit
	Purpose       string   // e.g. "GENERAL", "HS_CLIENT_REND"
	SocksUsername string   // isolation credentials the circuit is bound to
	SocksPassword string
	Keywords      map[string]string // every KEY=VALUE, unquoted
}

// Circuits returns the client's current circuits.
func (c *Control) Circuits(ctx context.Context) ([]Circuit, error) {
	info, err := c.GetInfo(ctx, "circuit-status")
	if err != nil {
		return nil, err
	}
	var out []Circuit
	for _, line := range nonEmptyLines(info["circuit-status"]) {
		circ, err := parseCircuit(line)
		if err != nil {
			return nil, err
		}
		out = append(out, circ)
	}
	return out, nil
}

// ParseStreamEvent parses a "650 STREAM ..." event.
func ParseStreamEvent(ev Reply) (Stream, bool) {
	if ev.Code != 650 || len(ev.Lines) == 0 {
		return Stream{}, false
	}
	rest, ok := strings.CutPrefix(ev.Lines[0].Text, "STREAM ")
	if !ok {
		return Stream{}, false
	}
	s, err := parseStream(rest)
	if err != nil {
		return Stream{}, false
	}
	return s, true
}

// parseStream parses "ID STATUS CIRCID TARGET [KEY=VALUE ...]".
func parseStream(line string) (Stream, error) {
	f, err := splitQuoted(line)
	if err != nil {
		return Stream{}, err
	}
	if len(f) < 4 {
		return Stream{}, fmt.Errorf("control: bad stream line %q", line)
	}
	s := Stream{ID: f[0], Status: f[1], CircuitID: f[2], Target: f[3]}
	for _, kv := range f[4:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case "SOURCE_ADDR":
			s.SourceAddr = v
		case "SOCKS_USERNAME":
			s.SocksUsername = v
		case "SOCKS_PASSWORD":
			s.SocksPassword = v
		}
	}
	return s, nil
}

// parseCircuit parses "ID STATUS [PATH] [KEY=VALUE ...]".
func parseCircuit(line string) (Circuit, error) {
	f, err := splitQuoted(line)
	if err != nil {
		return Circuit{}, err
	}
	if len(f) < 2 {
		return Circuit{}, fmt.Errorf("control: bad circuit line %q", line)
	}
	circ := Circuit{ID: f[0], Status: f[1], Keywords: map[string]string{}}
	rest := f[2:]
	if len(rest) > 0 && !strings.Contains(rest[0], "=") {
		circ.Path = strings.Split(rest[0], ",")
		rest = rest[1:]
	}
	for _, kv := range rest {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		circ.Keywords[k] = v
	}
	circ.Purpose = circ.Keywords["PURPOSE"]
	circ.SocksUsername = circ.Keywords["SOCKS_USERNAME"]
	circ.SocksPassword = circ.Keywords["SOCKS_PASSWORD"]
	return circ, nil
}

// splitQuoted splits a reply line into fields, unquoting KEY="VALUE"
// tokens (backslash escapes as in the control spec).
func splitQuoted(s string) ([]string, error) {
	f, err := ctlproto.SplitFields(s)
	if err != nil {
		return nil, fmt.Errorf("control: %w in %q", err, s)
	}
	return f, nil
}

// quote makes a control-protocol quoted string.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\r", `\r`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// readReply reads one reply: lines "CODE-text", "CODE+text" (followed by a
// dot-terminated data block) and a final "CODE text".
func readReply(r *bufio.Reader) (Reply, error) {
	var rep Reply
	size := 0
	for {
		line, err := readLine(r)
		if err != nil {
			return Reply{}, err
		}
		if len(line) < 4 {
			return Reply{}, fmt.Errorf("control: short reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 100 || code > 999 {
			return Reply{}, fmt.Errorf("control: bad status in %q", line)
		}
		if rep.Lines == nil {
			rep.Code = code
		} else if code != rep.Code {
			return Reply{}, fmt.Errorf("control: status %d inside reply %d", code, rep.Code)
		}
		rl := ReplyLine{Text: line[4:]}
		size += len(line)
		switch line[3] {
		case ' ':
			rep.Lines = append(rep.Lines, rl)
			return rep, nil
		case '-':
		case '+':
			var data []string
			for {
				dl, err := readLine(r)
				if err != nil {
					return Reply{}, err
				}
				if dl == "." {
					break
				}
				size += len(dl)
				if size > maxControlReply {
					return Reply{}, errors.New("control: reply too large")
				}
				data = append(data, strings.TrimPrefix(dl, "."))
			}
			rl.Data = strings.Join(data, "\n")
		default:
			return Reply{}, fmt.Errorf("control: bad separator in %q", line)
		}
		if size > maxControlReply {
			return Reply{}, errors.New("control: reply too large")
		}
		rep.Lines = append(rep.Lines, rl)
	}
}

// readLine reads one CRLF- (or LF-) terminated line of at most
// maxControlLine bytes.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return "", err
		}
		b = append(b, chunk...)
		if len(b) > maxControlLine {
			return "", errors.New("control: line too long")
		}
		if !isPrefix {
			return strings.TrimSuffix(string(b), "\r"), nil
		}
	}
}
