"""Recipes 4 and 5: TCP SYNs from addresses the sender chooses.

usage: syn.py IFACE GWMAC DST DPORT COUNT RATE SRC...
  COUNT SYNs to DST:DPORT through the gateway's MAC, from IFACE's own MAC,
  round-robin over the sources, random source ports, at RATE per second.
  A SRC is an address, rand4:N (N random made-up LAN sources,
  common.MADE_UP_V4, where no host of the test lives, so none answers ARP), rand6:N (N random in
  fd52:7b2a:1e00:0:8000::/65, likewise) or range4:FIRST:N (N consecutive
  IPv4 addresses from FIRST). The family of DST picks the family.
"""

import ipaddress
import os
import struct
import sys

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

import common

iface, gwmac, dst, dport, count, rate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
mac = open("/sys/class/net/%s/address" % iface).read().strip()
srcs = []
for spec in sys.argv[7:]:
    kind, _, rest = spec.partition(":")
    if kind == "rand4":
        srcs += common.distinct(common.made_up_ipv4, int(rest))
    elif kind == "rand6":
        srcs += common.distinct(lambda: common.random_ipv6_in("fd52:7b2a:1e00:0:8000::/65"), int(rest))
    elif kind == "range4":
        first, n = rest.split(":")
        srcs += [ipaddress.IPv4Address(first) + i for i in range(int(n))]
    else:
        srcs.append(ipaddress.ip_address(spec))

v6 = ipaddress.ip_address(dst).version == 6
l3 = IPv6(src="::", dst=dst, hlim=64) if v6 else IP(src="0.0.0.0", dst=dst, ttl=64)
tmpl = bytes(Ether(dst=gwmac, src=mac) / l3 / TCP(sport=1, dport=dport, flags="S", window=64240, options=[("MSS", 1460)]))
ip_off = 14
tcp_off = ip_off + (40 if v6 else 20)
src_at = (ip_off + 8, ip_off + 24) if v6 else (ip_off + 12, ip_off + 16)
dst_packed = ipaddress.ip_address(dst).packed
seg_len = len(tmpl) - tcp_off

frames = []
for i in range(count):
    f = bytearray(tmpl)
    src = srcs[i % len(srcs)].packed
    f[src_at[0] : src_at[1]] = src
    f[tcp_off : tcp_off + 2] = struct.pack("!H", 1024 + int.from_bytes(os.urandom(2), "big") % 60000)
    f[tcp_off + 4 : tcp_off + 8] = os.urandom(4)
    f[tcp_off + 16 : tcp_off + 18] = b"\0\0"
    if v6:
        pseudo = src + dst_packed + struct.pack("!I3xB", seg_len, 6)
    else:
        common.fix_ipv4_checksum(f)
        pseudo = src + dst_packed + struct.pack("!xBH", 6, seg_len)
    f[tcp_off + 16 : tcp_off + 18] = struct.pack("!H", common.checksum(pseudo + bytes(f[tcp_off:])))
    frames.append(bytes(f))
sent = common.send_paced(common.l2socket(iface), frames, rate)
common.done("syn: sent %d SYNs to %s port %d from %d sources" % (sent, dst, dport, len(srcs)))
