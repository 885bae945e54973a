package netstack

import (
	"io"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/torgate/torgate/internal/flow"
)

// Micro-benchmarks of the packet loop's pieces. The end-to-end figures
// live in bench/.

// BenchmarkClassify is the classifier on a full-size TCP data segment.
func BenchmarkClassify(b *testing.B) {
	l4 := make([]byte, 1460+header.TCPMinimumSize)
	copy(l4, tcpSegment(40000, 443, tcpFlagAck))
	pkt := ipv4Packet(protoTCP, src4, dst4, 0, l4)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if p := Classify(pkt); p.Verdict != VerdictTCP {
			b.Fatal(p.Reason)
		}
	}
}

// BenchmarkCopyPacket is writeLoop's flattening of a gVisor packet (a
// header view and a payload view, as TCP builds them) into a TUN buffer.
func BenchmarkCopyPacket(b *testing.B) {
	payload := make([]byte, 1448)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: header.IPv4MinimumSize + header.TCPMinimumSize + 12,
		Payload:            buffer.MakeWithData(payload),
	})
	defer pkt.DecRef()
	pkt.TransportHeader().Push(header.TCPMinimumSize + 12)
	pkt.NetworkHeader().Push(header.IPv4MinimumSize)
	dst := make([]byte, headroom+1500)
	b.SetBytes(int64(pkt.Size()))
	b.ReportAllocs()
	for b.Loop() {
		CopyPacket(dst[headroom:headroom+pkt.Size()], pkt)
	}
}

// BenchmarkInbound is one in-order 1460-byte data segment of an
// established flow through inbound: classification, the copy into a
// gVisor buffer and delivery to the stack, whose TCP processing runs on
// its own goroutines (the loop paces itself on the ACKs). A handler
// drains the flow.
func BenchmarkInbound(b *testing.B) {
	dev := newScriptDev()
	s, err := New(Config{
		Device: dev,
		TCP: tcpFunc(func(r *TCPRequest) {
			c, err := r.Accept()
			if err != nil {
				return
			}
			io.Copy(io.Discard, c)
		}),
	})
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	defer s.Close()

	src := netip.AddrPortFrom(src4, 40000)
	dst := netip.AddrPortFrom(dst4, 443)
	const iss = 1000
	seg := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+1460)
	s.inbound(dev.build(seg[:40], src, dst, iss, 0, header.TCPFlagSyn, 0), false)
	var peerISS uint32
	select {
	case peerISS = <-dev.synack:
	case <-time.After(10 * time.Second):
		b.Fatal("no SYN-ACK")
	}
	s.inbound(dev.build(seg[:40], src, dst, iss+1, peerISS+1, header.TCPFlagAck, 0), false)

	seq := uint32(iss + 1)
	b.SetBytes(1460)
	b.ReportAllocs()
	for b.Loop() {
		// Stay within 256 KiB of the last ACK, under the default window.
		// A segment the stack dropped (its receive window closed while
		// the reader lagged) is never acknowledged: after 100 ms without
		// progress, go back to the last ACK and send again from there.
		var stalled time.Time
		for seq-dev.acked.Load() > 256<<10 {
			if stalled.IsZero() {
				stalled = time.Now()
			} else if time.Since(stalled) > 100*time.Millisecond {
				seq = dev.acked.Load()
				break
			}
			time.Sleep(10 * time.Microsecond)
		}
		s.inbound(dev.build(seg, src, dst, seq, peerISS+1, header.TCPFlagAck, 1460), false)
		seq += 1460
	}
}

// scriptDev is a tun.Device for BenchmarkInbound: Read blocks until
// Close, Write records the SYN-ACK's sequence number and the highest ACK.
type scriptDev struct {
	done   chan struct{}
	synack chan uint32
	acked  atomic.Uint32
	events chan tun.Event
}

func newScriptDev() *scriptDev {
	return &scriptDev{done: make(chan struct{}), synack: make(chan uint32, 1), events: make(chan tun.Event)}
}

