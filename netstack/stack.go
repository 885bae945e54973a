package netstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/torgate/torgate/internal/defaults"
	"github.com/torgate/torgate/internal/fair"
	"github.com/torgate/torgate/internal/flow"
	"github.com/torgate/torgate/internal/vnet"
)

// TCPHandler serves the TCP flows a Stack hands out. tunnel.Tunnel
// implements it.
type TCPHandler interface {
	// ServeTCP runs on a goroutine of its own for each connection
	// attempt, held at the SYN, and must Accept or Reject it (one it
	// leaves undecided is rejected when it returns).
	ServeTCP(flow.Request)
}

// TCPHandlerFunc lets a function be a TCPHandler.
type TCPHandlerFunc func(flow.Request)

// ServeTCP calls f(r).
func (f TCPHandlerFunc) ServeTCP(r flow.Request) { f(r) }

// DNSHandler is the port-53 hook: it answers UDP and TCP port 53 to any
// destination, and owns the limits on doing so. dns.Server implements it.
type DNSHandler interface {
	// ServeTCP serves one TCP/53 connection attempt, exactly as
	// TCPHandler.ServeTCP does an ordinary flow.
	ServeTCP(flow.Request)
	// ServeDatagram answers one UDP query from the workstation who. It
	// runs on the packet loop and must not block: it answers on a
	// goroutine of its own, or drops the query. query is valid only
	// during the call (copy what is kept). maxAnswer is the most that
	// fits one packet at the link MTU. reply.Send sends an answer as a
	// UDP datagram from the address the query was sent to, to the
	// querier, from any goroutine; after Close it sends nothing.
	ServeDatagram(who netip.Addr, query []byte, maxAnswer int, reply flow.Reply)
}

// Config configures a Stack. Zero values take the documented defaults.
type Config struct {
	// Device is the TUN the workstations' packets arrive on. Required. The
	// Stack owns it from Start on and closes it in Close.
	Device tun.Device
	// MTU of the link; 0 means Device.MTU().
	MTU int
	// TCP receives every TCP flow but those to port 53, each a
	// *TCPRequest. Required.
	TCP TCPHandler
	// DNS receives UDP and TCP port 53 to any destination; its who is the
	// workstation (Identify), not the packet's address. Nil drops DNS
	// (counted as ReasonNoHandler) and resets TCP/53.
	DNS DNSHandler
	// Identify maps a packet's source address to the workstation that
	// sent it: the key of every per-workstation share below, TCPRequest.Who
	// and the DNS handler's who. On a LAN a workstation is a machine
	// (lan.Device.Identity: its IPv4 and IPv6 addresses are one). ok false
	// drops the SYN or query (ReasonUnidentified). Nil: each address is a
	// workstation of its own.
	Identify func(src netip.Addr) (who netip.Addr, ok bool)
	// Proof records the workstations that completed a TCP handshake
	// (NewProof), which the fair shares' reserve goes to; pass one to
	// share that evidence with another part (the DNS table). Nil: the
	// Stack makes its own.
	Proof *fair.Proof
	// MaxInFlight caps pending handshakes: SYNs held while the handler
	// decides (that is, SOCKS dials in progress) and then while the
	// handshake completes, across all sources. Default 1024.
	MaxInFlight int
	// MaxInFlightPerSource is one source address's share of MaxInFlight.
	// Default 128. The last quarter of MaxInFlight is a reserve that only
	// sources proven by a completed handshake, holding fewer than
	// MaxInFlight/128 (at least 1), may take (package internal/fair says
	// why). A SYN over its source's share is dropped silently
	// (ReasonShare): a RST would be reflected to whatever address a
	// spoofer wrote, and a real client just retransmits its SYN.
	MaxInFlightPerSource int
	// ICMPUnreachable makes dropped non-DNS UDP get an ICMP port
	// unreachable from gVisor instead of silence. Default off.
	ICMPUnreachable bool
	// Logger for setup and rare errors; nil discards. Nothing is logged per
	// packet.
	Logger *slog.Logger
	// NoOffload makes the Stack use the device's Read and Write even when
	// it is a Linux TUN with virtio-net headers or an OffloadDevice, where
	// it would otherwise read and write super-packets itself (see
	// vnet_linux.go, offload.go). For measuring the offload path against
	// the generic one.
	NoOffload bool
}

