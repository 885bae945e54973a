"""Recipe 2: unicast IPv4 to the gateway's MAC with a malformed option.

IHL 6, options 44 02 05 00: a timestamp option (0x44) whose length (2) is
shorter than its own header. A kernel that parses it answers with an ICMP
Parameter Problem to the source, before any routing decision; the sources
are outside the LAN, so such an error leaves through the gateway's uplink.

usage: ipopt4.py IFACE GWMAC DST COUNT NSRC [SRC...]
  COUNT ICMP echo requests to DST round-robin over NSRC sources: the SRCs
  given, the rest random in 198.51.100.0/24 and 203.0.113.0/24
  (documentation ranges: never anybody's). Sent at 4000/s.
"""

import ipaddress
import sys

from scapy.layers.inet import IP, ICMP
from scapy.layers.l2 import Ether

import common

iface, gwmac, dst, count, nsrc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
fixed = sys.argv[6:]
mac = open("/sys/class/net/%s/address" % iface).read().strip()
rand = common.distinct(lambda: common.random_ipv4_in(common.random.choice(["198.51.100.0/24", "203.0.113.0/24"])), max(0, nsrc - len(fixed)))
srcs = fixed + [str(a) for a in rand]

tmpl = bytes(
    Ether(dst=gwmac, src=mac)
    / IP(src="0.0.0.0", dst=dst, ihl=6, options=b"\x44\x02\x05\x00", ttl=64)
    / ICMP(type=8, id=0x7467, seq=1)
)
assert tmpl[14] == 0x46 and tmpl[34:38] == b"\x44\x02\x05\x00"
frames = []
for i in range(count):
    f = bytearray(tmpl)
    f[26:30] = ipaddress.IPv4Address(srcs[i % len(srcs)]).packed
    common.fix_ipv4_checksum(f)
    frames.append(bytes(f))
sent = common.send_paced(common.l2socket(iface), frames, 4000)
common.done("ipopt4: sent %d frames to %s (IHL 6, option 44 02 05 00) from %d sources" % (sent, dst, len(srcs)))