// build encodes an IPv4 TCP segment with n zero bytes of payload in b.
func (d *scriptDev) build(b []byte, src, dst netip.AddrPort, seq, ack uint32, flags header.TCPFlags, n int) []byte {
	b = b[:header.IPv4MinimumSize+header.TCPMinimumSize+n]
	ip := header.IPv4(b)
	srcA, dstA := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: protoTCP, SrcAddr: srcA, DstAddr: dstA})
	ip.SetChecksum(^ip.CalculateChecksum())
	t := header.TCP(b[header.IPv4MinimumSize:])
	t.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack,
		DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, srcA, dstA, uint16(len(t)))
	xsum = checksum.Checksum(t[header.TCPMinimumSize:], xsum)
	t.SetChecksum(^t.CalculateChecksum(xsum))
	return b
}

func (d *scriptDev) File() *os.File { return nil }

func (d *scriptDev) Read([][]byte, []int, int) (int, error) {
	<-d.done
	return 0, os.ErrClosed
}

func (d *scriptDev) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		p := b[offset:]
		if len(p) < header.IPv4MinimumSize+header.TCPMinimumSize || p[9] != protoTCP {
			continue
		}
		t := header.TCP(p[header.IPv4(p).HeaderLength():])
		if t.Flags()&header.TCPFlagSyn != 0 {
			select {
			case d.synack <- t.SequenceNumber():
			default:
			}
			continue
		}
		if ack := t.AckNumber(); int32(ack-d.acked.Load()) > 0 {
			d.acked.Store(ack)
		}
	}
	return len(bufs), nil
}

func (d *scriptDev) MTU() (int, error)        { return 1500, nil }
func (d *scriptDev) Name() (string, error)    { return "script", nil }
func (d *scriptDev) Events() <-chan tun.Event { return d.events }
func (d *scriptDev) BatchSize() int           { return 1 }

func (d *scriptDev) Close() error {
	select {
	case <-d.done:
	default:
		close(d.done)
	}
	return nil
}

// TestBadChecksumDropped: the NIC claims RX checksum offload, so gVisor
// checks no checksum; inbound must, and drop a corrupted segment as
// malformed before it reaches the forwarder.
func TestBadChecksumDropped(t *testing.T) {
	dev := newScriptDev()
	handled := make(chan struct{}, 1)
	s, err := New(Config{Device: dev, TCP: tcpFunc(func(r *TCPRequest) {
		handled <- struct{}{}
		r.Reject()
	})})
	if err != nil {
		t.Fatal(err)
	}
	// No Start: this test is the read loop, calling inbound itself.
	defer s.Close()
	src, dst := netip.AddrPortFrom(src4, 40000), netip.AddrPortFrom(dst4, 443)
	syn := dev.build(make([]byte, 40), src, dst, 1000, 0, header.TCPFlagSyn, 0)
	syn[header.IPv4MinimumSize+16] ^= 0xff // break the TCP checksum
	s.inbound(syn, false)
	if got := s.Stats().Drops[ReasonMalformed].Load(); got != 1 {
		t.Fatalf("malformed drops %d, want 1", got)
	}
	// The same SYN, intact, reaches the handler.
	s.inbound(dev.build(make([]byte, 40), src, dst, 1000, 0, header.TCPFlagSyn, 0), false)
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("intact SYN never reached the TCP handler")
	}
}

// dropDNS is a DNS hook that answers nothing: the packet loop's own cost
// of a UDP query.
type dropDNS struct{}

func (dropDNS) ServeTCP(r flow.Request)                           { r.Reject() }
func (dropDNS) ServeDatagram(netip.Addr, []byte, int, flow.Reply) {}

// BenchmarkDNSHook is one UDP/53 query through inbound up to the hook:
// classification, checksum, Identify and the Reply. This is all a query
// dropped by the hook (over its share: a flood) costs the loop: nothing
// allocated (with a reply func closing over the addresses, one: 96 B).
func BenchmarkDNSHook(b *testing.B) {
	s, err := New(Config{Device: newScriptDev(), TCP: tcpFunc(func(r *TCPRequest) { r.Reject() }), DNS: dropDNS{}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	pkt := ipv4Packet(protoUDP, src4, dst4, 0, udpDatagram(5353, 53, make([]byte, 40)))
	b.ReportAllocs()
	for b.Loop() {
		s.inbound(pkt, false)
	}
}