// Defaults applied by New.
const (
	defaultMaxInFlight          = 1024
	defaultMaxInFlightPerSource = 128
	// outboundQueueLen bounds data packets gVisor may queue towards the
	// TUN. 4096 MTU-sized packets are 6 MiB: enough to absorb a burst from
	// all flows between two writeLoop passes, small enough to bound
	// memory.
	outboundQueueLen = 4096
	// outboundControlLen bounds the queue for segments without payload
	// (SYN-ACK, ACK, FIN, RST) beyond outboundQueueLen. Ending 10k flows
	// at once (Tor restarted, shutdown) emits a RST or FIN per flow in one
	// burst, faster than writeLoop drains; a dropped RST is never
	// retransmitted, so the workstation's socket would hang. Each queued
	// control packet costs ~0.5 KiB, so 32768 bound it to ~16 MiB.
	outboundControlLen = 32768
	// handshakeTimeout bounds how long an accepted request waits for the
	// workstation's ACK to our SYN-ACK. gVisor retransmits the SYN-ACK at
	// 1, 3 and 7 s and gives up only after its maximum RTO (about 127 s
	// in all), which let unanswered handshakes hold the pending pool for
	// two minutes (measured 2026-12). A workstation on the LAN answers in
	// milliseconds; 8 s covers three lost SYN-ACKs.
	handshakeTimeout = 8 * time.Second
	// proofTTL is how long a completed handshake keeps its source proven
	// (see internal/fair), and proofMax how many sources are remembered.
	proofTTL = time.Hour
	proofMax = 4096
	// headroom in front of every packet written to the TUN: the Linux
	// device steps back 10 bytes to write a virtio-net header when offloads
	// are on (wireguard tun_linux.go). 16 keeps the packet 8-byte aligned.
	headroom = 16
	nicID    = tcpip.NICID(1)
)

// Stats are the packet loop's counters. All fields are updated atomically.
type Stats struct {
	PacketsIn, BytesIn   atomic.Uint64
	PacketsOut, BytesOut atomic.Uint64
	// Drops by Reason.
	Drops [numReasons]atomic.Uint64
	// TimeWaitReclaimed counts SYNs that reused a 4-tuple still in
	// TIME_WAIT and got a fresh endpoint.
	TimeWaitReclaimed atomic.Uint64
	// OutboundDrops counts packets lost on the way to the TUN (queue
	// full, write failed); they are also in Drops[ReasonOverload].
	OutboundDrops atomic.Uint64
}

// Stack is the userspace TCP/IP stack in front of the TUN.
type Stack struct {
	cfg   Config
	log   *slog.Logger
	dev   tun.Device
	mtu   int
	stack *stack.Stack
	ep    *linkEndpoint
	vnet  vnetIO // non-nil on the offload path
	// gro coalesces the generic path's inbound TCP segments per read
	// batch; only readLoop touches it.
	gro   gro.GRO
	stats Stats

	// The fair share (internal/fair) of pending handshakes, a pool with
	// per-source caps; proof holds the sources that completed a
	// handshake. DNS's shares are the DNS handler's.
	proof   *fair.Proof
	pending *fair.Pool
	fwd     *tcp.Forwarder
	// pendingIDs holds the 4-tuples of admitted SYNs until their request
	// completes, so that a retransmitted SYN is not counted twice.
	pendingMu  sync.Mutex
	pendingIDs map[stack.TransportEndpointID]netip.Addr // the workstation; guarded by pendingMu

	ctx    context.Context // alive until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	startOnce sync.Once
	closeOnce sync.Once

	// loopErr holds the error that ended a packet loop early (an error).
	loopErr atomic.Value
	// done is closed when the packet loop ends or the stack closes.
	done     chan struct{}
	doneOnce sync.Once
}

