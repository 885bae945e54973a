"""Recipe 5: one machine holding many connections from many addresses.

usage: hold.py SECONDS FIRST NSRC DST:PORT:N...
  From each of NSRC consecutive IPv4 addresses starting at FIRST (already
  on this host), opens N non-blocking TCP connections to each DST:PORT,
  waits until every one connected or 5 s passed, prints "hold: ready ..."
  with how many are established and how many still pending, then holds
  them all until SECONDS are over or it is killed. Plain sockets, no scapy.
"""

import ipaddress
import resource
import select
import socket
import sys
import time

seconds, first, nsrc = float(sys.argv[1]), ipaddress.IPv4Address(sys.argv[2]), int(sys.argv[3])
targets = []
for spec in sys.argv[4:]:
    host, port, n = spec.rsplit(":", 2)
    targets.append((host, int(port), int(n)))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

socks, failed = [], 0
for i in range(nsrc):
    src = str(first + i)
    for host, port, n in targets:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.bind((src, 0))
                s.connect_ex((host, port))
            except OSError:
                failed += 1
                s.close()
                continue
            socks.append((s, "%s:%d" % (host, port)))

poll = select.poll()
by_fd = {s.fileno(): (s, t) for s, t in socks}
for fd in by_fd:
    poll.register(fd, select.POLLOUT)
established, refused = {}, {}
end = time.monotonic() + 5
while by_fd and time.monotonic() < end:
    for fd, ev in poll.poll(200):
        s, t = by_fd.pop(fd)
        poll.unregister(fd)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            established[t] = established.get(t, 0) + 1
        else:
            refused[t] = refused.get(t, 0) + 1
pending = {}
for s, t in by_fd.values():
    pending[t] = pending.get(t, 0) + 1
print("hold: ready: established %s, pending %s, refused %s, not opened %d" % (established, pending, refused, failed), flush=True)
time.sleep(max(0, seconds - 5))
print("hold: done", flush=True)
