"""Recipe 7: ARP requests for the gateway from made-up senders.

usage: arpflood.py IFACE TARGET BURST BURST_S RATE SECONDS
  BURST broadcast ARP requests "who has TARGET" within BURST_S seconds, then
  RATE per second for SECONDS more; each from its own random made-up
  sender address (common.MADE_UP_V4) and random locally administered MAC
  (also the Ethernet source). Prints "arpflood: burst done" after the
  burst.
"""

import ipaddress
import sys
import time

from scapy.layers.l2 import ARP, Ether

import common

iface, target, burst, burst_s, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
total = burst + int(rate * seconds)
spas = common.distinct(common.made_up_ipv4, total)

# Frame layout: Ethernet source 6-11, sender MAC 22-27, sender IP 28-31.
tmpl = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01") / ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="0.0.0.0", hwdst="00:00:00:00:00:00", pdst=target))
frames = []
for spa in spas:
    f = bytearray(tmpl)
    m = common.random_la_mac()
    f[6:12] = m
    f[22:28] = m
    f[28:32] = spa.packed
    frames.append(bytes(f))
s = common.l2socket(iface)
n = common.send_paced(s, frames[:burst], burst / burst_s)
print("arpflood: burst done (%d requests)" % n, flush=True)
n += common.send_paced(s, frames[burst:], rate, deadline=time.monotonic() + seconds + 5)
common.done("arpflood: sent %d ARP requests for %s from %d made-up senders" % (n, target, len(spas)))