// New validates cfg and builds the gVisor stack. It does not read the TUN
// until Start.
func New(cfg Config) (*Stack, error) {
	if cfg.Device == nil {
		return nil, errors.New("netstack: nil Device")
	}
	if cfg.TCP == nil {
		return nil, errors.New("netstack: nil TCP handler")
	}
	for _, v := range []int{cfg.MaxInFlight, cfg.MaxInFlightPerSource, cfg.MTU} {
		if v < 0 {
			return nil, errors.New("netstack: negative limit in Config")
		}
	}
	defaults.Set(&cfg.MaxInFlight, defaultMaxInFlight)
	defaults.Set(&cfg.MaxInFlightPerSource, min(defaultMaxInFlightPerSource, cfg.MaxInFlight))
	proof := cfg.Proof
	if proof == nil {
		proof = NewProof()
	}
	pending, err := fair.NewPool(fair.Default(cfg.MaxInFlight, cfg.MaxInFlightPerSource), proof.Has)
	if err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		m, err := cfg.Device.MTU()
		if err != nil {
			return nil, fmt.Errorf("netstack: read tun mtu: %w", err)
		}
		mtu = m
	}
	if mtu < 1280 || mtu > 65535 {
		return nil, fmt.Errorf("netstack: mtu %d out of range 1280-65535 (IPv6 needs 1280)", mtu)
	}

	s := &Stack{
		cfg:        cfg,
		log:        log,
		dev:        cfg.Device,
		mtu:        mtu,
		proof:      proof,
		pending:    pending,
		pendingIDs: make(map[stack.TransportEndpointID]netip.Addr),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	if err := s.build(); err != nil {
		return nil, err
	}
	return s, nil
}

// build creates the gVisor stack. Every tuning choice carries its reason.
func (s *Stack) build() error {
	transports := []stack.TransportProtocolFactory{tcp.NewProtocol}
	if s.cfg.ICMPUnreachable {
		// gVisor answers UDP to a closed port with ICMP port unreachable;
		// it needs the UDP and ICMP protocols to do so.
		transports = append(transports, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6)
	}
	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: transports,
	})
	s.stack = st

	for _, opt := range []tcpip.SettableTransportProtocolOption{
		// SACK off (gVisor's default is on). gVisor's SACK recovery walks
		// the scoreboard on every ACK and allocates as it goes: with 8
		// downstream flows and a few queue overflows, 27-37 allocations
		// per packet in bench's BenchmarkBulk/down/flows=8, against 0.3
		// without SACK, and 0.32 -> 0.35 of the kernel path in the system
		// benchmark (bench/README.md). Losses on the TUN link are rare
		// bursts where NewReno recovers within a microsecond RTT; on a
		// lossy LAN it recovers one hole per RTT, a price worth the CPU.
		ptr(tcpip.TCPSACKEnabled(false)),
		// RACK loss detection (gVisor's default) off: classic duplicate
		// ACK recovery. gVisor's RACK costs CPU per segment (tailscale
		// turned it off for that, tailscale/tailscale#9707); here turning
		// it off raised 8-stream downstream from 0.22 to 0.32 of the
		// kernel path (bench/README.md). Reno stays gVisor's default
		// congestion control: cubic measured no better.
		ptr(tcpip.TCPRecovery(0)),
		// A TIME_WAIT endpoint protects against old duplicates on a path
		// with real delay and re-acknowledges a retransmitted FIN; on the
		// TUN link (and a LAN) the RTT is microseconds to a millisecond,
		// and a workstation retransmits a FIN whose ACK was lost after its
		// minimum RTO (200 ms on Linux): 500 ms re-acknowledges that
		// first retransmission. Were the ACK lost twice, the third FIN
		// gets a RST, which ends the workstation's LAST_ACK as well. Every
		// endpoint in TIME_WAIT holds ~3 KiB (measured in process,
		// 2026-12-02), and torgate closes first whenever the destination
		// does (web servers): at 1,800 conn/s, 1 s of them was ~5 MiB of
		// live heap, and peak RSS under 16 closed-loop workers fell from
		// 34.7 to 29.2 MiB with 500 ms (bench/README.md). SYNs that reuse
		// a 4-tuple within it are handled by reclaimTimeWait.
		ptr(tcpip.TCPTimeWaitTimeoutOption(timeWait)),
		// Receive-buffer auto-tuning grows windows for bulk flows and
		// keeps idle flows small (memory per idle flow).
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
	} {
		if err := st.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("netstack: set tcp option %T: %v", opt, err)
		}
	}

	s.ep = newLinkEndpoint(s.mtu, outboundQueueLen, outboundControlLen, [2]*atomic.Uint64{&s.stats.Drops[ReasonOverload], &s.stats.OutboundDrops})
	if !s.cfg.NoOffload {
		s.vnet = openVnet(s.dev)
		if s.vnet == nil {
			s.vnet = openOffload(s.dev)
		}
	}
	if s.vnet != nil {
		// Host GSO: gVisor's TCP hands over segments of up to 64 KiB with
		// a partial checksum, and the kernel finishes them.
		s.ep.gsoMax = vnetDefaultGSOMaxLen
		s.ep.writeDirect = s.writeVnet
	}
	// gVisor takes a packet's checksum state from the NIC, not from the
	// packet: with this capability it checks none, and inbound checks
	// every one the kernel did not vouch for (checksumsValid) before GRO,
	// so each packet is summed once (gvisor.go G5). The endpoint is also
	// the NIC's queueing discipline (G3).
	s.ep.caps = rxChecksumOffload
	if err := createNIC(st, s.ep); err != nil {
		return fmt.Errorf("netstack: create nic: %v", err)
	}
	// Promiscuous mode accepts packets to any destination address, and
	// spoofing lets the stack answer from that address: together they let
	// one NIC terminate flows to the whole Internet.
	if err := st.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("netstack: promiscuous: %v", err)
	}
	if err := st.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("netstack: spoofing: %v", err)
	}
	st.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})

	// gVisor's forwarder keeps one global count of requests in flight;
	// handleSYN admits SYNs by source first and always holds at least
	// every request gVisor does, so gVisor's cap is only a backstop.
	s.fwd = tcp.NewForwarder(st, 0, s.cfg.MaxInFlight, s.forwardTCP)
	st.SetTransportProtocolHandler(tcp.ProtocolNumber, s.handleSYN)
	return nil
}

