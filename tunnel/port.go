package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/torgate/torgate/internal/dest"
	"github.com/torgate/torgate/socks"
)

// The SOCKS ports' side of the tunnel: streams and lookups that a
// workstation asked for on one of torgate's SOCKS ports
// (internal/socksport), which has read the client's handshake and hands
// over the request. They pass the same gates as a transparent flow, in the
// same order: Tor ready, the destination policy and the workstation's
// names, its shares (MaxFlowsPerSource and MaxDialsPerSource count these
// too), the dial through the upstream, Tor still ready, then the relay.
// What differs is the answer: a transparent flow that fails gets a RST; a
// SOCKS client has its TCP connection already and gets a SOCKS failure
// reply instead, with Tor's own code where Tor gave one.

// PortClient is who asked on a SOCKS port, and how: the inputs of the
// request's isolation credentials (Isolator.PortAuth).
type PortClient struct {
	// Who is the workstation (flow.Request.Who): on a LAN the machine,
	// not the packet's address.
	Who netip.Addr
	// Port is the SOCKS port the workstation connected to.
	Port uint16
	// User and Pass are the client's own RFC 1929 username and password,
	// or the SOCKS4 user ID and nil; nil when it sent none. They choose
	// circuits (Tor Browser sends one set per first-party site) and never
	// reach Tor as they are.
	User, Pass []byte
}

// PortStream is a CONNECT that a workstation sent to a SOCKS port.
type PortStream struct {
	PortClient
	// Conn is the client's connection, its handshake read. It must
	// implement CloseWrite (netstack's does) and have no deadline set.
	Conn net.Conn
	// Dst is the destination as the client asked: an IP, or a name, which
	// Tor resolves at the exit unless it is an address literal (then it is
	// that address, under the policy).
	Dst socks.Addr
	// Early is what the client sent after its request without waiting for
	// the reply (ServerReader.Buffered): it goes to the upstream before
	// anything else the client sends. Only read during the call.
	Early []byte
	// More, if set, is called once the upstream accepted the stream,
	// before anything is written to it, and returns what the client sent
	// while Tor dialled; it goes to the upstream after Early. (socksport
	// reads the client during the dial to notice a hang-up and cancel
	// the dial through ctx, as Tor does with a client that leaves.)
	More func() []byte
	// Reply writes the SOCKS reply to the client: ReplySucceeded once the
	// upstream has accepted the stream, else the failure code. It is
	// called at most once.
	Reply func(socks.Reply) error
}

// ConnectPort serves one CONNECT from a SOCKS port: the gates, the dial
// with the credentials PortAuth derives, then the reply, and on success
// the relay. It blocks while it dials (at most DialTimeout; ctx ends it
// sooner, as Server.Close does) and returns the code it replied with. On
// ReplySucceeded the tunnel owns s.Conn from then on; otherwise the
// caller closes it (a failure reply has been sent, or could not be).
func (t *Tunnel) ConnectPort(ctx context.Context, s PortStream) socks.Reply {
	start := time.Now()
	who := s.Who.Unmap()
	l := t.laneOf(who)
	if !t.ready(l) {
		return t.refusePort(s, refuseNotReady)
	}
	target, host, releaseName, why := t.portTarget(who, s.Dst)
	if why != "" {
		return t.refusePort(s, why)
	}
	gen, ok := t.admit(who, l)
	if !ok {
		releaseName()
		return t.refusePort(s, refuseLimit)
	}
	t.flowsActive.Inc()
	relaying := false
	end := func() {
		releaseName()
		t.release(who)
		t.flowsActive.Dec()
	}
	defer func() {
		if !relaying {
			end()
		}
	}()

	dctx, cancel := context.WithTimeout(gen, t.cfg.DialTimeout)
	stop := context.AfterFunc(ctx, cancel)
	up, err := l.Upstream.Connect(dctx, target, t.cfg.Isolator.PortAuth(who, s.Port, s.User, s.Pass, host))
	stop()
	cancel()
	t.dialDone(who)
	if err != nil {
		t.socksErrors.WithLabelValues(replyLabel(err)).Inc()
		t.log.Debug("upstream refused socks-port stream", "src", who, "port", s.Port, "dst", t.dest(target), "err", err)
		code := failureReply(err)
		s.Reply(code)
		return code
	}
	// Tor might have gone down while we dialed: fail closed.
	if !t.ready(l) {
		up.Close()
		return t.refusePort(s, refuseNotReady)
	}
	// The early bytes first: the relay starts only after the reply, and
	// whatever it reads from the client came after them.
	early := s.Early
	if s.More != nil {
		if more := s.More(); len(more) > 0 {
			early = append(early[:len(early):len(early)], more...)
		}
	}
	if len(early) > 0 {
		if _, err := up.Write(early); err != nil {
			up.Close()
			t.socksErrors.WithLabelValues("connect_error").Inc()
			s.Reply(socks.ReplyGeneralFailure)
			return socks.ReplyGeneralFailure
		}
	}
	if err := s.Reply(socks.ReplySucceeded); err != nil {
		up.Close()
		t.refused.WithLabelValues(refuseHandshk).Inc()
		return socks.ReplyGeneralFailure
	}
	t.setupSeconds.Observe(time.Since(start).Seconds())
	t.flowsTotal.Inc()
	relaying = true
	t.relay(l, gen, s.Conn, up, end)
	return socks.ReplySucceeded
}

