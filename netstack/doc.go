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
//	  UDP port 53: handed to the DNS hook on a bounded worker pool; the
//	              answer is built here as a raw IP/UDP packet
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
//     (no flattening copy). readLoopVnet is the only loop.
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
// TCP flows: gVisor's forwarder turns each SYN into a TCPRequest handed to
// Config.HandleTCP on its own goroutine. The handler dials upstream first and
// only then calls Accept (which sends the SYN-ACK) or Reject (RST). TCP to
// port 53 is served by the DNS hook here and never reaches the handler.
// Accept returns a *Conn, a net.Conn whose Read and Write allocate nothing
// and which a relay can drain without blocking (TryRead) and be told about
// when more data comes (NotifyRead), so an idle flow costs no goroutine.
//
// gVisor types stop at this package's edge: flows leave as net.Conn plus
// netip.AddrPort.
package netstack