func ptr[T any](v T) *T { return &v }

// handleSYN is gVisor's handler for TCP segments no endpoint owns. A new
// SYN takes a slot of its source's share of pending handshakes before the
// forwarder sees it; the slot is held until the request completes
// (TCPRequest.complete). It runs on the packet loop.
func (s *Stack) handleSYN(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	th := header.TCP(pkt.TransportHeader().Slice())
	if len(th) < header.TCPMinimumSize || th.Flags()&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn {
		return forwardSYN(s.fwd, id, pkt)
	}
	s.pendingMu.Lock()
	if _, dup := s.pendingIDs[id]; dup {
		// A retransmitted SYN while we dial: the forwarder holds the
		// request (our entry outlives its one) and ignores it too.
		s.pendingMu.Unlock()
		return true
	}
	s.pendingMu.Unlock()
	src, ok := s.identify(addrFrom(id.RemoteAddress))
	if !ok {
		s.stats.Drops[ReasonUnidentified].Add(1)
		return true
	}
	s.pendingMu.Lock()
	if _, dup := s.pendingIDs[id]; dup {
		s.pendingMu.Unlock()
		return true
	}
	if !s.pending.Acquire(src) {
		s.pendingMu.Unlock()
		s.stats.Drops[ReasonShare].Add(1)
		return true
	}
	s.pendingIDs[id] = src
	s.pendingMu.Unlock()
	// The forwarder starts a request unless the segment is malformed: its
	// own map has no entry for id (ours is added before and removed after
	// its one), and it holds no more requests than we do (gvisor.go G8).
	if !forwardSYN(s.fwd, id, pkt) {
		s.releasePending(id, src)
		return false
	}
	return true
}

// NewProof returns the record of proven workstations a Stack keeps
// (Config.Proof): a completed handshake proves a workstation for proofTTL.
func NewProof() *fair.Proof { return fair.NewProof(proofTTL, proofMax, nil) }

// identify returns the workstation that sent from src (Config.Identify).
func (s *Stack) identify(src netip.Addr) (netip.Addr, bool) {
	if s.cfg.Identify == nil {
		return src, true
	}
	return s.cfg.Identify(src)
}

func (s *Stack) releasePending(id stack.TransportEndpointID, src netip.Addr) {
	s.pendingMu.Lock()
	delete(s.pendingIDs, id)
	s.pendingMu.Unlock()
	s.pending.Release(src)
}

