package dns

// Serving the packet path (netstack's port-53 hook):
//
//	UDP query ─ ServeDatagram ─ workers share of who ─(full)─▶ dropped, counted (Stats.Refused)
//	     │ copy into a pooled buffer, one goroutine per query
//	     └─ Handle (QueryTimeout) ─ fit to maxAnswer (truncate) ─▶ reply.Send
//
//	TCP/53 ─ ServeTCP ─ TCPConns share of who ─(full)─▶ Reject (RST), counted
//	     │ Accept on the caller's goroutine (netstack's forwarder)
//	     └─ serveConn: length-prefixed messages, each through Handle
//
// Both pools are per workstation with a reserve for proven ones
// (internal/fair, Config.Proven); a UDP query never waits for a TCP/53
// slot nor the reverse, so a workstation that holds TCP/53 connections
// open cannot starve anyone's UDP DNS. Close cancels every answer in
// flight and waits for them, at most closeWait.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/torgate/torgate/internal/fair"
	"github.com/torgate/torgate/internal/flow"
)

// Transport is how a message reached the Server, for counting.
type Transport uint8

// Transports.
const (
	TransportUDP Transport = iota
	TransportTCP
	numTransports
)

var transportNames = [numTransports]string{"udp", "tcp"}

// String returns the metric label value of t.
func (t Transport) String() string {
	if t < numTransports {
		return transportNames[t]
	}
	return "invalid"
}

// Refusal is why a UDP query or a TCP/53 connection got no slot.
type Refusal uint8

// Refusals. The label values are those netstack's drop reasons used for
// the same events before the pools moved here.
const (
	// RefusedShare: the workstation holds its share (WorkersPerSource,
	// TCPConnsPerSource).
	RefusedShare Refusal = iota
	// RefusedOverload: the pool is full for this workstation (Workers or
	// TCPConns in use, or all but the reserve and the workstation is
	// not proven or holds its reserve share already).
	RefusedOverload
	numRefusals
)

var refusalNames = [numRefusals]string{"source_share", "overload"}

// String returns the metric label value of r.
func (r Refusal) String() string {
	if r < numRefusals {
		return refusalNames[r]
	}
	return "invalid"
}

// closeWait bounds how long Close waits for answers in flight after
// cancelling them: a canceled Resolver call returns at once, so only a
// Resolver that ignores its context holds Close this long.
const closeWait = 5 * time.Second

// datagramBuf is the capacity of a pooled UDP query or answer buffer:
// every answer fits (at most maxUDP), and so does any ordinary query (one
// question and an OPT record); a larger query gets a buffer of its own.
const datagramBuf = maxUDP

// datagram is the pooled state of one UDP query being answered: all of
// it, so that the goroutine's closure holds two pointers.
type datagram struct {
	who       netip.Addr
	query     []byte // a copy of the caller's query
	answer    []byte // scratch for Handle's answer
	maxAnswer int
	reply     flow.Reply
}

// serving is the Server's packet-path side: pools, timeouts, goroutines.
type serving struct {
	udp, tcp     *fair.Pool
	queryTimeout time.Duration
	datagrams    sync.Pool // of *datagram

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	// mu orders wg.Add against Close's wg.Wait: nothing is added once
	// closed is set.
	mu     sync.RWMutex
	closed bool // guarded by mu
	wg     sync.WaitGroup
}

// init sets up the pools from a checked Config.
func (v *serving) init(cfg *Config) error {
	var err error
	if v.udp, err = fair.NewPool(fair.Default(cfg.Workers, cfg.WorkersPerSource), cfg.Proven); err != nil {
		return &ConfigError{"WorkersPerSource", err.Error()}
	}
	if v.tcp, err = fair.NewPool(fair.Default(cfg.TCPConns, cfg.TCPConnsPerSource), cfg.Proven); err != nil {
		return &ConfigError{"TCPConnsPerSource", err.Error()}
	}
	v.queryTimeout = cfg.QueryTimeout
	v.datagrams.New = func() any {
		return &datagram{query: make([]byte, 0, datagramBuf), answer: make([]byte, 0, datagramBuf)}
	}
	v.ctx, v.cancel = context.WithCancel(context.Background())
	return nil
}