// ResolvePort answers a RESOLVE from a SOCKS port: name's address as Tor
// resolves it at an exit, with the credentials PortAuth derives, so the
// lookup shares the circuit of the client's streams. The answer is data
// for the client and goes back as Tor gave it; a CONNECT to it meets the
// policy. An address literal is answered here, as Tor would. The lookup
// counts against the workstation's shares while it runs. The reply code
// is ReplySucceeded with the address, or the failure to send.
func (t *Tunnel) ResolvePort(ctx context.Context, c PortClient, name string) (netip.Addr, socks.Reply) {
	who := c.Who.Unmap()
	l := t.laneOf(who)
	if !t.ready(l) {
		return netip.Addr{}, t.refuseLookup(refuseNotReady)
	}
	if ip, lit := dest.ParseLiteral(name); lit {
		return ip, socks.ReplySucceeded
	}
	var ip netip.Addr
	code := t.lookup(ctx, who, l, func(ctx context.Context) error {
		var err error
		ip, err = l.Upstream.Resolve(ctx, name, t.cfg.Isolator.PortAuth(who, c.Port, c.User, c.Pass, name))
		return err
	})
	return ip, code
}

// ResolvePTRPort answers a RESOLVE_PTR from a SOCKS port. A virtual
// address is answered from the workstation's own names (unmapped: host
// unreachable), as the DNS server answers its PTR queries; a forbidden
// address (the policy) is refused without asking an exit, which could only
// learn from it; any other goes to Tor with PortAuth's credentials.
func (t *Tunnel) ResolvePTRPort(ctx context.Context, c PortClient, ip netip.Addr) (string, socks.Reply) {
	who, ip := c.Who.Unmap(), ip.WithZone("").Unmap()
	l := t.laneOf(who)
	if !t.ready(l) {
		return "", t.refuseLookup(refuseNotReady)
	}
	if t.cfg.Names != nil {
		if name, rel, virtual, mapped := t.cfg.Names.Acquire(who, ip); virtual {
			if !mapped {
				return "", t.refuseLookup(refuseUnmapped)
			}
			rel()
			return name, socks.ReplySucceeded
		}
	}
	if t.cfg.Policy.Forbidden(ip) != dest.ReasonAllowed {
		return "", t.refuseLookup(refuseForbid)
	}
	var name string
	code := t.lookup(ctx, who, l, func(ctx context.Context) error {
		var err error
		name, err = l.Upstream.ResolvePTR(ctx, ip, t.cfg.Isolator.PortAuth(who, c.Port, c.User, c.Pass, ip.String()))
		return err
	})
	return name, code
}

// lookup runs one RESOLVE or RESOLVE_PTR through who's lane l under
// who's shares, within DialTimeout and ctx.
func (t *Tunnel) lookup(ctx context.Context, who netip.Addr, l *lane, ask func(context.Context) error) socks.Reply {
	gen, ok := t.admit(who, l)
	if !ok {
		return t.refuseLookup(refuseLimit)
	}
	defer t.release(who)
	dctx, cancel := context.WithTimeout(gen, t.cfg.DialTimeout)
	stop := context.AfterFunc(ctx, cancel)
	err := ask(dctx)
	stop()
	cancel()
	t.dialDone(who)
	if err != nil {
		t.socksErrors.WithLabelValues(replyLabel(err)).Inc()
		return failureReply(err)
	}
	return socks.ReplySucceeded
}

// portTarget is target for a SOCKS request's destination: an address, or
// a name that is an address literal, passes target's gates (the policy,
// a virtual address mapped to its name for who); any other name goes to
// Tor as it is.
func (t *Tunnel) portTarget(who netip.Addr, dst socks.Addr) (a socks.Addr, host string, release func(), refuse string) {
	if dst.Name == "" {
		return t.target(who, netip.AddrPortFrom(dst.IP, dst.Port))
	}
	if ip, lit := dest.ParseLiteral(dst.Name); lit {
		return t.target(who, netip.AddrPortFrom(ip, dst.Port))
	}
	return dst, dst.Name, func() {}, ""
}

// refusePort counts a refusal and sends its reply.
func (t *Tunnel) refusePort(s PortStream, reason string) socks.Reply {
	code := t.refuseLookup(reason)
	s.Reply(code)
	return code
}

// refuseLookup counts a refusal and returns its reply code.
func (t *Tunnel) refuseLookup(reason string) socks.Reply {
	t.refused.WithLabelValues(reason).Inc()
	return refusalReply(reason)
}

// refusalReply is the SOCKS reply for a refusal reason: a forbidden
// destination is "not allowed by ruleset" (what Tor answers for its exit
// policy), an unmapped virtual address "host unreachable" (a name that no
// longer resolves), anything else a general failure.
func refusalReply(reason string) socks.Reply {
	switch reason {
	case refuseForbid:
		return socks.ReplyNotAllowed
	case refuseUnmapped:
		return socks.ReplyHostUnreachable
	}
	return socks.ReplyGeneralFailure
}

// failureReply is the SOCKS reply for a failed dial or lookup: Tor's own
// code if it answered with one (so onion service errors, 0xF0-0xF7, reach
// the client), "TTL expired" for a timeout (as Tor reports its own), else
// a general failure.
func failureReply(err error) socks.Reply {
	var re *socks.ReplyError
	switch {
	case errors.As(err, &re):
		return re.Reply
	case errors.Is(err, context.DeadlineExceeded):
		return socks.ReplyTTLExpired
	}
	return socks.ReplyGeneralFailure
}