// Pending returns the pending handshakes workstation src holds and the
// total, for tests and metrics.
func (s *Stack) Pending(src netip.Addr) (held, total int) { return s.pending.Held(src) }

// Stats returns the live counters.
func (s *Stack) Stats() *Stats { return &s.stats }

// MTU returns the link MTU in use.
func (s *Stack) MTU() int { return s.mtu }

// Start runs the packet loops. It may be called once.
func (s *Stack) Start() {
	s.startOnce.Do(func() {
		// GRO merges consecutive in-order segments of a flow within one
		// read batch into one packet of up to 64 KiB before gVisor's IP
		// and TCP see them (as ts gro_default.go does); the offload path
		// gets such super-packets from the kernel and needs none. Set up
		// here, before the loops start, so that readLoop (or a test
		// playing it) finds it ready (gvisor.go G4).
		if d := s.ep.dispatcher.Load(); d != nil && *d != nil {
			initGRO(&s.gro, *d)
		}
		if s.vnet != nil {
			s.wg.Go(s.readLoopVnet)
			return
		}
		s.wg.Go(s.readLoop)
		s.wg.Go(s.writeLoop)
	})
}

// Close stops the loops, closes the TUN and the gVisor stack, and waits.
// Established flows see their connections fail.
// Drain waits, at most timeout, until what gVisor sends has reached the
// TUN: the outbound queue has been empty for drainSettle (gVisor sends an
// aborted endpoint's RST from its own goroutine, a moment after Abort
// returns). Call it before Close after ending flows (shutdown), or their
// RSTs die in the queue and workstations wait for their own timeouts.
func (s *Stack) Drain(timeout time.Duration) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	settle := time.NewTimer(drainSettle)
	defer settle.Stop()
	for {
		n, changed := s.ep.changes()
		if n > 0 {
			settle.Stop()
		} else {
			settle.Reset(drainSettle)
		}
		select {
		case <-changed:
		case <-settle.C:
			return
		case <-deadline.C:
			return
		}
	}
}

// drainSettle is how long Drain wants the queue to stay empty: the RSTs
// of flows ended together leave within a few milliseconds of each other.
const drainSettle = 50 * time.Millisecond

func (s *Stack) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.cancel()
		s.stopped()
		// Closing the device unblocks readLoop's Read.
		err = s.dev.Close()
		s.ep.Close()
		s.stack.Close()
		s.wg.Wait()
		s.stack.Wait()
	})
	return err
}

// readLoop reads batches from the TUN and dispatches each packet.
func (s *Stack) readLoop() {
	batch := max(s.dev.BatchSize(), 1)
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	// Offloads can hand us coalesced super-packets split into batch
	// entries of up to MTU each; the device splits GSO itself.
	for i := range bufs {
		bufs[i] = make([]byte, headroom+s.mtu+64)
	}
	for {
		n, err := s.dev.Read(bufs, sizes, headroom)
		if err != nil {
			if errors.Is(err, tun.ErrTooManySegments) {
				s.stats.Drops[ReasonTooManySegments].Add(1)
			} else if s.ctx.Err() != nil {
				return
			} else {
				// os.ErrClosed while the stack runs is the TUN going
				// away under it (the device was deleted): a failure.
				s.log.Error("tun read failed", "err", err)
				s.fail(fmt.Errorf("netstack: tun read: %w", err))
				return
			}
		}
		var bytes uint64
		for i := range n {
			pkt := bufs[i][headroom : headroom+sizes[i]]
			bytes += uint64(len(pkt))
			s.inbound(pkt, false)
		}
		s.gro.Flush()
		s.stats.PacketsIn.Add(uint64(n))
		s.stats.BytesIn.Add(bytes)
	}
}

