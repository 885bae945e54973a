"""Recipe 1: IPv6 to ff02::1 with a hop-by-hop option of unknown type 0x9e.

The type's two high bits (10) tell a receiver to discard the packet and send
an ICMPv6 Parameter Problem to the source even though the destination is
multicast (RFC 8200 4.2); the sources are outside the LAN, so a gateway
whose kernel parses the option routes that error out of its uplink.

usage: hbh6.py IFACE COUNT NSRC [SRC...]
  COUNT packets round-robin over NSRC sources: the SRCs given, the rest
  random in 2001:db8:99::/64. Sent at 4000/s.
"""

import ipaddress
import sys

from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, HBHOptUnknown
from scapy.layers.l2 import Ether

import common

iface, count, nsrc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fixed = sys.argv[4:]
mac = open("/sys/class/net/%s/address" % iface).read().strip()
srcs = fixed + [str(a) for a in common.distinct(lambda: common.random_ipv6_in("2001:db8:99::/64"), nsrc - len(fixed))]

# No next header (59) after the options: nothing else to checksum, so the
# source can be patched in place (bytes 22-37 of the frame).
tmpl = bytes(
    Ether(dst="33:33:00:00:00:01", src=mac)
    / IPv6(src="::1", dst="ff02::1", nh=0, hlim=64)
    / IPv6ExtHdrHopByHop(nh=59, options=[HBHOptUnknown(otype=0x9E, optdata=b"\0\0\0\0")])
)
frames = []
for i in range(count):
    f = bytearray(tmpl)
    f[22:38] = ipaddress.IPv6Address(srcs[i % len(srcs)]).packed
    frames.append(bytes(f))
sent = common.send_paced(common.l2socket(iface), frames, 4000)
common.done("hbh6: sent %d frames to ff02::1 (hop-by-hop option 0x9e) from %d sources" % (sent, len(srcs)))
