// Package netstack owns the TUN device and a gVisor network stack that
// terminates every TCP flow a workstation opens, to any address, in
// userspace.
//
// Inbound flow (workstation → router), one goroutine:
//
//	read from the TUN → Classify each packet →
//	  TCP:        copied once into a gVisor buffer, delivered to the stack;
//	              a SYN that would hit an endpoint in TIME_WAIT first
//	              reclaims that endpoint (see reclaimTimeWait)
//	  UDP port 53: handed to the DNS hook (Config.DNS.ServeDatagram), which
//	              keeps its own limits and never blocks the loop; the
//	              answer comes back through a reply func and is built
//	              here as a raw IP/UDP packet
//	  anything else (UDP, ICMP, fragments, other protocols, malformed):
//	              dropped and counted by Reason; no ICMP is generated unless
//	              Config.ICMPUnreachable asks for it.
//
// Outbound flow (router → workstation): gVisor hands each packet to the
// link endpoint (link.go), which is also the NIC's queueing discipline, so
// no per-packet list is allocated.
//
// Two ways to the TUN:
//
//   - The offload path (vnet_linux.go), for a Linux TUN opened with
//     IFF_VNET_HDR and TSO offloads, as wireguard's CreateTUN does. The
//     Stack reads and writes the descriptor itself, one packet per system
//     call, each with its virtio-net header. A TCP super-packet of up to
//     64 KiB from the workstation's kernel goes into gVisor whole, with
//     its checksums vouched for by the kernel; gVisor's TCP sends
//     super-packets of its own (host GSO) that the kernel segments, or,
//     the workstation being local, receives as they are. Writes happen on
//     the sending goroutine (no hand-off) with writev over gVisor's views
//     (no flattening copy). readLoopVnet is the only loop. A device that
//     implements OffloadDevice (offload.go; lan.Device on a macvtap with
//     virtio-net headers) takes the same path through ReadVnet and
//     WriteVnet, with the header's offsets counted from the IP header.
//   - The generic path, for any other tun.Device (in-memory devices, a TUN
//     without offloads): readLoop calls Device.Read with batch vectors
//     sized once, and writeLoop drains the endpoint's bounded ring (packets
//     queued by reference, no clone) a batch at a time, flattens each
//     packet into a preallocated buffer that leaves headroom for the
//     virtio header, and makes a single Device.Write.
//
// In steady state neither direction allocates per packet (bench's
// TestForwardAllocs holds it to that).
//
// TCP flows: gVisor's forwarder turns each SYN into a TCPRequest (a
// flow.Request) handed to Config.TCP on its own goroutine. The handler
// dials upstream first and only then calls Accept (which sends the
// SYN-ACK) or Reject (RST). TCP to port 53 goes to the DNS hook
// (Config.DNS.ServeTCP) the same way, still held at the SYN, and never
// reaches the TCP handler. Both hooks get the workstation (Identify) as
// the request's Who; the limits on DNS are the hook's, those on pending
// handshakes are here.
// Accept returns a *Conn, a net.Conn whose Read and Write allocate nothing
// and which a relay can drain without blocking (TryRead) and be told about
// when more data comes (NotifyRead), so an idle flow costs no goroutine.
//
// Dialing out (dial.go): DialTCP opens a connection from the gateway's
// own address to a workstation, in gVisor, for the onion services hosted
// on workstations (internal/onion, which dials only declared targets).
// Its segments take the outbound path above, and the workstation's
// answers the inbound one, where gVisor's demuxer hands them to the
// dialling endpoint before the forwarder could see them.
//
// gVisor types stop at this package's edge: flows leave as net.Conn plus
// netip.AddrPort.
//
// # gVisor
//
// Everything this package relies on in gVisor beyond its documented API
// lives in gvisor.go, nine behaviours (G1-G9): the TIME_WAIT reclaim,
// Abort's RST, our endpoint as the NIC's queueing discipline, GRO driven
// by hand, the NIC-level checksum trust, host GSO options, packet views,
// the forwarder's in-flight table and the handshake wait. Each states
// what it assumes and where in gVisor that comes from, and has a test in
// gvisor_test.go whose failure names it. After changing the version, run
// `go test -run GVisor ./netstack` first, then bench's TestForwardAllocs.
//
// Version: gvisor.dev/gvisor v0.0.0-20260905035102-160fafc42237 (commit
// 160fafc42237 of gVisor's go branch, 2026-09-05), taken 2026-12-02 in
// place of v0.0.0-20250503011706-39ed1f5ac29c (2025-05-03). It was the
// newest the module proxy served that day: the proxy refused the branch
// query `go get gvisor.dev/gvisor@go` (403, "not available"), and @latest
// resolved to it, the last entry of its version list. It took no source
// change: torgate built as it was, G1-G9 held, TestForwardAllocs stayed
// at 0 allocations per packet both ways, and netstack, bench, lan, the
// root package and cmd/torgate passed as root, but for
// TestIntegrationLAN, which failed the same way on the old version
// (curl to [fd20::10] refused). go mod tidy raised golang.org/x/time
// v0.7.0 -> v0.15.0 and added golang.org/x/exp, both gVisor's
// requirements. The SYN on a TIME_WAIT 4-tuple is still dropped without
// a listener (TestGVisorTimeWaitStillDropped), so G1 stays.
//
// This is a component of torgate, not a public contract: its API changes
// with torgate's needs. Embedders use package github.com/torgate/torgate.
package netstack