// inbound classifies one packet and sends it on its way. pkt is only valid
// for the duration of the call. csumOK means the kernel vouched for the
// checksums (virtio NEEDS_CSUM: the packet never crossed a wire, and its
// transport checksum holds only the pseudo-header sum).
func (s *Stack) inbound(pkt []byte, csumOK bool) {
	p := Classify(pkt)
	switch p.Verdict {
	case VerdictTCP:
		if !csumOK && !checksumsValid(&p, pkt[:p.Len]) {
			s.stats.Drops[ReasonMalformed].Add(1)
			return
		}
		if p.TCPFlags&(tcpFlagSyn|tcpFlagAck) == tcpFlagSyn {
			s.reclaimTimeWait(&p)
		}
		s.deliver(&p, pkt[:p.Len])
	case VerdictDNS:
		if s.cfg.DNS == nil {
			s.stats.Drops[ReasonNoHandler].Add(1)
			return
		}
		s.dnsUDP(&p, pkt[:p.Len], csumOK)
	default:
		if p.Reason == ReasonUDP && s.cfg.ICMPUnreachable && (csumOK || checksumsValid(&p, pkt[:p.Len])) {
			s.deliver(&p, pkt[:p.Len])
		}
		s.stats.Drops[p.Reason].Add(1)
	}
}

// checksumsValid checks the IPv4 header checksum and the TCP or UDP
// checksum of a classified packet. gVisor checks none (the NIC claims RX
// checksum offload), so inbound does, once, for every packet the kernel
// did not mark NEEDS_CSUM (those were made on this machine).
func checksumsValid(p *Packet, pkt []byte) bool {
	var src, dst tcpip.Address
	if p.Version == 4 {
		ip := header.IPv4(pkt)
		if !ip.IsChecksumValid() {
			return false
		}
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv6(pkt)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	l4 := pkt[p.L4:]
	switch p.Proto {
	case protoTCP:
		t := header.TCP(l4)
		off := int(t.DataOffset())
		payload := l4[off:]
		return t.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload)))
	case protoUDP:
		u := header.UDP(l4)
		if p.Version == 4 && u.Checksum() == 0 {
			return true
		}
		payload := l4[header.UDPMinimumSize:]
		return u.IsChecksumValid(src, dst, checksum.Checksum(payload, 0))
	}
	return true
}

// deliver copies pkt into a gVisor buffer (the one copy on the way in) and
// hands it to the stack, which takes its own references. Its checksums
// were checked (or vouched for by the kernel) already. On the generic path
// TCP goes through GRO; readLoop flushes it after each batch.
func (s *Stack) deliver(p *Packet, pkt []byte) {
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	pkb.NetworkProtocolNumber = header.IPv4ProtocolNumber
	if p.Version == 6 {
		pkb.NetworkProtocolNumber = header.IPv6ProtocolNumber
	}
	pkb.RXChecksumValidated = true
	if s.vnet == nil && p.Proto == protoTCP && s.gro.Dispatcher != nil {
		s.gro.Enqueue(pkb)
	} else {
		s.ep.deliver(pkb.NetworkProtocolNumber, pkb)
	}
	pkb.DecRef()
}

// readLoopVnet is readLoop for the offload path: one packet or TCP
// super-packet per read, with its virtio-net header.
func (s *Stack) readLoopVnet() {
	buf := make([]byte, vnetHdrLen+maxIPPacket)
	for {
		n, err := s.vnet.read(buf)
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			// As in readLoop: a closed TUN while running is a failure.
			s.log.Error("tun read failed", "err", err)
			s.fail(fmt.Errorf("netstack: tun read: %w", err))
			return
		}
		if n < vnetHdrLen {
			s.stats.Drops[ReasonMalformed].Add(1)
			continue
		}
		h := vnet.Decode(buf[:vnetHdrLen])
		pkt := buf[vnetHdrLen:n]
		switch h.GSOType &^ vnet.GSOECN {
		case vnet.GSONone, vnet.GSOTCPv4, vnet.GSOTCPv6:
			// A TCP super-packet carries a full-length IP header and a
			// partial checksum, or one GRO left stale under DATA_VALID;
			// gVisor takes it whole.
			s.inbound(pkt, h.ChecksumTrusted())
		default:
			// UDP GSO (an application using UDP_SEGMENT): never DNS.
			s.stats.Drops[ReasonUDP].Add(1)
		}
		s.stats.PacketsIn.Add(1)
		s.stats.BytesIn.Add(uint64(len(pkt)))
	}
}

