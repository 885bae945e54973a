// Package netstack owns the TUN device and a gVisor network stack that
// terminates every TCP flow a workstation opens, to any address, in
// userspace.
//
// Inbound flow (workstation → router), one goroutine, readLoop:
//
//	tun.Device.Read (a batch) → Classify each packet →
//	  TCP:        copied once into a gVisor buffer, delivered to the stack;
//	              a SYN that would hit an endpoint in TIME_WAIT first
//	              reclaims that endpoint (see reclaimTimeWait)
//	  UDP port 53: handed to the DNS hook on a bounded worker pool; the
//	              answer is built here as a raw IP/UDP packet
//	  anything else (UDP, ICMP, fragments, other protocols, malformed):
//	              dropped and counted by Reason; no ICMP is generated unless
//	              Config.ICMPUnreachable asks for it.
//
// Outbound flow (router → workstation), one goroutine, writeLoop: gVisor
// queues packets on the link endpoint; the loop drains up to one batch,
// flattens each packet into a preallocated buffer that leaves headroom for
// the virtio header, and makes a single tun.Device.Write.
//
// TCP flows: gVisor's forwarder turns each SYN into a TCPRequest handed to
// Config.HandleTCP on its own goroutine. The handler dials upstream first and
// only then calls Accept (which sends the SYN-ACK) or Reject (RST). TCP to
// port 53 is served by the DNS hook here and never reaches the handler.
//
// gVisor types stop at this package's edge: flows leave as net.Conn plus
// netip.AddrPort.
package netstack