// begin registers one answer in flight, unless Close has begun.
func (v *serving) begin() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return false
	}
	v.wg.Add(1)
	return true
}

// close cancels what is in flight and waits for it, at most closeWait;
// it reports whether everything ended in time.
func (v *serving) close() bool {
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
	v.cancel()
	done := make(chan struct{})
	go func() {
		v.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// take takes a slot of pool p for who, or counts the refusal.
func (s *Server) take(tr Transport, p *fair.Pool, who netip.Addr) bool {
	ok, atShare := p.Take(who)
	switch {
	case ok:
	case atShare:
		s.stats.refused[tr][RefusedShare].Add(1)
	default:
		s.stats.refused[tr][RefusedOverload].Add(1)
	}
	return ok
}

// ServeDatagram answers one UDP query from the workstation who. query
// belongs to the caller and is only read during the call; ServeDatagram
// never blocks: it takes a slot of who's share of Workers (or drops the
// query, counted, and the client retries), copies the query and answers
// it on a goroutine of its own, within QueryTimeout. The answer, cut to
// maxAnswer bytes (the header with TC set if it does not fit: the client
// retries over TCP), goes to reply.Send, which copies it. Nothing is sent
// when there is nothing to send (ErrDrop, an error, a dropped query, or
// the Server closed).
func (s *Server) ServeDatagram(who netip.Addr, query []byte, maxAnswer int, reply flow.Reply) {
	v := &s.serve
	if !s.take(TransportUDP, v.udp, who) {
		return
	}
	if !v.begin() {
		v.udp.Release(who)
		return
	}
	s.stats.messages.Add(1)
	d := v.datagrams.Get().(*datagram)
	d.who, d.maxAnswer, d.reply = who, maxAnswer, reply
	d.query = append(d.query[:0], query...)
	go s.answerDatagram(d)
}

// answerDatagram is ServeDatagram's goroutine.
func (s *Server) answerDatagram(d *datagram) {
	v := &s.serve
	defer v.wg.Done()
	defer v.udp.Release(d.who)
	ctx, cancel := context.WithTimeout(v.ctx, v.queryTimeout)
	answer, err := s.Handle(ctx, d.who, d.query, true, d.answer[:0])
	cancel()
	if err == nil && len(answer) >= headerLen && v.ctx.Err() == nil {
		d.reply.Send(truncate(answer, d.maxAnswer))
	}
	d.reply = flow.Reply{}
	// A buffer grown for an outsized query or answer is not kept.
	if cap(d.query) <= datagramBuf && cap(answer) <= datagramBuf {
		d.answer = answer[:0]
		v.datagrams.Put(d)
	}
}

// ServeTCP serves DNS over TCP on one intercepted connection to port 53
// (RFC 7766), from the workstation f.Who. It runs on the caller's
// goroutine until the connection ends. The connection takes a slot of
// who's share of TCPConns, never a UDP worker; over its share it is
// rejected (a RST: TCP/53 SYNs are rare and cheap to refuse). The
// accepted connection must implement CloseWrite (netstack's does): the
// last answers go out before a FIN, never a RST.
func (s *Server) ServeTCP(f flow.Request) {
	v := &s.serve
	who := f.Who()
	if !s.take(TransportTCP, v.tcp, who) {
		f.Reject()
		return
	}
	defer v.tcp.Release(who)
	if !v.begin() {
		f.Reject()
		return
	}
	defer v.wg.Done()
	c, err := f.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	conn, ok := c.(TCPConn)
	if !ok {
		s.log.Error("dns tcp connection without CloseWrite", slog.String("type", fmt.Sprintf("%T", c)))
		return
	}
	// Close ends the connection: its reads fail and serveConn returns.
	stop := context.AfterFunc(v.ctx, func() { c.Close() })
	defer stop()
	serveConn(conn, func(query, scratch []byte) ([]byte, error) {
		s.stats.messages.Add(1)
		ctx, cancel := context.WithTimeout(v.ctx, v.queryTimeout)
		defer cancel()
		return s.Handle(ctx, who, query, false, scratch)
	})
}