// writeVnet is the link endpoint's direct write on the offload path.
func (s *Stack) writeVnet(pkt *stack.PacketBuffer) bool {
	if err := s.vnet.write(pkt); err != nil {
		// While closing, the stack still sends a few RSTs to a closed
		// device: those are not drops.
		if s.ctx.Err() == nil {
			s.stats.Drops[ReasonOverload].Add(1)
			s.stats.OutboundDrops.Add(1)
		}
		return false
	}
	s.stats.PacketsOut.Add(1)
	s.stats.BytesOut.Add(uint64(pkt.Size()))
	return true
}

// reclaimTimeWait handles a SYN whose 4-tuple still belongs to an endpoint
// in TIME_WAIT. gVisor hands such a SYN only to a listening endpoint; the
// forwarder is not one, so the SYN would vanish and a client reconnecting
// fast to one destination would see connect timeouts. Aborting the old
// endpoint first lets the SYN reach the forwarder as a new flow
// (abortTimeWait, gvisor.go G1).
func (s *Stack) reclaimTimeWait(p *Packet) {
	netProto := header.IPv4ProtocolNumber
	if p.Version == 6 {
		netProto = header.IPv6ProtocolNumber
	}
	id := stack.TransportEndpointID{
		LocalPort:     p.Dst.Port(),
		LocalAddress:  tcpip.AddrFromSlice(p.Dst.Addr().AsSlice()),
		RemotePort:    p.Src.Port(),
		RemoteAddress: tcpip.AddrFromSlice(p.Src.Addr().AsSlice()),
	}
	if abortTimeWait(s.stack, netProto, id) {
		s.stats.TimeWaitReclaimed.Add(1)
	}
}

// writeLoop drains the outbound queue a batch at a time into the TUN.
func (s *Stack) writeLoop() {
	batch := max(s.dev.BatchSize(), 1)
	if batch < 32 {
		// The in-memory and single-packet devices still profit from
		// draining the queue in one pass.
		batch = 32
	}
	pkts := make([]*stack.PacketBuffer, batch)
	bufs := make([][]byte, batch)
	store := make([][]byte, batch)
	for i := range store {
		store[i] = make([]byte, headroom+s.mtu)
	}
	for {
		k := s.ep.dequeue(s.ctx, pkts)
		if k == 0 {
			return
		}
		n := 0
		var bytes uint64
		for _, pkt := range pkts[:k] {
			size := pkt.Size()
			if size <= s.mtu {
				b := store[n][:headroom+size]
				CopyPacket(b[headroom:], pkt)
				bufs[n] = b
				n++
				bytes += uint64(size)
			} else {
				s.stats.Drops[ReasonMalformed].Add(1)
			}
			pkt.DecRef()
		}
		clear(pkts[:k])
		if n == 0 {
			continue
		}
		if _, err := s.dev.Write(bufs[:n], headroom); err != nil {
			if s.ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return
			}
			// A failed write of one batch is not the end of the link:
			// TCP retransmits. Count it and keep going.
			s.stats.Drops[ReasonOverload].Add(uint64(n))
			s.stats.OutboundDrops.Add(uint64(n))
			continue
		}
		s.stats.PacketsOut.Add(uint64(n))
		s.stats.BytesOut.Add(bytes)
	}
}

// TCPRequest is one TCP connection attempt from a workstation. The
// handshake is held (the SYN is not answered) until Accept or Reject.
type TCPRequest struct {
	src netip.AddrPort // the workstation's address and port
	who netip.Addr     // the workstation (Config.Identify)
	dst netip.AddrPort // the original destination

	r    *tcp.ForwarderRequest
	s    *Stack
	done atomic.Bool
	// complete runs once after the forwarder request completed; accepted
	// reports a completed handshake.
	complete func(accepted bool)
}

var _ flow.Request = (*TCPRequest)(nil)

// Who is the workstation (Config.Identify): the key of its shares,
// circuits and names. Src().Addr() without an Identify.
func (r *TCPRequest) Who() netip.Addr { return r.who }

// Src is the workstation's address and port.
func (r *TCPRequest) Src() netip.AddrPort { return r.src }

// Dst is the original destination the workstation asked for.
func (r *TCPRequest) Dst() netip.AddrPort { return r.dst }

