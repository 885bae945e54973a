"""Recipes 3 and 8c: broadcast claims that an address is at a MAC.

For each IPv4 address, a gratuitous ARP reply and a gratuitous ARP request
(sender = target = the address, sender MAC = MAC) to ff:ff:ff:ff:ff:ff;
for each IPv6 address an unsolicited neighbour advertisement to ff02::1
with the override flag (and the router flag with --router). Every host on
the LAN, the gateway's kernel included where it still has the interface,
sees them; an existing neighbour entry takes the claimed MAC.

usage: claim.py IFACE MAC ROUNDS INTERVAL_MS [--router] ADDR...
  ROUNDS rounds, one every INTERVAL_MS, each claiming every ADDR at MAC;
  the Ethernet source is IFACE's own MAC.
"""

import ipaddress
import sys
import time

from scapy.layers.inet6 import IPv6, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
from scapy.layers.l2 import ARP, Ether

import common

iface, claimed, rounds, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) / 1000
args = sys.argv[5:]
router = "--router" in args
addrs = [a for a in args if a != "--router"]
own = open("/sys/class/net/%s/address" % iface).read().strip()
bcast = "ff:ff:ff:ff:ff:ff"

frames = []
for a in addrs:
    if ipaddress.ip_address(a).version == 4:
        frames.append(bytes(Ether(dst=bcast, src=own) / ARP(op=2, hwsrc=claimed, psrc=a, hwdst=claimed, pdst=a)))
        frames.append(bytes(Ether(dst=bcast, src=own) / ARP(op=1, hwsrc=claimed, psrc=a, hwdst="00:00:00:00:00:00", pdst=a)))
    else:
        frames.append(bytes(
            Ether(dst="33:33:00:00:00:01", src=own)
            / IPv6(src=a, dst="ff02::1", hlim=255)
            / ICMPv6ND_NA(tgt=a, R=int(router), S=0, O=1)
            / ICMPv6NDOptDstLLAddr(lladdr=claimed)
        ))
s = common.l2socket(iface)
print("claim: started", flush=True)
start = time.monotonic()
for r in range(rounds):
    due = start + r * interval
    if due > time.monotonic():
        time.sleep(due - time.monotonic())
    for f in frames:
        s.send(f)
common.done("claim: %d rounds of %d frames claiming %s at %s" % (rounds, len(frames), ",".join(addrs), claimed))
