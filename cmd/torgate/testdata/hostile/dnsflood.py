"""Recipe 6: DNS queries for distinct names from made-up LAN sources.

usage: dnsflood.py IFACE GWMAC DST NSRC PERSRC RATE MACS
  NSRC*PERSRC UDP queries, A records of distinct random names under
  example.test, to DST port 53 through the gateway's MAC: PERSRC from each
  of NSRC random made-up LAN sources (common.MADE_UP_V4, where no host of
  the test lives, so none answers ARP), interleaved, at RATE per second.
  Enough of them fill the automap table, whose recycling then picks the
  workstation holding the most entries: a real one, which resolved more
  than PERSRC names. MACS: own (IFACE's MAC as Ethernet source) or mixed
  (every other frame from a random locally administered MAC). Prints
  "dnsflood: started" when the first frame goes.
"""

import os
import struct
import sys

from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

import common

iface, gwmac, dst = sys.argv[1], sys.argv[2], sys.argv[3]
nsrc, persrc, rate, macs = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
mac = open("/sys/class/net/%s/address" % iface).read().strip()
srcs = [a.packed for a in common.distinct(common.made_up_ipv4, nsrc)]

# One template; each frame patches the Ethernet source, the IPv4 source
# and checksum, the UDP source port, the DNS ID and the 12 hex digits of
# the name. The UDP checksum is 0 (none), which IPv4 allows.
label = "r000000000000"
tmpl = bytes(Ether(dst=gwmac, src=mac) / IP(src="0.0.0.0", dst=dst, ttl=64) / UDP(sport=1, dport=53, chksum=0) / DNS(id=1, rd=1, qd=DNSQR(qname=label + ".example.test", qtype="A")))
name_at = tmpl.index(label.encode()) + 1
count = nsrc * persrc
rnd = os.urandom(16 * count)
frames = []
for i in range(count):
    f = bytearray(tmpl)
    r = rnd[16 * i : 16 * i + 16]
    if macs == "mixed" and i % 2:
        f[6:12] = bytes([(r[0] & 0xFC) | 0x02]) + r[1:6]
    f[26:30] = srcs[i % nsrc]
    common.fix_ipv4_checksum(f)
    f[34:36] = struct.pack("!H", 1024 + i % 60000)
    f[42:44] = r[6:8]
    f[name_at : name_at + 12] = r[8:14].hex().encode()
    frames.append(bytes(f))
print("dnsflood: started", flush=True)
sent = common.send_paced(common.l2socket(iface), frames, rate)
common.done("dnsflood: sent %d queries for distinct names from %d sources (MACs: %s)" % (sent, nsrc, macs))
