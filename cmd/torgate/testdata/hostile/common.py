"""Shared bits of the hostile-LAN frame scripts (hostile_lan_linux_test.go).

Each script runs inside the attacker's network namespace, builds its frames
first (scapy for the layout, byte patching for the many variants, which is
~50 times faster than building each with scapy) and then sends them on a raw
AF_PACKET socket at a bounded rate, so that a flood is a flood of what the
test asked for and not of whatever the machine manages: a veth hands frames
to a per-CPU backlog of 1000 that drops silently when a sender outruns it.
"""

import ipaddress
import os
import random
import socket
import struct
import sys
import time

# Every script stops by itself; this bounds any one of them.
MAX_SECONDS = 60


def l2socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


def send_paced(sock, frames, rate, deadline=None):
    """Sends frames at about rate per second (in batches of 20); returns
    how many were sent. Stops at deadline (time.monotonic()) if given."""
    deadline = deadline or time.monotonic() + MAX_SECONDS
    start = time.monotonic()
    sent = 0
    for f in frames:
        if sent % 20 == 0:
            due = start + sent / rate
            now = time.monotonic()
            if now > deadline:
                break
            if due > now:
                time.sleep(due - now)
        try:
            sock.send(f)
        except OSError:  # ENOBUFS: back off once, then count it lost
            time.sleep(0.002)
            try:
                sock.send(f)
            except OSError:
                continue
        sent += 1
    return sent


def mac_bytes(s):
    return bytes(int(x, 16) for x in s.split(":"))


def random_la_mac():
    """A random locally administered unicast MAC."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return bytes(b)


# Where made-up LAN sources come from: inside the LAN's 10.152.128.0/18 but
# clear of the test's hosts (10.152.152.0/24, and recipe 5's extra
# addresses in 10.152.153.0-10.152.154.255), so that nobody answers ARP
# for them. 12288 addresses.
MADE_UP_V4 = ["10.152.160.0/19", "10.152.128.0/20"]


def made_up_ipv4():
    """A random made-up LAN source, uniform over MADE_UP_V4."""
    nets = [ipaddress.ip_network(p) for p in MADE_UP_V4]
    while True:
        i = random.randrange(sum(n.num_addresses for n in nets))
        for n in nets:
            if i < n.num_addresses:
                a = n[i]
                break
            i -= n.num_addresses
        if a.packed[3] not in (0, 255):
            return a


def random_ipv4_in(prefix):
    """A random host of prefix whose last byte is neither 0 nor 255."""
    net = ipaddress.ip_network(prefix)
    while True:
        a = net[random.randrange(net.num_addresses)]
        if a.packed[3] not in (0, 255):
            return a


def random_ipv6_in(prefix):
    net = ipaddress.ip_network(prefix)
    return net[random.randrange(1, net.num_addresses)]


def distinct(gen, n):
    """n distinct values from gen()."""
    seen = set()
    while len(seen) < n:
        seen.add(gen())
    return list(seen)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def fix_ipv4_checksum(frame, off=14):
    """Recomputes the IPv4 header checksum of frame (a bytearray)."""
    ihl = (frame[off] & 0x0F) * 4
    frame[off + 10 : off + 12] = b"\0\0"
    frame[off + 10 : off + 12] = struct.pack("!H", checksum(bytes(frame[off : off + ihl])))


def done(summary):
    print(summary, flush=True)
    sys.exit(0)