// ErrCompleted is returned by Accept when the request was already accepted
// or rejected.
var ErrCompleted = errors.New("netstack: tcp request already completed")

// Accept completes the handshake and returns the connection. The returned
// net.Conn is a *Conn: CloseRead and CloseWrite for half-close, and
// TryRead, Readable and NotifyRead for a relay that holds no goroutine
// while the flow is idle.
func (r *TCPRequest) Accept() (net.Conn, error) {
	if !r.done.CompareAndSwap(false, true) {
		return nil, ErrCompleted
	}
	var wq waiter.Queue
	// Sends the SYN-ACK and waits for the ACK, at most handshakeTimeout
	// (gvisor.go G9); on failure the slot is free again.
	ep, err := createEndpoint(r.r, &wq, handshakeTimeout)
	if err != nil {
		r.r.Complete(true)
		r.finish(false)
		return nil, fmt.Errorf("netstack: tcp handshake: %s", err)
	}
	r.r.Complete(false)
	r.finish(true)
	// Keepalive finds workstations that vanished without a FIN, or whose
	// FIN or RST was lost (a full TUN queue when thousands of flows close
	// at once), so their flows leave the caps: probes start after 60 s of
	// silence and a dead peer is declared after 3 more at 10 s, 90 s in
	// all. (It was 2 min + 4 x 30 s, the 4-minute "established" tail
	// measured 2026-12.) 10k idle flows cost ~170 probes/s on the TUN,
	// never anything on Tor.
	setKeepalive(ep)
	c := newConn(&wq, ep)
	src, dst, s := r.src, r.dst, r.s
	c.poke = func() { s.pokeAfterReset(dst, src) }
	return c, nil
}

// timeWait is how long an endpoint that closed first stays in TIME_WAIT
// (see build).
const timeWait = 500 * time.Millisecond

// Keepalive on accepted endpoints (see Accept).
const (
	keepaliveIdle     = 60 * time.Second
	keepaliveInterval = 10 * time.Second
	keepaliveCount    = 3
)

func (r *TCPRequest) finish(accepted bool) {
	if r.complete != nil {
		r.complete(accepted)
	}
}

// Reject answers the SYN with a RST: the client sees connection refused.
func (r *TCPRequest) Reject() {
	if r.done.CompareAndSwap(false, true) {
		r.r.Complete(true)
		r.finish(false)
	}
}

// forwardTCP runs on the forwarder's per-request goroutine.
func (s *Stack) forwardTCP(fr *tcp.ForwarderRequest) {
	id := fr.ID()
	s.pendingMu.Lock()
	who, ok := s.pendingIDs[id]
	s.pendingMu.Unlock()
	req := &TCPRequest{
		src: netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort),
		dst: netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort),
		who: who,
		r:   fr,
		s:   s,
	}
	req.complete = func(accepted bool) {
		if accepted {
			s.proof.Mark(req.who)
		}
		s.releasePending(id, req.who)
	}
	if !ok {
		// No admitted SYN behind it (gvisor.go G8 says the forwarder
		// starts none without one): refuse rather than guess.
		req.Reject()
		return
	}
	if s.ctx.Err() != nil {
		req.Reject()
		return
	}
	switch {
	case req.dst.Port() != 53:
		s.cfg.TCP.ServeTCP(req)
	case s.cfg.DNS != nil:
		// TCP/53 to any destination is DNS, served by the hook like
		// any flow (still held at the SYN); without a hook, a RST.
		s.cfg.DNS.ServeTCP(req)
	}
	// A handler that forgot to decide must not leak the forwarder slot.
	req.Reject()
}

func addrFrom(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

// setKeepalive turns on TCP keepalive with torgate's timing
// (keepaliveIdle, keepaliveInterval, keepaliveCount) on a flow's endpoint,
// accepted or dialled.
func setKeepalive(ep tcpip.Endpoint) {
	ep.SocketOptions().SetKeepAlive(true)
	idle := tcpip.KeepaliveIdleOption(keepaliveIdle)
	ep.SetSockOpt(&idle)
	intvl := tcpip.KeepaliveIntervalOption(keepaliveInterval)
	ep.SetSockOpt(&intvl)
	ep.SetSockOptInt(tcpip.KeepaliveCountOption, keepaliveCount)
}
